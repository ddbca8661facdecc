"""The provisioning file: TOML in, checked records out, or one error naming where.

The format is documented by ``deploy/apply-example.toml``. Every value is checked
here, before anything is compared or changed, and every error names the file,
the table and the key (``apply.toml: users.alice.until: ...``). Secrets are never
in the file: a TOTP secret has no key at all (enrolment stays per user, with
``bastion user reset-mfa``), and a database password is a ``file:`` or ``env:``
reference read now; a literal one is refused.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from bastion.errors import UsageError
from bastion.grants import parse_options
from bastion.profiles import Selector, check_key, check_value
from bastion.provision.table import SpecError as SpecError  # the loader's error, re-exported
from bastion.provision.table import Table, kind_of
from bastion.ssh.login_name import valid_name
from bastion.store.models import TLS_MODES, Credset, Role, TargetKind
from bastion.target_setup import default_principal
from bastion.timeparse import parse_duration

FORMAT_VERSION = 1


@dataclass(frozen=True)
class UserSpec:
    """A user as the file wants it."""

    name: str
    role: Role
    keys: tuple[str, ...]
    groups: tuple[str, ...]
    sponsor: str | None = None
    until: float | None = None
    org: str | None = None
    disabled: bool = False


@dataclass(frozen=True)
class TargetSpec:
    """A target as the file wants it (credential-set passwords already read)."""

    name: str
    kind: TargetKind
    host: str
    port: int
    logins: tuple[str, ...] = ()
    principal: str = ""
    host_keys: tuple[str, ...] = ()
    host_ca_keys: tuple[str, ...] = ()
    database: str | None = None
    credsets: tuple[Credset, ...] = ()
    tls_mode: str = "prefer"
    tls_ca: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    credset_sources: tuple[tuple[str, str], ...] = ()
    """Where each credential set's password comes from (for messages, never the value)."""

    @property
    def default_login(self) -> str | None:
        """The first login, used by a grant that names none."""
        return self.logins[0] if self.logins else None


@dataclass(frozen=True)
class ProfileSpec:
    """An access profile as the file wants it (``selector`` in canonical form)."""

    name: str
    selector: str
    logins: tuple[str, ...] = ()
    credset: str | None = None
    options: frozenset[str] = frozenset()
    max_duration: float | None = None
    approvals: int | None = None
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class GrantSpec:
    """A standing grant: one user, one target or profile, one login or credential set.

    ``until`` ends it at a fixed time; ``duration`` ends it that long after it was
    first created (re-applying never moves that end).
    """

    user: str
    target: str | None
    profile: str | None
    login: str | None
    credset: str | None
    options: frozenset[str]
    until: float | None
    duration: float | None
    reason: str
    where: str


@dataclass(frozen=True)
class Desired:
    """Everything the file asks for."""

    path: str
    sha256: str
    users: Mapping[str, UserSpec] = field(default_factory=dict)
    targets: Mapping[str, TargetSpec] = field(default_factory=dict)
    profiles: Mapping[str, ProfileSpec] = field(default_factory=dict)
    grants: tuple[GrantSpec, ...] = ()


