"""Target subcommands: SSH hosts and PostgreSQL databases behind the bastion.

``bastion target add NAME --ssh HOST:PORT ...`` pins an sshd's host key;
``bastion target add NAME --postgres HOST:PORT --database DB --credset ...``
stores a database with its named credential sets, passwords sealed with the
secret key and never printed again. Listing shows kinds, databases and
credential-set names, never passwords.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bastion import audit_actions as actions
from bastion.access_requests import policy_for
from bastion.admin_actions import Origin, set_target_policy
from bastion.cli_admin import read_keys
from bastion.cli_shared import actor, emit, jsonable, opened
from bastion.config import Config
from bastion.errors import BastionError, NotFound, UsageError
from bastion.grants import format_time
from bastion.profile_actions import label_target
from bastion.profiles import check_key, format_labels, parse_labels
from bastion.ssh.login_name import valid_name
from bastion.store import Store
from bastion.store.models import Credset, Target, TargetKind
from bastion.target_setup import default_principal, render_target_setup
from bastion.timeparse import format_duration, parse_duration

CREDSET_FORMS = "NAME:USER, NAME:USER:file:/path/to/password or NAME:USER:env:VARIABLE"


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError as e:
        raise UsageError(f"'{text}' must be HOST or HOST:PORT") from e


def _scan_host_key(host: str, port: int) -> str:
    # asyncio and the SSH stack here, not at the top: 'target list' and the other
    # read-only target commands do not load them (docs/decisions.md, issue 19)
    import asyncio

    import asyncssh

    async def scan() -> asyncssh.SSHKey | None:
        return await asyncssh.get_server_host_key(host, port, server_host_key_algs=["ssh-ed25519"])

    key = asyncio.run(scan())
    if key is None:
        raise BastionError(f"{host}:{port} offered no host key")
    return key.export_public_key("openssh").decode().strip()


def parse_credset(text: str) -> Credset:
    """``NAME:USER[:file:PATH|:env:VAR]`` -> a Credset with the password read now.

    No source means the upstream trusts the bastion (trust or certificate auth).
    Raises ValueError naming the accepted forms, BastionError if the source cannot be read.
    """
    name, sep, rest = text.partition(":")
    user, _, source = rest.partition(":")
    shown = f"{name}:{user}:..." if source else text  # never echo what may be a password
    if not sep or not valid_name(name) or not user:
        raise UsageError(f"--credset '{shown}' must be {CREDSET_FORMS}")
    if not source:
        return Credset(name, user, None)
    kind, _, where = source.partition(":")
    if kind == "file" and where:
        try:
            password = Path(where).read_text().rstrip("\r\n")
        except OSError as e:
            raise BastionError(
                f"cannot read the password of credential set {name} from {where}: {e.strerror}"
            ) from e
    elif kind == "env" and where:
        value = os.environ.get(where)
        if value is None:
            raise BastionError(
                f"credential set {name}: environment variable {where} is not set; "
                "export it before running this command"
            )
        password = value
    else:
        raise UsageError(
            f"--credset '{shown}': the password source must be file:PATH or env:VARIABLE "
            "(a literal password would stay in the shell history and the process list); "
            f"use {CREDSET_FORMS}"
        )
    if not password:
        raise BastionError(f"credential set {name}: the password from {source} is empty")
    return Credset(name, user, password)


def _ssh_target_fields(args: argparse.Namespace) -> dict[str, Any]:
    if args.database or args.credset or args.tls or args.ca_file:
        raise UsageError("--database, --credset, --tls and --ca-file are for --postgres targets")
    if not args.login:
        raise UsageError("an SSH target needs at least one --login (the OS user on the host)")
    host, port = _host_port(args.ssh, 22)
    host_keys: list[str] = []
    if args.host_key:
        host_keys = read_keys([args.host_key])
    elif args.scan:
        import asyncssh

        line = _scan_host_key(host, port)
        fp = asyncssh.import_public_key(line).get_fingerprint("sha256")
        print(f"scanned {host}:{port}: {fp}")
        print(
            "compare this fingerprint with the host's own (ssh-keygen -lf /etc/ssh/"
            "ssh_host_ed25519_key.pub) before granting access"
        )
        host_keys = [line]
    host_ca = read_keys(args.host_ca) if args.host_ca else []
    if not host_keys and not host_ca:
        raise UsageError("pin the target's host key: --host-key FILE, --host-ca FILE or --scan")
    return {
        "kind": TargetKind.SSH,
        "host": host,
        "port": port,
        "logins": args.login,
        "principal": args.principal or default_principal(args.name),
        "host_keys": host_keys,
        "host_ca_keys": host_ca,
    }


def _postgres_target_fields(args: argparse.Namespace) -> dict[str, Any]:
    if args.login or args.host_key or args.scan or args.host_ca or args.principal:
        raise UsageError(
            "--login, --host-key, --scan, --host-ca and --principal are for --ssh targets; "
            "a --postgres target takes --database, --credset, --tls and --ca-file"
        )
    if not args.database:
        raise UsageError("a PostgreSQL target needs --database DB (the database on that server)")
    if not args.credset:
        raise UsageError(f"a PostgreSQL target needs at least one --credset ({CREDSET_FORMS})")
    tls = args.tls or "prefer"
    ca_file: str | None = None
    if args.ca_file:
        if tls != "verify-full":
            raise UsageError("--ca-file is only used with --tls verify-full")
        path = Path(args.ca_file).resolve()
        if not path.is_file():
            raise BastionError(f"CA certificate file {path} does not exist")
        ca_file = str(path)
    host, port = _host_port(args.postgres, 5432)
    return {
        "kind": TargetKind.POSTGRES,
        "host": host,
        "port": port,
        "logins": [],
        "principal": args.name,
        "database": args.database,
        "credsets": [parse_credset(c) for c in args.credset],
        "tls_mode": tls,
        "tls_ca": ca_file,
    }


def _describe(target: Target) -> str:
    if target.kind == TargetKind.POSTGRES:
        sets = ", ".join(c.name for c in target.credsets)
        return (
            f"added PostgreSQL target {target.name} ({target.host}:{target.port}, "
            f"database {target.database}), credential sets {sets}, upstream TLS {target.tls_mode}"
        )
    return (
        f"added target {target.name} ({target.host}:{target.port}), logins "
        f"{', '.join(target.logins)}, principal {target.principal}"
    )


def cmd_target_add(args: argparse.Namespace) -> int:
    """Add an SSH target (pinned host key or host CA) or a PostgreSQL target (credential sets)."""
    if not valid_name(args.name):
        raise UsageError(f"'{args.name}' is not a valid target name (letters, digits, . _ -)")
    fields = _postgres_target_fields(args) if args.postgres else _ssh_target_fields(args)
    labels = parse_labels(args.label or [])
    with opened(args) as (_config, store):
        target = store.add_target(name=args.name, now=time.time(), labels=labels, **fields)
        details: dict[str, object] = {"kind": target.kind.value, "host": target.host}
        details["port"] = target.port
        if target.kind == TargetKind.POSTGRES:
            details |= {
                "database": target.database,
                "credsets": [c.name for c in target.credsets],
                "tls": target.tls_mode,
            }
        else:
            details |= {"logins": list(target.logins), "principal": target.principal}
        if labels:
            details["labels"] = dict(target.labels)
        store.append_audit(actor(), actions.TARGET_ADD, target.name, details, time.time())
    if args.json:
        print(json.dumps(jsonable(target), indent=2))
        return 0
    print(_describe(target) + (f", labels {format_labels(target.labels)}" if labels else ""))
    if target.kind == TargetKind.SSH:
        print(f"next: bastion target setup {target.name}   # lines to apply on the host")
    else:
        print(f"next: bastion grant add USER {target.name} --credset NAME --for 2h")
    return 0


def _policy_text(t: Target) -> str:
    """The target's own request policy (what overrides ``[requests]``), or ''."""
    parts = []
    if t.approvals is not None:
        parts.append(f"approvals={t.approvals}")
    if t.approvers:
        parts.append(f"approvers={','.join(t.approvers)}")
    if t.max_request is not None:
        parts.append(f"max-request={format_duration(t.max_request)}")
    return (" " + " ".join(parts)) if parts else ""


