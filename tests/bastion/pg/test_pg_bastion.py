"""The PostgreSQL bastion end to end: real psql, psycopg and pgbench, real PostgreSQL 15.

Contractors get a database token over SSH (public key + TOTP), connect over TLS
to the bastion's listener, and every statement lands in the session's
recording with its text, parameters, tag, row count or error.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bastion.pg.tls_cert import ca_path
from tests.peers.bastion_node import BastionHarness, Contractor
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pg(bastion: BastionHarness, pg_server: PgServer) -> Iterator[PgTargets]:
    """pg1/pg2 behind the shared bastion."""
    yield PgTargets.create(bastion, pg_server)


def _user(pg: PgTargets, credset: str = "readwrite", seconds: float = 3600) -> Contractor:
    who = pg.harness.contractor("db")
    pg.grant(who, "pg1", credset, seconds)
    return who


def _connect(pg: PgTargets, who: Contractor, token: str, **kw: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(**pg.conninfo(who, password=token, **kw))


def _by_sql(queries: list[dict[str, Any]], needle: str) -> dict[str, Any]:
    found = [q for q in queries if q.get("sql") and needle in q["sql"]]
    assert found, f"no recorded query containing {needle!r} in {[q.get('sql') for q in queries]}"
    return found[0]


# --- psql -----------------------------------------------------------------------------


def test_psql_script_with_errors_transactions_and_copy(pg: PgTargets, tmp_path: Any) -> None:
    who = _user(pg)
    token = pg.token(who)
    src = tmp_path / "in.csv"
    src.write_text("alpha,a\nbeta,b\ngamma,c\n")
    out = tmp_path / "out.csv"
    script = f"""
