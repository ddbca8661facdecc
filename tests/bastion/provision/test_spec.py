"""The provisioning file loader: checked records, or one error naming file, table and key."""

from __future__ import annotations

import shutil
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.provision.spec import SpecError, from_data, load, parse
from bastion.store.models import Role, TargetKind
from tests.fuzzing import Mutation, apply_mutations, budget, byte_mutations

EXAMPLE = Path(__file__).parents[3] / "deploy" / "apply-example.toml"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICZxEW5cAwplvRYGYqR0pBBZG/yjgfpYdwdFiAmHarho sam@laptop"
ENV = {"APPDB_RO_PASSWORD": "ro-secret"}
PG = "[targets.d]\npostgres = 'h'\ndatabase = 'x'\n"


def example_dir(tmp_path: Path) -> Path:
    """The example file next to the secret file it references."""
    shutil.copy(EXAMPLE, tmp_path / "apply.toml")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "appdb-rw.password").write_text("rw-secret\n")
    return tmp_path / "apply.toml"


def read(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "f.toml"
    path.write_text(text)
    return load(path, environ=env or {})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(SpecError) as e:
        read(tmp_path, text, env)
    return str(e.value)


def test_the_example_loads_completely(tmp_path: Path) -> None:
    d = load(example_dir(tmp_path), environ=ENV)
    assert set(d.users) == {"sam", "ann", "raj"}
    assert d.users["sam"].role is Role.APPROVER and d.users["ann"].role is Role.CONTRACTOR
    assert d.users["ann"].until == 1909008000.0 and d.users["ann"].sponsor == "sam"
    assert d.users["raj"].until == 1901210400.0
    db = d.targets["appdb"]
    assert db.kind is TargetKind.POSTGRES and db.tls_mode == "require"
    assert {c.name: c.password for c in db.credsets} == {"ro": "ro-secret", "rw": "rw-secret"}
    assert dict(db.credset_sources) == {
        "ro": "env:APPDB_RO_PASSWORD",
        "rw": "file:secrets/appdb-rw.password",
    }
    assert d.targets["web2"].port == 22 and d.targets["web2"].principal == "bastion-web2"
    assert dict(d.targets["web1"].labels) == {"env": "staging", "role": "web"}
    assert [(g.user, g.target, g.profile, g.duration) for g in d.grants] == [
        ("ann", "web1", None, None),
        ("raj", "appdb", None, 90 * 86400.0),
        ("ann", None, "staging-web", None),
    ]
    prod = d.profiles["prod-db"]
    assert (prod.selector, prod.credset, prod.max_duration) == ("env=prod,role=db", "ro", 43200.0)
    assert prod.approvals == 2 and prod.approvers == ("@sre",)
    assert len(d.sha256) == 64


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("[users.a]\nkeys = []\nrole='x'\n", "users.a.role", "not a role"),
        ("[users.a]\nkeys = []\n", "users.a.keys", "at least one SSH public key"),
        ("[users.a]\nkeys = ['nope']\n", "users.a.keys", "not an OpenSSH public key"),
        (f"[users.a]\nkeys = ['{KEY}']\nuntil = 'tomorrow'\n", "users.a.until", "not a date"),
        (f"[users.a]\nkeys = ['{KEY}']\nuntil = '+2h'\n", "users.a.until", "fixed time"),
        (f"[users.a]\nkeys = ['{KEY}']\nrol = 'admin'\n", "users.a.rol", "did you mean 'role'"),
        (f"[users.a]\nkeys = ['{KEY}']\ntotp_secret = 'JBSW'\n", "users.a.totp_secret", "never"),
        (f"[users.'a b']\nkeys = ['{KEY}']\n", "users.a b", "not a valid name"),
        ("[targets.t]\nlogins = ['x']\n", "targets.t", "ssh = 'HOST:PORT' or postgres"),
        ("[targets.t]\nssh = 'h:99999'\nlogins = ['x']\n", "targets.t.ssh", "HOST:PORT"),
        ("[targets.t]\nssh = 'h'\nlogins = ['x']\n", "targets.t.host_keys", "pin the target"),
        (f"[targets.t]\nssh = 'h'\nhost_keys = ['{KEY}']\n", "targets.t.logins", "at least one"),
        ("[targets.d]\npostgres = 'h'\ndatabase = 'x'\n", "targets.d.credsets", "at least one"),
        (
            PG + "credsets.ro = {user='u', password='hunter2'}\n",
            "targets.d.credsets.ro.password",
            "literal password is not allowed",
        ),
        (
            PG + "credsets.ro = {user='u', password='env:NOPE'}\n",
            "targets.d.credsets.ro.password",
            "NOPE is not set",
        ),
        (
            PG + "credsets.ro = {user='u', password='file:missing'}\n",
            "targets.d.credsets.ro.password",
            "cannot read",
        ),
        ("[[grants]]\nuser = 'a'\n", "grants[0]", "target = 'NAME' or profile"),
        ("[[grants]]\nuser = 'a'\ntarget = 't'\n", "grants[0]", "say how long"),
        ("[[grants]]\nuser='a'\ntarget='t'\nfor='soon'\n", "grants[0].for", "cannot read duration"),
        ("[[grants]]\nuser='a'\ntarget='t'\nfor='1d'\nallow=['x']\n", "grants[0].allow", "unknown"),
        (
            "[[grants]]\nuser='a'\ntarget='t'\nfor='1d'\n[[grants]]\nuser='a'\ntarget='t'\nfor='2d'\n",
            "grants[1]",
            "same grant as grants[0]",
        ),
        ("grants = 3\n", "grants", "array of tables"),
        ("users = 3\n", "users", "must be a table"),
        ("version = 2\n", "version", "format version 1"),
        ("colour = 'red'\n", "colour", "unknown key"),
        ("[targets.t]\nssh='h'\nlogins=['x']\nlabels={env=3}\n", "targets.t.labels.env", "string"),
        ("[targets.t]\nssh='h'\nlogins=['x']\nlabels={env='a b'}\n", "targets.t.labels.env", "bad"),
        ("[profiles.p]\nlogins=['x']\n", "profiles.p.select", "is required"),
        ("[profiles.p]\nselect='env=='\n", "profiles.p.select", ""),
        ("[profiles.p]\nselect='env=a'\napprovals=-1\n", "profiles.p.approvals", "0 or more"),
        ("[profiles.p]\nselect='env=a'\nmax='x'\n", "profiles.p.max", "duration"),
    ],
)
def test_errors_name_file_table_and_key(tmp_path: Path, text: str, where: str, words: str) -> None:
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'f.toml'}: {where}: "), message
    assert words in message