def _target_line(t: Target) -> str:
    if t.kind == TargetKind.POSTGRES:
        sets = ",".join(c.name for c in t.credsets) or "-"
        return (
            f"{t.name:<20} {t.kind.value:<8} {t.host}:{t.port:<6} "
            f"database={t.database} credsets={sets} tls={t.tls_mode}"
            + _policy_text(t)
            + _labels_text(t)
        )
    return (
        f"{t.name:<20} {t.kind.value:<8} {t.host}:{t.port:<6} "
        f"logins={','.join(t.logins)} principal={t.principal}" + _policy_text(t) + _labels_text(t)
    )


def _labels_text(t: Target) -> str:
    return f" labels={format_labels(t.labels)}" if t.labels else ""


def _target_json(t: Target, config: Config) -> dict[str, Any]:
    """The target, and the request policy in effect (its own, else ``[requests]``)."""
    policy = policy_for([t], config.requests)
    out: dict[str, Any] = jsonable(t)
    out["request_policy"] = {
        "approvals": policy.approvals,
        "approvers": list(policy.approvers),
        "max_request": policy.max_duration,
    }
    return out


def cmd_target_list(args: argparse.Namespace) -> int:
    """List targets with kind and address; databases with credential-set names, no passwords.

    Live targets only, unless ``--all``: removed ones too, marked with when (their
    grants, sessions and audit rows keep naming them).
    """
    with opened(args) as (config, store):
        targets = store.list_targets(all=args.all)
    if args.json:
        print(json.dumps([_target_json(t, config) for t in targets], indent=2))
        return 0
    emit(args, targets, _listed_line)
    return 0