def load(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Desired:
    """Read and check a provisioning file. Raises SpecError naming file, table and key."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read {p}: {e.strerror}") from e
    return parse(raw, p, environ=os.environ if environ is None else environ)


def parse(raw: bytes, path: Path, *, environ: Mapping[str, str]) -> Desired:
    """``load`` without the file read: bytes, the path they came from (for relative paths)."""
    name = str(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SpecError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{name}: not valid TOML: {e}") from e
    return from_data(data, path, hashlib.sha256(raw).hexdigest(), environ=environ)


def from_data(
    data: dict[str, Any], path: Path, sha256: str, *, environ: Mapping[str, str]
) -> Desired:
    """Check already-decoded TOML data (what ``parse`` does after ``tomllib``)."""
    name = str(path)
    top = Table(name, "", data)
    version = top.get("version")
    if version is not None and version != FORMAT_VERSION:
        top.fail("version", f"this bastion reads format version {FORMAT_VERSION}, not {version!r}")
    base = path.parent
    users = _named(top, "users", lambda t, n: _user(t, n, base))
    targets = _named(top, "targets", lambda t, n: _target(t, n, base, environ))
    profiles = _named(top, "profiles", lambda t, n: _profile(t, n))
    grants = _grants(top)
    top.done()
    return Desired(
        path=name,
        sha256=sha256,
        users=users,
        targets=targets,
        profiles=profiles,
        grants=grants,
    )


def _named(top: Table, key: str, read: Any) -> dict[str, Any]:
    section = top.sub(key)
    if section is None:
        return {}
    out: dict[str, Any] = {}
    for name in section.data:
        section.seen.add(name)
        if not valid_name(name):
            section.fail(name, "is not a valid name (letters, digits, . _ -)")
        table = section.sub(name)
        assert table is not None  # noqa: S101  the key is present
        out[name] = read(table, name)
        table.done()
    return out


def _read_file(t: Table, key: str, rel: str, base: Path) -> str:
    p = (base / rel).expanduser()
    try:
        return p.read_text()
    except OSError as e:
        t.fail(key, f"cannot read {p}: {e.strerror}")


def _public_keys(t: Table, key: str, lines: list[str]) -> list[str]:
    keys: list[str] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "PRIVATE KEY" in line:
            t.fail(key, "holds a private key: only public keys (.pub) belong in this file")
        try:
            asyncssh.import_public_key(line)
        except (asyncssh.KeyImportError, ValueError) as e:
            t.fail(key, f"not an OpenSSH public key ({e}): {line[:40]!r}")
        keys.append(line)
    return keys


def _keys(t: Table, inline: str, files: str, base: Path) -> tuple[str, ...]:
    keys = _public_keys(t, inline, list(t.texts(inline)))
    for rel in t.texts(files):
        keys += _public_keys(t, files, _read_file(t, files, rel, base).splitlines())
    return tuple(keys)


def _user(t: Table, name: str, base: Path) -> UserSpec:
    role_text = t.text("role") or Role.CONTRACTOR.value
    try:
        role = Role(role_text)
    except ValueError:
        t.fail(
            "role", f"'{role_text}' is not a role; choose from {', '.join(r.value for r in Role)}"
        )
    keys = _keys(t, "keys", "key_files", base)
    if not keys:
        t.fail("keys", "a user needs at least one SSH public key (keys = [...] or key_files)")
    groups = sorted({g.lstrip("@") for g in t.texts("groups")})
    for g in groups:
        if not valid_name(g):
            t.fail("groups", f"'{g}' is not a valid group name (letters, digits, . _ -)")
    sponsor = t.text("sponsor")
    if sponsor is not None and not valid_name(sponsor):
        t.fail("sponsor", f"'{sponsor}' is not a valid user name")
    return UserSpec(
        name=name,
        role=role,
        keys=keys,
        groups=tuple(groups),
        sponsor=sponsor,
        until=t.time("until"),
        org=t.text("org"),
        disabled=t.flag("disabled", False),
    )


def _address(t: Table, key: str, text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not 0 < int(port) < 65536 or not host.strip("[]"):
        t.fail(key, f"'{text}' must be HOST or HOST:PORT (port 1-65535)")
    return host.strip("[]"), int(port)


def _labels(t: Table) -> tuple[tuple[str, str], ...]:
    table = t.sub("labels")
    if table is None:
        return ()
    out: list[tuple[str, str]] = []
    for key, value in table.data.items():
        table.seen.add(key)
        if not isinstance(value, str):
            table.fail(key, f"a label value is a string, not {kind_of(value)}")
        try:
            out.append((check_key(key), check_value(key, value)))
        except UsageError as e:
            table.fail(key, str(e))
    return tuple(sorted(out))


def _profile(t: Table, name: str) -> ProfileSpec:
    text = t.text("select", required=True)
    assert text is not None  # noqa: S101  required
    try:
        selector = str(Selector.parse(text))
    except UsageError as e:
        t.fail("select", str(e))
    logins = t.texts("logins")
    for login in logins:
        if not valid_name(login):
            t.fail("logins", f"'{login}' is not a valid login name")
    try:
        options = parse_options(list(t.texts("allow")))
    except ValueError as e:
        t.fail("allow", str(e))
    max_duration: float | None = None
    max_text = t.text("max")
    if max_text is not None:
        try:
            max_duration = parse_duration(max_text)
        except UsageError as e:
            t.fail("max", str(e))
    approvals = t.get("approvals")
    if approvals is not None and (
        not isinstance(approvals, int) or isinstance(approvals, bool) or approvals < 0
    ):
        t.fail("approvals", f"must be a whole number, 0 or more, not {kind_of(approvals)}")
    approvers = t.texts("approvers")
    for who in approvers:
        if not valid_name(who.removeprefix("@")):
            t.fail("approvers", f"'{who}' is neither a user name nor @GROUP")
    return ProfileSpec(
        name=name,
        selector=selector,
        logins=logins,
        credset=t.text("credset"),
        options=options,
        max_duration=max_duration,
        approvals=approvals,
        approvers=tuple(sorted(set(approvers))),
    )


def _target(t: Table, name: str, base: Path, environ: Mapping[str, str]) -> TargetSpec:
    ssh, postgres = t.text("ssh"), t.text("postgres")
    if (ssh is None) == (postgres is None):
        t.fail(None, "say what it is: ssh = 'HOST:PORT' or postgres = 'HOST:PORT' (one of them)")
    labels = _labels(t)
    if ssh is not None:
        host, port = _address(t, "ssh", ssh, 22)
        logins = t.texts("logins")
        if not logins:
            t.fail("logins", "an SSH target needs at least one login (the OS user on the host)")
        for login in logins:
            if not valid_name(login):
                t.fail("logins", f"'{login}' is not a valid login name")
        host_keys = _keys(t, "host_keys", "host_key_files", base)
        host_ca = _keys(t, "host_ca_keys", "host_ca_files", base)
        if not host_keys and not host_ca:
            t.fail(
                "host_keys",
                "pin the target's host key: host_keys, host_key_files, host_ca_keys or "
                "host_ca_files (ssh-keyscan prints it; compare its fingerprint first)",
            )
        return TargetSpec(
            name=name,
            kind=TargetKind.SSH,
            host=host,
            port=port,
            logins=logins,
            principal=t.text("principal") or default_principal(name),
            host_keys=host_keys,
            host_ca_keys=host_ca,
            labels=labels,
        )
    assert postgres is not None  # noqa: S101  checked above
    host, port = _address(t, "postgres", postgres, 5432)
    database = t.text("database", required=True)
    tls = t.text("tls") or "prefer"
    if tls not in TLS_MODES:
        t.fail("tls", f"'{tls}' is not a TLS mode; choose from {', '.join(TLS_MODES)}")
    ca_file: str | None = None
    ca_text = t.text("ca_file")
    if ca_text is not None:
        if tls != "verify-full":
            t.fail("ca_file", "is only used with tls = 'verify-full'")
        ca = (base / ca_text).expanduser().resolve()
        if not ca.is_file():
            t.fail("ca_file", f"CA certificate file {ca} does not exist")
        ca_file = str(ca)
    credsets, sources = _credsets(t, environ, base)
    return TargetSpec(
        name=name,
        kind=TargetKind.POSTGRES,
        host=host,
        port=port,
        principal=name,
        database=database,
        credsets=credsets,
        tls_mode=tls,
        tls_ca=ca_file,
        labels=labels,
        credset_sources=sources,
    )


def _credsets(
    t: Table, environ: Mapping[str, str], base: Path
) -> tuple[tuple[Credset, ...], tuple[tuple[str, str], ...]]:
    table = t.sub("credsets")
    if table is None or not table.data:
        t.fail(
            "credsets",
            "a PostgreSQL target needs at least one credential set: "
            "[targets.NAME.credsets] ro = { user = 'app_ro', password = 'env:VAR' }",
        )
    sets: list[Credset] = []
    sources: list[tuple[str, str]] = []
    for cname in table.data:
        table.seen.add(cname)
        if not valid_name(cname):
            table.fail(cname, "is not a valid credential set name")
        one = table.sub(cname)
        assert one is not None  # noqa: S101  the key is present
        user = one.text("user", required=True)
        assert user is not None  # noqa: S101  required
        source = one.text("password")
        password = None if source is None else _password(one, source, environ, base)
        one.done()
        sets.append(Credset(cname, user, password))
        sources.append((cname, source or "trust"))
    return tuple(sets), tuple(sources)


def _password(t: Table, source: str, environ: Mapping[str, str], base: Path) -> str:
    kind, sep, where = source.partition(":")
    if not sep or kind not in ("file", "env") or not where:
        t.fail(
            "password",
            "a literal password is not allowed here (the file would hold a secret); "
            "write password = 'file:/path/to/secret' or 'env:VARIABLE'",
        )
    if kind == "env":
        value = environ.get(where)
        if value is None:
            t.fail("password", f"environment variable {where} is not set; export it and re-run")
        password = str(value)
    else:
        password = _read_file(t, "password", where, base).rstrip("\r\n")
    if not password:
        t.fail("password", f"the password from {source} is empty")
    return password


def _grants(top: Table) -> tuple[GrantSpec, ...]:
    value = top.get("grants")
    if value is None:
        return ()
    if not isinstance(value, list):
        top.fail("grants", "must be an array of tables: [[grants]] user = ... target = ...")
    out: list[GrantSpec] = []
    seen: dict[tuple[str, str, str, str | None], str] = {}
    for i, item in enumerate(value):
        t = Table(top.file, f"grants[{i}]", item)
        g = _grant(t)
        t.done()
        key = g_key(g)
        if key in seen:
            t.fail(None, f"names the same grant as {seen[key]} (user, target or profile, login)")
        seen[key] = t.where
        out.append(g)
    return tuple(out)


def g_key(g: GrantSpec) -> tuple[str, str, str, str | None]:
    """What identifies a standing grant in the file (before defaults are resolved)."""
    if g.profile is not None:
        return (g.user, "profile", g.profile, g.login or g.credset)
    return (g.user, "target", g.target or "", g.login or g.credset)


def _grant(t: Table) -> GrantSpec:
    user = t.text("user", required=True)
    assert user is not None  # noqa: S101  required
    target, profile = t.text("target"), t.text("profile")
    if (target is None) == (profile is None):
        t.fail(None, "name what it reaches: target = 'NAME' or profile = 'NAME' (one of them)")
    login, credset = t.text("login"), t.text("credset")
    if login is not None and credset is not None:
        t.fail("credset", "a grant has a login (SSH) or a credential set (PostgreSQL), not both")
    try:
        options = parse_options(list(t.texts("allow")))
    except ValueError as e:
        t.fail("allow", str(e))
    until = t.time("until")
    duration: float | None = None
    for_text = t.text("for")
    if for_text is not None:
        try:
            duration = parse_duration(for_text)
        except UsageError as e:
            t.fail("for", str(e))
    if (until is None) == (duration is None):
        t.fail(None, "say how long: until = 2027-01-31 or for = '90d' (one of them)")
    return GrantSpec(
        user=user,
        target=target,
        profile=profile,
        login=login,
        credset=credset,
        options=options,
        until=until,
        duration=duration,
        reason=t.text("reason") or "standing grant (bastion apply)",
        where=t.where,
    )
