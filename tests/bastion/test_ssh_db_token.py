"""``ssh BASTION db-token TARGET [CREDSET]`` through the real bastion node and stock OpenSSH.

The database target is registered with the real CLI and points at the test
PostgreSQL server's address; here it is only stored, never dialled (the
listener's own tests connect through it). The printed token must pass
``check_db_token``; refusals must be clear, exit 1 and be audited.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.db_tokens import TokenRefused, check_db_token
from tests.peers.bastion_node import BastionHarness, Contractor
from tests.peers.postgres import PgServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKEN = re.compile(rb"^token: (bdt_[A-Za-z0-9_-]{43})$", re.MULTILINE)


@pytest.fixture(scope="module")
def tokpg(
    bastion: BastionHarness, pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Database targets ``tokpg`` (two credential sets) and ``tokpg1`` (one), added by the CLI."""
    pw = Path(tmp_path_factory.mktemp("pw")) / "ro.pw"
    pw.write_text("not-used-here\n")
    address = f"{pg_server.host}:{pg_server.port}"
    for name, sets in (
        ("tokpg", ["readonly:app_ro:file:" + str(pw), "readwrite:app_rw"]),
        ("tokpg1", ["readonly:app_ro"]),
    ):
        if bastion.store.get_target(name) is None:
            args = ["target", "add", name, "--postgres", address, "--database", "app"]
            for c in sets:
                args += ["--credset", c]
            r = bastion.cli(*args)
            assert r.returncode == 0, r.stderr
    yield "tokpg"


def _grant(bastion: BastionHarness, who: Contractor, target: str, *extra: str) -> int:
    r = bastion.cli("grant", "add", who.name, target, "--for", "2h", *extra, "--json")
    assert r.returncode == 0, r.stderr
    return int(re.search(r'"id": (\d+)', r.stdout).group(1))  # type: ignore[union-attr]


def _refused(bastion: BastionHarness, who: Contractor) -> list[dict[str, object]]:
    return [r.details for r in bastion.wait_audit(who.name, "db-token.refused")]


def test_db_token_is_issued_printed_and_accepted(bastion: BastionHarness, tokpg: str) -> None:
    who = bastion.contractor("dbt")
    grant_id = _grant(bastion, who, tokpg, "--credset", "readonly")
    r = who.ssh("db-token", tokpg)
    assert r.returncode == 0, r.stderr
    found = TOKEN.search(r.stdout)
    assert found, r.stdout
    token = found.group(1).decode()
    out = r.stdout.decode()
    port = bastion.config.postgres.listen[1]  # type: ignore[index]
    assert f"port={port} user={who.name} dbname={tokpg}/readonly sslmode=require" in out
    assert f"PGPASSWORD={token} psql" in out
    assert "(1 h token lifetime)" in out

    rec = check_db_token(
        bastion.store, user_name=who.name, target_name=tokpg, token=token, now=time.time()
    )
    assert rec.grant_id == grant_id and rec.credset == "readonly"
    assert rec.created_from.startswith("127.0.0.1")
    issued = bastion.wait_audit(who.name, "db-token.issue")
    assert len(issued) == 1
    details = issued[0].details
    assert details["token"] == rec.id and details["credset"] == "readonly"
    assert details["grant"] == grant_id and details["expires"] == rec.expires_at
    assert token not in str(details)
    assert bastion.wait_audit(who.name, "session.start", timeout=0.5) == []

    # The token is bound to its user and target.
    with pytest.raises(TokenRefused) as info:
        check_db_token(
            bastion.store, user_name="someone", target_name=tokpg, token=token, now=time.time()
        )
    assert info.value.reason == "other-user"