def _listed_line(t: Target) -> str:
    if t.removed_at is None:
        return _target_line(t)
    return f"{_target_line(t)} (removed {format_time(t.removed_at)})"


def cmd_target_show(args: argparse.Namespace) -> int:
    """One target: address, logins or credential sets, and its access-request policy."""
    with opened(args) as (config, store):
        target = store.get_target(args.name)
        if target is None:
            raise NotFound(f"no target named '{args.name}'; see 'bastion target list'")
    if args.json:
        print(json.dumps(_target_json(target, config), indent=2))
        return 0
    t = target
    print(f"target {t.name} ({t.kind.value}) at {t.host}:{t.port}")
    if t.kind == TargetKind.POSTGRES:
        print(f"  database        {t.database}, upstream TLS {t.tls_mode}")
        print(f"  credential sets {', '.join(c.name for c in t.credsets)}")
    else:
        print(f"  logins          {', '.join(t.logins)} (principal {t.principal})")
    print(f"  labels          {format_labels(t.labels)}")
    policy = policy_for([t], config.requests)
    own = "" if t.approvals is not None else " (default)"
    print(f"  approvals       {policy.approvals}{own} distinct approver(s) per request")
    who = ", ".join(t.approvers) if t.approvers else "any approver or admin"
    print(f"  approvers       {who}")
    own = "" if t.max_request is not None else " (default)"
    print(f"  max request     {format_duration(policy.max_duration)}{own}")
    return 0


def _approver_names(store: Store, values: list[str] | None, clear: bool) -> list[str] | None:
    if clear:
        return []
    if values is None:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    for n in names:
        bare = n.removeprefix("@")
        if not valid_name(bare):
            raise UsageError(f"'{n}' is neither a user name nor @GROUP")
        if not n.startswith("@") and store.get_user(n) is None:
            raise NotFound(f"no user named '{n}' (a group is written @{n})")
    if not names:
        raise UsageError("--approvers needs at least one NAME or @GROUP (or use --any-approver)")
    return sorted(set(names))


def cmd_target_set(args: argparse.Namespace) -> int:
    """Set a target's access-request policy: approvals needed, approvers, longest request."""
    max_request = parse_duration(args.max_request) if args.max_request else None
    if args.approvals is not None and args.approvals < 1:
        raise UsageError("--approvals must be at least 1")
    nothing = args.approvals is None and args.approvers is None and max_request is None
    if nothing and not args.any_approver:
        raise UsageError(
            "say what to set: --approvals N, --approvers NAME|@GROUP, --max-request DURATION"
        )
    with opened(args) as (config, store):
        approvers = _approver_names(store, args.approvers, args.any_approver)
        target = set_target_policy(
            store, Origin.cli(), args.name, approvals=args.approvals, approvers=approvers,
            max_request=max_request, now=time.time(),
        )  # fmt: skip
    if args.json:
        print(json.dumps(_target_json(target, config), indent=2))
    else:
        print(f"target {target.name}:{_policy_text(target) or ' default request policy'}")
    return 0


def cmd_target_label(args: argparse.Namespace) -> int:
    """Set and remove a target's labels; access profiles see the change at the next connect."""
    set_ = parse_labels(args.labels)
    remove = [check_key(k) for k in args.remove or []]
    if not set_ and not remove:
        raise UsageError("say what to change: KEY=VALUE ... and/or --remove KEY")
    with opened(args) as (config, store):
        target = label_target(
            store, Origin.cli(), args.name, set_=set_, remove=remove, now=time.time()
        )
    if args.json:
        print(json.dumps(_target_json(target, config), indent=2))
    else:
        print(f"target {target.name}: labels {format_labels(target.labels)}")
        if remove:
            print("live sessions under access profiles that no longer reach it end within a poll")
    return 0


def cmd_target_remove(args: argparse.Namespace) -> int:
    """Remove a target; its active grants are revoked."""
    with opened(args) as (_c, store):
        store.remove_target(args.name, time.time())
        store.append_audit(actor(), actions.TARGET_REMOVE, args.name, {}, time.time())
    print(f"removed target {args.name}")
    return 0


def cmd_target_setup(args: argparse.Namespace) -> int:
    """Print what to apply on an SSH target host."""
    with opened(args) as (config, store):
        target = store.get_target(args.name)
        if target is None:
            raise NotFound(f"no target named '{args.name}'; see 'bastion target list'")
        if target.kind != TargetKind.SSH:
            raise BastionError(
                f"{target.name} is a PostgreSQL target: it needs no sshd setup; give each "
                "credential set's role only the privileges that set should have"
            )
        from bastion.ca import CertificateAuthority  # asyncssh: only this command needs it

        ca = CertificateAuthority.load(config.ca_key)
    print(render_target_setup(target, ca.public_key_line()), end="")
    return 0