SELECT count(*) AS n FROM items;
BEGIN;
INSERT INTO items (name, secret) VALUES ('tx', 'x');
SELECT * FROM no_such_table;
ROLLBACK;
\\copy items (name, secret) FROM '{src}' WITH (FORMAT csv)
\\copy (SELECT name FROM items ORDER BY id) TO '{out}' WITH (FORMAT csv)
SELECT 'done' AS marker;
"""  # noqa: S608  a psql script with a test-made path, not a query built from input
    result = pg.psql(who, token, script)
    assert result.returncode == 0, result.stderr
    assert "does not exist" in result.stderr and "done" in result.stdout
    assert out.read_text().splitlines()[-3:] == ["alpha", "beta", "gamma"]

    session = pg.session_of(who)
    assert session.protocol == "postgres" and session.login == "readwrite"
    queries = pg.queries(session)
    count = _by_sql(queries, "SELECT count(*) AS n FROM items")
    assert count["kind"] == "simple" and count["tag"] == "SELECT 1" and count["rows"] == 1
    assert _by_sql(queries, "INSERT INTO items")["tx"] == "in-transaction"
    failed = _by_sql(queries, "no_such_table")
    assert failed["error"]["sqlstate"] == "42P01" and failed["tx"] == "failed"
    assert _by_sql(queries, "ROLLBACK")["tag"] == "ROLLBACK"
    copy_in = _by_sql(queries, "FROM STDIN")
    assert copy_in["copy"]["direction"] == "in" and copy_in["rows"] == 3
    assert copy_in["copy"]["bytes"] == len(src.read_bytes())
    copy_out = _by_sql(queries, "TO STDOUT")
    assert copy_out["copy"]["direction"] == "out" and copy_out["rows"] >= 5
    assert [q["seq"] for q in queries] == list(range(1, len(queries) + 1))


# --- psycopg ----------------------------------------------------------------------------


def test_psycopg_extended_binary_pipeline_cursor_copy(pg: PgTargets) -> None:
    who = _user(pg)
    token = pg.token(who)
    with _connect(pg, who, token, application_name="pytest-psycopg") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM items WHERE id = %s", [1])
            assert cur.fetchone() == ("one",)
            cur.execute("SELECT %b::int + 1", [41], binary=True)
            assert cur.fetchone() == (42,)
        with conn.pipeline():
            for i in range(5):
                conn.execute("INSERT INTO items (name) VALUES (%s)", [f"pipe{i}"])
        conn.commit()
        with conn.cursor(name="server_side") as named:
            named.itersize = 2
            named.execute("SELECT id FROM items ORDER BY id")
            assert len(list(named)) >= 7
        conn.commit()
        with conn.cursor() as cur:
            with cur.copy("COPY items (name) FROM STDIN") as copy:
                for name in ("c1", "c2"):
                    copy.write_row([name])
            with cur.copy("COPY (SELECT name FROM items WHERE name LIKE 'c_') TO STDOUT") as copy:
                rows = [bytes(r) for r in copy]
            assert b"".join(rows) == b"c1\nc2\n"
        conn.commit()

    queries = pg.queries(pg.session_of(who))
    by_param = _by_sql(queries, "WHERE id = $1")
    assert by_param["kind"] == "extended" and by_param["params"] == ["1"]
    assert by_param["rows"] == 1 and by_param["tag"] == "SELECT 1"
    binary = _by_sql(queries, "$1::int + 1")
    assert binary["params"] == ["41"] and binary["rows"] == 1
    pipelined = [q for q in queries if q.get("sql") == "INSERT INTO items (name) VALUES ($1)"]
    assert [q["params"] for q in pipelined] == [[f"pipe{i}"] for i in range(5)]
    assert all(q["tag"] == "INSERT 0 1" for q in pipelined)
    fetches = [q for q in queries if q.get("sql", "").startswith("FETCH")]
    assert fetches and _by_sql(queries, "DECLARE")["tag"] == "DECLARE CURSOR"
    copy_in = _by_sql(queries, "COPY items (name) FROM STDIN")
    assert copy_in["copy"]["direction"] == "in" and copy_in["rows"] == 2
    copy_out = _by_sql(queries, "TO STDOUT")
    assert copy_out["copy"] == {"direction": "out", "bytes": 6, "messages": 2}


def test_readonly_credset_insert_is_refused_by_postgres(pg: PgTargets) -> None:
    who = _user(pg, "readonly")
    token = pg.token(who, "pg1", "readonly")
    with _connect(pg, who, token, dbname="pg1/readonly") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("INSERT INTO items (name) VALUES ('nope')")
    failed = _by_sql(pg.queries(pg.session_of(who)), "INSERT INTO items")
    assert failed["error"]["sqlstate"] == "42501"


def test_cancel_request_reaches_the_target(pg: PgTargets) -> None:
    who = _user(pg)
    token = pg.token(who)
    with _connect(pg, who, token) as conn:
        timer = threading.Timer(1.0, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(60)")
        timer.join()
        assert time.monotonic() - started < 50  # cancelled, not finished
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pg.harness.wait_audit(who.name, "pg.cancel")
    sleep = _by_sql(pg.queries(pg.session_of(who)), "pg_sleep")
    assert sleep["error"]["sqlstate"] == "57014"


# --- pgbench ----------------------------------------------------------------------------


def test_pgbench_simple_and_extended_complete(pg: PgTargets) -> None:
    who = _user(pg)
    token = pg.token(who)
    env = pg.libpq_env(who, token)
    bench = [
        f"{pg.server.bin_dir}/pgbench" if (pg.server.bin_dir / "pgbench").exists() else "pgbench"
    ]
    init = subprocess.run(
        [*bench, "-i", "-s", "1", "-q", "pg1"], env=env, capture_output=True, text=True, timeout=120
    )
    assert init.returncode == 0, init.stderr
    for mode in ("simple", "extended"):
        run = subprocess.run(
            [*bench, "-M", mode, "-c", "2", "-t", "25", "-n", "pg1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "number of transactions actually processed: 50/50" in run.stdout

    def sealed() -> list[Any]:
        sessions = pg.harness.store.list_sessions(user=who.name, limit=20)
        return sessions if len(sessions) >= 5 and all(s.final_hash for s in sessions) else []

    sessions = wait_until(sealed, 30, "5 sessions (init + 2 x 2 clients), recorded and sealed")
    queries = [q for s in sessions for q in pg.queries(s)]
    updates = [q for q in queries if (q.get("sql") or "").startswith("UPDATE pgbench_accounts")]
    simple = [q for q in updates if q["kind"] == "simple"]
    extended = [q for q in updates if q["kind"] == "extended"]
    assert len(simple) == 50 and len(extended) == 50  # every transaction's UPDATE
    assert all(q["tag"] == "UPDATE 1" and q["rows"] == 1 for q in updates)
    assert all(len(q["params"]) == 2 for q in extended)  # delta and aid, recorded
    copy_in = [q for q in queries if q.get("copy") and q["copy"]["direction"] == "in"]
    assert copy_in and copy_in[0]["rows"] == 100_000  # pgbench -i loads accounts with COPY


# --- refusals ----------------------------------------------------------------------------


def _refusal(pg: PgTargets, who: Contractor, token: str, **kw: Any) -> str:
    with pytest.raises(psycopg.OperationalError) as info:
        _connect(pg, who, token, **kw).close()
    return str(info.value)


def _refused_reasons(pg: PgTargets, who: Contractor) -> list[str]:
    rows = pg.harness.wait_audit(who.name, "session.refused")
    return [r.details.get("reason") for r in rows]


def test_wrong_and_foreign_tokens_are_refused_and_audited(pg: PgTargets) -> None:
    who = _user(pg)
    assert "token" in _refusal(pg, who, "bdt_not-a-real-token")
    pg.grant(who, "pg2")
    token_pg2 = pg.token(who, "pg2")
    message = _refusal(pg, who, token_pg2)  # dbname pg1 with pg2's token
    assert "pg2" in message
    other = _user(pg)
    assert "token" in _refusal(pg, other, pg.token(who))  # someone else's token
    reasons = _refused_reasons(pg, who)
    assert reasons and all(str(r).startswith("token-") for r in reasons)


def test_no_grant_expired_and_revoked_are_refused(pg: PgTargets) -> None:
    who = pg.harness.contractor("db")
    result = who.ssh("db-token", "pg1")
    assert result.returncode != 0 and b"no grant for pg1" in result.stderr
    grant = pg.grant(who, "pg1", seconds=3)
    token = pg.token(who)
    pg.harness.store.revoke_grant(grant.id, "test-admin", time.time())
    assert "revoked" in _refusal(pg, who, token)
    who2 = _user(pg, seconds=1.5)
    token2 = pg.token(who2)
    time.sleep(2)  # the behaviour under test: the 1.5 s grant runs out
    assert "expired" in _refusal(pg, who2, token2)


def test_plaintext_is_refused_when_tls_is_required(pg: PgTargets) -> None:
    who = _user(pg)
    token = pg.token(who)
    result = pg.psql(who, token, "SELECT 1;", sslmode="disable")
    assert result.returncode != 0 and "requires TLS" in result.stderr
    assert "plaintext" in _refused_reasons(pg, who)


# --- time box, terminate, CLI --------------------------------------------------------------


def test_grant_end_warns_then_closes(pg: PgTargets) -> None:
    who = _user(pg, seconds=5)
    token = pg.token(who)
    notices: list[str] = []
    with _connect(pg, who, token) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        with pytest.raises(psycopg.OperationalError):
            for _ in range(100):  # a query every 0.1 s until the grant ends the session
                conn.execute("SELECT 1")
                time.sleep(0.1)
    assert any("ends in" in n for n in notices), notices
    session = pg.session_of(who)
    assert session.end_reason == "grant-ended"


def test_admin_terminate_and_cli_views(pg: PgTargets) -> None:
    who = _user(pg)
    token = pg.token(who)
    with _connect(pg, who, token) as conn:
        conn.execute("SELECT 'before terminate'")
        live = pg.harness.store.list_sessions(user=who.name, live=True)
        assert len(live) == 1 and live[0].protocol == "postgres"
        done = pg.harness.cli("sessions", "terminate", live[0].id, "--reason", "audit stop")
        assert done.returncode == 0, done.stderr
        with pytest.raises(psycopg.OperationalError, match="audit stop"):
            for _ in range(100):  # a query every 0.1 s until the terminate lands
                conn.execute("SELECT 1")
                time.sleep(0.1)
    session = pg.session_of(who)
    assert session.end_reason == "admin-terminated"
    listed = json.loads(pg.harness.cli("sessions", "list", "--json", "--user", who.name).stdout)
    assert listed[0]["protocol"] == "postgres"
    exported = pg.harness.cli("export", session.id, "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    assert any("before terminate" in json.dumps(line) for line in lines)
    verify = pg.harness.cli("verify", session.id)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    store = pg.harness.store
    wait_until(lambda: store.is_indexed(session.id), 30, f"session {session.id} indexed")
    hits = pg.harness.cli("sessions", "search", "before terminate")
    assert session.id in hits.stdout


# --- upstream TLS -----------------------------------------------------------------------


def test_upstream_tls_verify_full(pg: PgTargets, pg_tls_server: PgServer) -> None:
    """verify-full reaches a TLS target it trusts and refuses one it does not."""
    from bastion.store.models import Credset, TargetKind

    h = pg.harness
    role, password = "tls_user", "tls-pass"
    pg_tls_server.execute(f"DROP ROLE IF EXISTS {role}")
    pg_tls_server.create_role(role, password)
    good_ca = str(ca_path(pg_tls_server.data_dir / "server.crt"))
    shutil.copy(good_ca, h.dir / "target-ca.crt")
    other_ca = ca_path(h.config.postgres.tls_cert)  # the node's own: valid, but not that server's
    for name, ca in (("pgtls", h.dir / "target-ca.crt"), ("pgtls_bad", other_ca)):
        h.store.add_target(
            name=name,
            kind=TargetKind.POSTGRES,
            host=pg_tls_server.host,
            port=pg_tls_server.port,
            logins=[],
            principal=name,
            database="postgres",
            credsets=[Credset("rw", role, password)],
            tls_mode="verify-full",
            tls_ca=str(ca),
            now=time.time(),
        )
    who = h.contractor("db")
    pg.grant(who, "pgtls", "rw")
    pg.grant(who, "pgtls_bad", "rw")
    with _connect(pg, who, pg.token(who, "pgtls"), dbname="pgtls") as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)
    message = _refusal(pg, who, pg.token(who, "pgtls_bad"), dbname="pgtls_bad")
    assert "certificate verify failed" in message


# --- hostile clients ----------------------------------------------------------------------


def _raw(pg: PgTargets, payload: bytes, wait: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", pg.harness.pg_port), timeout=wait) as sock:
        if payload:
            sock.sendall(payload)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
        return received


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        struct.pack("!ii", 0x7FFFFFF0, 196608),  # a 2 GiB startup packet
        struct.pack("!ii", 8, 1234),  # an unknown protocol version
        b"\x16\x03\x01\x02\x00" + b"\x01" * 64,  # a direct TLS handshake
        b"\x00\x00",
    ],
)
def test_garbage_gets_an_error_and_the_node_keeps_serving(pg: PgTargets, payload: bytes) -> None:
    answer = _raw(pg, payload)
    if len(payload) > 2:
        assert answer[:1] == b"E", answer  # an ErrorResponse, then the socket closes
    who = _user(pg)
    with _connect(pg, who, pg.token(who)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_slow_client_is_cut_off_at_the_login_timeout(pg: PgTargets) -> None:
    """A client that never finishes its startup packet is disconnected (test config: 5 s)."""
    started = time.monotonic()
    answer = _raw(pg, b"\x00\x00\x00", wait=30)
    assert b"login timed out" in answer
    assert time.monotonic() - started < 25


def _logged_in_socket(pg: PgTargets, who: Contractor, token: str) -> ssl.SSLSocket:
    """A raw TLS connection through the bastion, logged in and ready for queries."""
    from bastion.pg.encoding import encode
    from bastion.pg.messages import PasswordMessage, SSLRequest, StartupMessage

    raw = socket.create_connection(("127.0.0.1", pg.harness.pg_port), timeout=15)
    raw.sendall(encode(SSLRequest()))
    assert raw.recv(1) == b"S"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = ctx.wrap_socket(raw)
    sock.sendall(encode(StartupMessage({"user": who.name, "database": "pg1"})))
    assert sock.recv(9)[:1] == b"R"  # AuthenticationCleartextPassword
    sock.sendall(encode(PasswordMessage(token)))
    seen = b""
    while not seen.endswith(b"Z\x00\x00\x00\x05I"):
        chunk = sock.recv(4096)
        assert chunk, seen
        seen += chunk
    return sock


def test_oversized_message_after_login_gets_an_error_and_a_close(pg: PgTargets) -> None:
    who = _user(pg)
    with _logged_in_socket(pg, who, pg.token(who)) as sock:
        sock.sendall(b"Q" + struct.pack("!i", 0x7FFFFF00))  # a 2 GiB query, never sent
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer[:1] == b"E" and b"exceeds the limit" in answer
    assert b"max_message_bytes" in answer  # names the setting
    session = pg.session_of(who)
    assert session.end_reason == "resource-limit"
    shown = pg.harness.cli("sessions", "show", session.id)
    assert shown.returncode == 0 and "postgres" in shown.stdout, shown.stdout + shown.stderr
