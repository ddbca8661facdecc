"""No secret a full run used reaches any artefact the node leaves behind.

A real node (DEBUG logging to its log file), real OpenSSH targets, a real
PostgreSQL, stock ``ssh``, ``psql`` and psycopg. The run: a TOTP login with a
wrong code then the right one, an access request approved over SSH, a
PostgreSQL target added with a credential-set password from the environment,
another from ``bastion apply`` with an ``env:`` password, a database token
fetched with ``ssh db-token`` and used by psql and psycopg, a control token.
Then every artefact is searched for every secret: the node's log, the output of
each CLI call, every row of every table of the SQLite state, each recording's
header, markers, structured events and bytes, and the audit export.

What is *not* an artefact: the one channel a secret is meant to travel by (the
``db-token`` reply to its contractor, the control token printed once to the
admin who asked for it). The test session types no secret: what a contractor
types into a recorded shell is recorded by design.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from bastion.control.client import ControlClient
from bastion.control.messages import ControlError
from bastion.openssh_target import free_port
from bastion.store.models import Role
from recorder import RecordingReader
from recorder.events import Input, Output
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.peers.pg_bastion import TOKEN_LINE
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PENDING = re.compile(rb"request #(\d+) pending")


@dataclass
class Run:
    """The secrets a run used and the text of every artefact it left, by name."""

    secrets: dict[str, str] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    """TOTP codes entered: short digits, matched as whole words only."""
    artefacts: dict[str, str] = field(default_factory=dict)

    def keep(
        self, name: str, r: subprocess.CompletedProcess[bytes] | subprocess.CompletedProcess[str]
    ) -> None:
        out = r.stdout if isinstance(r.stdout, str) else r.stdout.decode(errors="replace")
        err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode(errors="replace")
        self.artefacts[f"{name} (stdout)"] = out
        self.artefacts[f"{name} (stderr)"] = err

    def leaks(self) -> list[str]:
        found = []
        for where, text in self.artefacts.items():
            for what, secret in self.secrets.items():
                if secret in text:
                    found.append(f"{what} in {where}")
            for what, code in self.codes.items():
                if re.search(rf"(?<![0-9A-Za-z]){code}(?![0-9A-Za-z])", text):
                    found.append(f"{what} in {where}")
        return found


def key_lines(path: Path) -> list[str]:
    """The full-length base64 lines of a PEM / OpenSSH private key file (its secret body)."""
    return [
        line
        for line in path.read_text().splitlines()
        if len(line) >= 60 and not line.startswith("-----")
    ]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    control = f'listen = "127.0.0.1:{free_port()}"'
    harness = make_harness(
        Path(tmp_path_factory.mktemp("secrets")),
        overrides={'# listen = "0.0.0.0:7443"': control},
    )
    try:
        yield harness
    finally:
        harness.close()


def _cli(
    h: BastionHarness, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args, "--config", str(h.config.path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BASTION_ACTOR": "test-admin", **(env or {})},
    )


def _ok(r: subprocess.CompletedProcess[bytes] | subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 0, (r.args, r.stdout, r.stderr)


def _mfa_logins(h: BastionHarness, run: Run, alice: Contractor) -> None:
    wrong = alice.wrong_code()
    r = alice.ssh("echo", "hi", target="web1", code=wrong)
    assert r.returncode != 0
    run.keep("ssh with a wrong code", r)
    code = alice.next_code()
    run.codes["a TOTP code entered"] = code
    run.codes["the wrong TOTP code entered"] = wrong
    r = alice.ssh("echo", "in-$((6*7))", target="web1", code=code)
    _ok(r)
    assert b"in-42" in r.stdout
    run.keep("ssh echo", r)


def _approval(h: BastionHarness, run: Run, alice: Contractor, bob: Contractor) -> None:
    r = alice.ssh("request", "web2", "--for", "1h", "--reason", "fix nginx")
    run.keep("ssh request", r)
    m = PENDING.search(r.stdout)
    assert m is not None, (r.stdout, r.stderr)
    r = bob.ssh("approve", m.group(1).decode(), "--reason", "ok")
    _ok(r)
    run.keep("ssh approve", r)
    r = alice.ssh("echo", "on-web2", target="web2")
    _ok(r)
    run.keep("ssh echo web2", r)


def _database(h: BastionHarness, run: Run, pg: PgServer, alice: Contractor) -> None:
    suffix = secrets.token_hex(3)
    role, password = f"sec_rw_{suffix}", "pw-" + secrets.token_urlsafe(18)
    run.secrets["the credential-set password"] = password
    pg.create_role(role, password)
    pg.execute(f"DROP DATABASE IF EXISTS sec_{suffix}")
    pg.execute(f'CREATE DATABASE sec_{suffix} OWNER "{role}"')
    address = f"{pg.host}:{pg.port}"
    r = _cli(
        h,
        "target",
        "add",
        "secpg",
        "--postgres",
        address,
        "--database",
        f"sec_{suffix}",
        "--credset",
        f"rw:{role}:env:SECPG_PW",
        env={"SECPG_PW": password},
    )
    _ok(r)
    run.keep("bastion target add", r)
    r = _cli(h, "grant", "add", alice.name, "secpg", "--for", "2h", "--credset", "rw")
    _ok(r)
    run.keep("bastion grant add", r)
    t = alice.ssh("db-token", "secpg")
    _ok(t)
    found = TOKEN_LINE.search(t.stdout.decode())
    assert found is not None
    token = found.group(1)
    run.secrets["the db token"] = token
    run.artefacts["ssh db-token (stderr)"] = t.stderr.decode(errors="replace")  # stdout: delivery
    dsn = f"host=127.0.0.1 port={h.pg_port} user={alice.name} dbname=secpg sslmode=require"
    env = {**os.environ, "PGPASSWORD": token, "PGCONNECT_TIMEOUT": "10"}
    p = subprocess.run(
        ["psql", "-X", dsn],
        input="SELECT 40 + 2 AS answer;\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    _ok(p)
    assert "42" in p.stdout
    run.keep("psql", p)
    bad = subprocess.run(
        ["psql", "-X", dsn],
        input="SELECT 1;\n",
        capture_output=True,
        text=True,
        env={**env, "PGPASSWORD": token[:-4] + "AAAA"},
        timeout=60,
    )
    assert bad.returncode != 0
    run.secrets["a wrong db token"] = token[:-4] + "AAAA"
    run.keep("psql with a wrong token", bad)
    with psycopg.connect(
        host="127.0.0.1",
        port=h.pg_port,
        user=alice.name,
        dbname="secpg",
        sslmode="require",
        password=token,
        connect_timeout=10,
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)


def _apply(h: BastionHarness, run: Run, pg: PgServer) -> None:
    password = "ap-" + secrets.token_urlsafe(18)
    run.secrets["the apply env: password"] = password
    spec = h.dir / "secrets-apply.toml"
    spec.write_text(
        f'[targets.applypg]\npostgres = "{pg.host}:{pg.port}"\ndatabase = "app"\n'
        'credsets.ro = { user = "app_ro", password = "env:APPLY_PW" }\n'
    )
    r = _cli(h, "apply", str(spec), env={"APPLY_PW": password})
    _ok(r)
    run.keep("bastion apply", r)


def _control_token(h: BastionHarness, run: Run) -> None:
    admin = h.contractor("adm", role=Role.ADMIN)
    r = _cli(h, "user", "control-token", admin.name, "--ttl", "1h")
    _ok(r)
    token = r.stdout.strip()
    run.secrets["the control token"] = token
    run.artefacts["bastion user control-token (stderr)"] = r.stderr  # stdout is its delivery
    listen = h.config.control.listen
    assert listen is not None
    cafile = str(h.config.control.tls_cert.with_name("control_tls_ca.crt"))

    async def use() -> None:
        async with await ControlClient.connect_tcp(
            *listen, user=admin.name, token=token, cafile=cafile
        ) as client:
            assert client.operator is not None and client.operator.name == admin.name
        wrong = token[:-4] + "AAAA"
        run.secrets["a wrong control token"] = wrong
        with pytest.raises(ControlError):
            await ControlClient.connect_tcp(*listen, user=admin.name, token=wrong, cafile=cafile)

    wait_until(h.config.control.tls_cert.exists, 10, "the control listener's certificate")
    for i, line in enumerate(key_lines(h.config.control.tls_key)):
        run.secrets[f"the control TLS key (line {i})"] = line
    asyncio.run(use())


SECRET_LINE = re.compile(r"^secret:\s+([A-Z2-7]+)$", re.MULTILINE)


def _enrolment(h: BastionHarness, run: Run) -> None:
    """A user added and re-enrolled with the CLI: the printed secret is delivery, not a leak."""
    carol = h.contractor("keyonly")  # only for a key pair on disk
    pub = str(carol.key_path.with_suffix(".pub"))
    name = "carol-" + secrets.token_hex(2)
    for i, args in enumerate(
        (("user", "add", name, "--key", pub, "--role", "auditor"), ("user", "reset-mfa", name))
    ):
        r = _cli(h, *args)
        _ok(r)
        found = SECRET_LINE.search(r.stdout)
        assert found is not None, r.stdout
        run.secrets[f"{name}'s TOTP secret #{i}"] = found.group(1)
        run.artefacts[f"bastion {' '.join(args[:2])} (stderr)"] = r.stderr
    for args in (("user", "list", "--json"),):
        r = _cli(h, *args)
        _ok(r)
        run.keep("bastion " + " ".join(args), r)


def _collect(h: BastionHarness, run: Run) -> None:
    for args in (
        ("audit", "--json", "--verify"),
        ("sessions", "list", "--json"),
        ("token", "list", "--all"),
    ):
        r = _cli(h, *args)
        _ok(r)
        run.keep("bastion " + " ".join(args), r)
    h.stop()  # every recording sealed, every log line written
    run.artefacts["the node's log"] = h.log()
    assert h.config.state_url.startswith("sqlite:///")
    db = sqlite3.connect(h.config.state_url.removeprefix("sqlite:///"))
    try:
        run.artefacts["the state database (every table)"] = _dump(db)
    finally:
        db.close()
    recordings = sorted(p for p in h.config.recordings_dir.rglob("*") if p.is_file())
    assert recordings
    for path in recordings:
        parts: list[str] = []
        with RecordingReader.open(str(path)) as reader:
            parts.append(repr(reader.header))
            parts.append(repr(reader.trailer))
            for event in reader.events():  # markers, structured events and the bytes
                parts.append(repr(event))
                if isinstance(event, Output | Input):
                    parts.append(event.data.decode(errors="replace"))
        run.artefacts[f"recording {path.name}"] = "\n".join(parts)


def _dump(db: sqlite3.Connection) -> str:
    """Every row of every stored table, the search index's compressed text unpacked.

    ``iterdump`` cannot be used: the search index's FTS5 table is contentless (it has
    no rows to scan), and its text lives zlib-compressed in ``search_chunks``, where a
    plain dump would hide a secret from the grep.
    """
    out: list[str] = []
    tables = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    for name, sql in tables:
        if sql.upper().startswith("CREATE VIRTUAL TABLE") or name.startswith("search_fts"):
            continue  # the FTS index itself and its shadow tables hold trigrams, not text
        for row in db.execute(f'SELECT * FROM "{name}"'):  # noqa: S608  names from sqlite_master
            for value in row:
                if isinstance(value, bytes):
                    try:
                        value = zlib.decompress(value).decode(errors="replace")
                    except zlib.error:
                        value = value.decode(errors="replace")
                out.append(f"{name}: {value}")
    return "\n".join(out)


def test_no_secret_in_any_artefact(node: BastionHarness, pg_server: PgServer) -> None:
    run = Run()
    alice = node.contractor("alice")
    bob = node.contractor("bob", role=Role.APPROVER)
    node.grant(alice, "web1")
    for who in (alice, bob):
        run.secrets[f"{who.name}'s TOTP secret"] = who.secret
        for i, line in enumerate(key_lines(who.key_path)):
            run.secrets[f"{who.name}'s private key (line {i})"] = line
    for what, path in (
        ("the CA key", node.config.ca_key),
        ("the SSH host key", node.config.ssh.host_key),
        ("the PostgreSQL TLS key", node.config.postgres.tls_key),
        ("the recording signing key", node.config.recording_signing_key),
    ):
        for i, line in enumerate(key_lines(path)):
            run.secrets[f"{what} (line {i})"] = line
    run.secrets["the secretbox key"] = node.config.secret_key_file.read_text().strip()

    _mfa_logins(node, run, alice)
    _approval(node, run, alice, bob)
    _database(node, run, pg_server, alice)
    _apply(node, run, pg_server)
    _control_token(node, run)
    _enrolment(node, run)
    _collect(node, run)

    assert len(run.secrets) > 10 and len(run.artefacts) > 10
    doctor = _cli(node, "doctor")
    run.keep("bastion doctor", doctor)
    assert doctor.returncode == 0, doctor.stdout  # the node's own files pass its own check
    # the artefacts hold what they should (the search looked at real content)
    assert "Accepted SSH client connection" in run.artefacts["the node's log"]
    assert "db-token.issue" in run.artefacts["the state database (every table)"]
    recorded = "\n".join(v for k, v in run.artefacts.items() if k.startswith("recording "))
    assert "SELECT 40 + 2" in recorded and "in-42" in recorded
    assert run.leaks() == []


def test_the_search_finds_a_planted_secret() -> None:
    """The matcher itself: a code is found as a word, not inside a longer number."""
    run = Run(secrets={"s": "abc"}, codes={"c": "123456"})
    run.artefacts = {"a": "x abc y", "b": "port 1234567", "c": "code=123456."}
    assert run.leaks() == ["s in a", "c in c"]