def test_a_private_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    text = "[users.a]\nkeys = ['-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXk']\n"
    message = error(tmp_path, text)
    assert "users.a.keys: holds a private key" in message and "b3Bl" not in message


def test_not_toml_and_not_utf8(tmp_path: Path) -> None:
    assert "not valid TOML" in error(tmp_path, "[users\n")
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(SpecError, match="not UTF-8"):
        load(path, environ={})
    with pytest.raises(SpecError, match="cannot read"):
        load(tmp_path / "absent.toml", environ={})


def test_relative_files_are_read_next_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "a.pub").write_text(f"# a comment\n{KEY}\n")
    d = parse(
        b"[users.a]\nkey_files = ['keys/a.pub']\nuntil = 2030-01-01T10:00:00+01:00\n",
        tmp_path / "f.toml",
        environ={},
    )
    assert d.users["a"].keys == (KEY,) and d.users["a"].until == 1893488400.0


_ALPHABET = string.ascii_letters + string.digits + "[]=.\"' \n#:-_,{}+@"


@settings(
    max_examples=budget(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=byte_mutations(40))
def test_fuzz_mutated_example_loads_or_says_why(tmp_path: Path, ops: list[Mutation]) -> None:
    """Any edit of the example loads, or raises SpecError: never a traceback."""
    path = tmp_path / "apply.toml"
    if not path.exists():  # the fixture's directory is shared by every example
        example_dir(tmp_path)
    raw = apply_mutations(EXAMPLE.read_bytes(), ops, 8)
    try:
        parse(raw, path, environ=ENV)
    except SpecError as e:
        assert str(e).startswith(str(path))


@settings(max_examples=budget(200), deadline=None)
@given(text=st.text(alphabet=_ALPHABET, max_size=200))
def test_fuzz_arbitrary_text_loads_or_says_why(text: str) -> None:
    path = Path("/nonexistent/f.toml")
    try:
        parse(text.encode(), path, environ={})
    except SpecError as e:
        assert str(e).startswith(str(path))


# --- structured fuzz: the right tables, values of any TOML type ---------------------------------

_SCALARS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["contractor", "admin", "sam", "web1", "1d", "h:22", "env=a", "env:X"]),
    st.sampled_from([KEY, "file:nope", "2030-01-01", "scp", "-1"]),
    st.integers(-3, 70000),
    st.floats(allow_nan=False),
    st.booleans(),
    st.dates(),
    st.datetimes(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["user", "password", "env", "x"]), inner, max_size=2)
    ),
    max_leaves=6,
)
_USER_KEYS = ["role", "keys", "groups", "sponsor", "until", "org", "disabled", "key_files"]
_TARGET_KEYS = ["ssh", "postgres", "logins", "host_keys", "database", "credsets", "tls", "labels"]
_PROFILE_KEYS = ["select", "logins", "credset", "allow", "max", "approvals", "approvers"]
_GRANT_KEYS = ["user", "target", "profile", "login", "credset", "allow", "until", "for"]


def _table(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from(keys), _VALUES, max_size=5)


_FILES = st.fixed_dictionaries(
    {},
    optional={
        "users": st.dictionaries(
            st.sampled_from(["sam", "ann", "a b"]), _table(_USER_KEYS), max_size=2
        ),
        "targets": st.dictionaries(
            st.sampled_from(["web1", "db"]), _table(_TARGET_KEYS), max_size=2
        ),
        "profiles": st.dictionaries(st.sampled_from(["p"]), _table(_PROFILE_KEYS), max_size=1),
        "grants": st.lists(_table(_GRANT_KEYS), max_size=2) | _VALUES,
        "version": _SCALARS,
    },
)


@settings(max_examples=budget(200), deadline=None)
@given(data=_FILES)
def test_fuzz_any_values_in_the_right_tables_load_and_plan_or_say_why(
    data: dict[str, object],
) -> None:
    """Checked, then planned against an empty store: SpecError or a plan, never a traceback."""
    from bastion.provision.changes import Current
    from bastion.provision.plan import make_plan

    path = Path("/nonexistent/f.toml")
    try:
        desired = from_data(data, path, "0" * 64, environ={"X": "pw"})
        make_plan(desired, Current(), 1_880_000_000.0)
    except SpecError as e:
        assert str(e).startswith(f"{path}: ")