def test_credential_set_choice_and_expiry_at_grant_end(bastion: BastionHarness, tokpg: str) -> None:
    who = bastion.contractor("dbt")
    _grant(bastion, who, tokpg, "--credset", "readonly")
    rw = bastion.cli("grant", "add", who.name, tokpg, "--credset", "readwrite", "--for", "10m")
    assert rw.returncode == 0, rw.stderr
    r = who.ssh("db-token", tokpg)
    assert r.returncode == 1
    assert b"several credential sets (readonly, readwrite)" in r.stderr
    r = who.ssh("db-token", tokpg, "readwrite")
    assert r.returncode == 0, r.stderr
    assert f"dbname={tokpg}/readwrite".encode() in r.stdout
    assert re.search(rb"\(grant #\d+ ends then\)", r.stdout)
    r = who.ssh("db-token", tokpg, "admin")
    assert r.returncode == 1
    assert b"has no credential set 'admin' (it has: readonly, readwrite)" in r.stderr
    reasons = [d["reason"] for d in _refused(bastion, who)]
    assert reasons == ["no-grant", "no-credset"]


def test_db_token_refusals_are_clear_and_audited(bastion: BastionHarness, tokpg: str) -> None:
    who = bastion.contractor("dbt")
    r = who.ssh("db-token", tokpg)
    assert r.returncode == 1 and b"bastion: no grant for tokpg" in r.stderr
    assert TOKEN.search(r.stdout) is None
    r = who.ssh("db-token", "web1")
    assert r.returncode == 1 and b"web1 is an SSH target" in r.stderr
    r = who.ssh("db-token")
    assert r.returncode == 2 and b"usage: ssh USER@BASTION db-token TARGET [CREDSET]" in r.stderr
    assert b"db-token DB     password for psql" in who.ssh("help").stdout
    refused = _refused(bastion, who)
    assert [(d["reason"], d["message"]) for d in refused] == [
        ("no-grant", "no grant for tokpg"),
        (
            "not-postgres",
            f"web1 is an SSH target, not a database; connect with: ssh -t {who.name}@BASTION web1",
        ),
    ]
    assert bastion.audit(who.name, "db-token.issue") == []


def test_ssh_sessions_to_a_database_target_point_to_db_token(
    bastion: BastionHarness, tokpg: str
) -> None:
    who = bastion.contractor("dbt")
    _grant(bastion, who, "tokpg1")
    hint = f"get a database token with 'ssh {who.name}@BASTION db-token tokpg1'".encode()
    for r in (who.ssh("tokpg1", "true"), who.ssh("true", target="tokpg1")):
        assert r.returncode == 1 and hint in r.stderr, r.stderr
    reasons = [row.details["reason"] for row in bastion.wait_audit(who.name, "session.refused")]
    assert reasons == ["postgres-target", "postgres-target"]


def test_grants_builtin_shows_kind_and_credential_set(bastion: BastionHarness, tokpg: str) -> None:
    who = bastion.contractor("dbt")
    g_db = _grant(bastion, who, "tokpg1")
    g_ssh = bastion.grant(who, "web1")
    r = who.ssh("grants")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert any(line.startswith(f"#{g_db}\ttokpg1\tpostgres\treadonly\tuntil ") for line in lines)
    assert any(line.startswith(f"#{g_ssh.id}\tweb1\tssh\t{g_ssh.login}\tuntil ") for line in lines)


def test_locking_the_user_revokes_their_tokens(bastion: BastionHarness, tokpg: str) -> None:
    who = bastion.contractor("dbt")
    _grant(bastion, who, "tokpg1")
    r = who.ssh("db-token", "tokpg1")
    assert r.returncode == 0, r.stderr
    token = TOKEN.search(r.stdout).group(1).decode()  # type: ignore[union-attr]
    lock = bastion.cli("user", "lock", who.name, "--for", "1h")
    assert lock.returncode == 0 and "1 token(s) revoked" in lock.stdout, lock.stderr
    with pytest.raises(TokenRefused) as info:
        check_db_token(
            bastion.store, user_name=who.name, target_name="tokpg1", token=token, now=time.time()
        )
    assert info.value.reason == "revoked" and "by test-admin" in info.value.message
    rows = bastion.audit("test-admin", "user.lock")
    assert any(row.subject == who.name and row.details["tokens_revoked"] == 1 for row in rows)
