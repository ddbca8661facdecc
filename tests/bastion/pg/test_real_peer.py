"""Real traffic: psycopg and psql talk to a real PostgreSQL through a recording relay.

Every byte of both directions must parse, and the QueryTracker must report the
SQL, parameters, tags, row counts and errors that the clients actually saw.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from bastion.pg import messages as m
from tests.bastion.pg.relay import Analysis, Relay, analyse
from tests.peers.postgres import PgServer

pytestmark = pytest.mark.integration

IDLE, IN_TX, FAILED = m.TransactionStatus


@pytest.fixture
def relay(pg_server: PgServer) -> Iterator[Relay]:
    with Relay(pg_server.host, pg_server.port) as r:
        yield r


@pytest.fixture
def dbname(pg_url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"])


def _only(relay: Relay) -> Analysis:
    (conn,) = relay.connections
    an = analyse(conn.wait_closed())
    assert an.unmatched == 0, an.records
    return an


def test_simple_and_extended_queries(relay: Relay, dbname: str) -> None:
    with psycopg.connect(relay.dsn(dbname), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int, name text)")
        conn.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", [1, "one", 2, "two"])
        assert conn.execute("SELECT name FROM t WHERE id >= %s ORDER BY id", [1]).fetchall() == [
            ("one",),
            ("two",),
        ]
        cur = conn.execute("SELECT %b::int8, %b::text, %s::bytea", [42, "héllo", b"\xff"])
        assert cur.fetchone() == (42, "héllo", b"\xff")
        cur = conn.execute("SELECT %s::int, %s", [7, None], binary=True)  # binary results
        assert cur.fetchone() == (7, None)
        big = conn.execute("SELECT repeat('x', 3000000)").fetchone()  # spans many reads
        assert big is not None and len(big[0]) == 3_000_000
        assert len(conn.execute("SELECT generate_series(1, 20000)").fetchall()) == 20000
        conn.execute("")
    an = _only(relay)

    startup = an.frontend_parser.startup
    assert startup is not None and startup.params["user"] == "postgres"
    assert startup.params["database"] == dbname
    assert an.backend_parser.backend_key is not None
    assert an.backend_parser.parameters["server_encoding"] == "UTF8"
    assert an.of(m.Terminate, "F") == [m.Terminate()]

    r = an.record("CREATE TABLE t (id int, name text)")
    assert (r.kind, r.tag, r.rows, r.tx_status, r.error_sqlstate) == (
        "simple",
        "CREATE TABLE",
        None,
        IDLE,
        None,
    )
    r = an.record("INSERT INTO t VALUES ($1, $2), ($3, $4)")
    assert (r.kind, r.params, r.tag, r.rows) == (
        "extended",
        ("1", "one", "2", "two"),
        "INSERT 0 2",
        2,
    )
    r = an.record("SELECT name FROM t WHERE id >= $1 ORDER BY id")
    assert (r.params, r.tag, r.rows) == (("1",), "SELECT 2", 2)
    r = an.record("SELECT $1::int8, $2::text, $3::bytea")
    binds = [b for b in an.of(m.Bind, "F") if len(b.params) == 3]
    assert binds[0].param_formats == (1, 1, 1)  # %b and bytea go binary
    assert r.params == ("42", "héllo", b"\xff") and r.rows == 1
    r = an.record("SELECT $1::int, $2")
    assert r.params[1] is None and r.rows == 1
    assert any(b.result_formats == (1,) for b in an.of(m.Bind, "F"))
    assert an.record("SELECT repeat('x', 3000000)").rows == 1
    assert an.record("SELECT generate_series(1, 20000)").rows == 20000
    assert len(an.of(m.DataRow, "B")) == 2 + 1 + 1 + 1 + 20000
    r = an.record("")
    assert r.kind == "simple" and r.tag is None
    assert all(rec.completed for rec in an.records)
    assert all(rec.started_at <= rec.finished_at for rec in an.records)


def test_pipeline_mode_and_error_skips_to_sync(relay: Relay, dbname: str) -> None:
    with psycopg.connect(relay.dsn(dbname), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int, name text)")
        with conn.pipeline():
            conn.execute("INSERT INTO t VALUES (%s, %s)", [1, "a"])
            conn.execute("INSERT INTO t VALUES (%s, %s)", [2, "b"])
            count = conn.execute("SELECT count(*) FROM t")
        assert count.fetchone() == (2,)
        with pytest.raises(psycopg.errors.DivisionByZero), conn.pipeline():
            conn.execute("INSERT INTO t VALUES (%s, %s)", [3, "rolled back"])
            conn.execute("SELECT 1 / %s", [0])
            conn.execute("INSERT INTO t VALUES (%s, %s)", [4, "never run"])
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    an = _only(relay)

    inserts = [r for r in an.records if r.sql == "INSERT INTO t VALUES ($1, $2)"]
    assert [(r.params, r.tag) for r in inserts] == [
        (("1", "a"), "INSERT 0 1"),
        (("2", "b"), "INSERT 0 1"),
        (("3", "rolled back"), "INSERT 0 1"),
    ]
    assert an.record("SELECT 1 / $1").error_sqlstate == "22012"
    assert [r.rows for r in an.records if r.sql == "SELECT count(*) FROM t"] == [1, 1]
    # the pipelined batch really was pipelined: several Executes before one Sync
    kinds = [type(x).__name__ for x in an.frontend]
    assert "Execute,Parse" in ",".join(kinds)


def test_copy_in_and_out(relay: Relay, dbname: str) -> None:
    rows = [(i, f"name {i}" * (i % 7)) for i in range(500)]
    with psycopg.connect(relay.dsn(dbname), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int, name text)")
        with conn.cursor() as cur:
            with cur.copy("COPY t (id, name) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            with cur.copy("COPY t TO STDOUT") as copy:
                out = b"".join(bytes(chunk) for chunk in copy)
        with pytest.raises(psycopg.errors.QueryCanceled), conn.cursor() as cur:
            with cur.copy("COPY t FROM STDIN") as copy:
                copy.write_row((1, "x"))
                raise psycopg.errors.QueryCanceled("client abort")  # psycopg sends CopyFail
    an = _only(relay)

    sent = [x for x in an.frontend if isinstance(x, m.CopyData)]
    received = [x for x in an.backend if isinstance(x, m.CopyData)]
    r = an.record("COPY t (id, name) FROM STDIN")
    assert (r.kind, r.copy_direction, r.rows, r.tag) == ("copy", "in", 500, "COPY 500")
    assert r.copy_bytes >= len(b"".join(f"{i}\t{n}\n".encode() for i, n in rows))
    copied_in = [rec for rec in an.records if rec.copy_direction == "in"]
    assert sum(rec.copy_bytes for rec in copied_in) == sum(len(x.data) for x in sent)
    assert sum(rec.copy_messages for rec in copied_in) == len(sent)
    r = an.record("COPY t TO STDOUT")
    assert (r.copy_direction, r.rows, r.copy_messages) == ("out", 500, 500)
    assert r.copy_bytes == len(out) == sum(len(x.data) for x in received)
    r = an.record("COPY t FROM STDIN")
    assert (r.copy_direction, r.error_sqlstate) == ("in", "57014")
    assert an.of(m.CopyFail, "F")


def test_error_inside_a_transaction(relay: Relay, dbname: str) -> None:
    with psycopg.connect(relay.dsn(dbname)) as conn:  # not autocommit: psycopg sends BEGIN
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (%s)", [1])
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
    an = _only(relay)

    summary = [(r.sql, r.tag, r.error_sqlstate, r.tx_status) for r in an.records]
    assert summary == [
        ("BEGIN", "BEGIN", None, IN_TX),
        ("CREATE TABLE t (id int)", "CREATE TABLE", None, IN_TX),
        ("INSERT INTO t VALUES ($1)", "INSERT 0 1", None, IN_TX),
        ("SELECT 1 / 0", None, "22012", FAILED),
        ("SELECT 1", None, "25P02", FAILED),
        ("ROLLBACK", "ROLLBACK", None, IDLE),
    ]
    assert an.backend_parser.transaction_status is IDLE


def test_scram_authentication(relay: Relay, pg_server: PgServer) -> None:
    role, password = f"r_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    pg_server.create_role(role, password)
    try:
        with psycopg.connect(relay.dsn("postgres", role, password)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(relay.dsn("postgres", role, "wrong"))
    finally:
        pg_server.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    good, bad = (analyse(c.wait_closed()) for c in relay.connections)

    (offer,) = good.of(m.AuthenticationSASL, "B")
    assert "SCRAM-SHA-256" in offer.mechanisms
    (first,) = good.of(m.SASLInitialResponse, "F")
    assert first.mechanism == "SCRAM-SHA-256" and first.data is not None
    assert first.data.startswith(b"n,,n=")
    assert len(good.of(m.AuthenticationSASLContinue, "B")) == 1
    assert len(good.of(m.SASLResponse, "F")) == 1
    assert good.of(m.AuthenticationSASLFinal, "B")[0].data.startswith(b"v=")
    assert good.of(m.AuthenticationOk, "B") == [m.AuthenticationOk()]
    assert good.record("SELECT current_user").rows == 1

    assert bad.of(m.AuthenticationOk, "B") == []
    (failure,) = bad.records
    assert (failure.kind, failure.error_sqlstate) == ("error", "28P01")


def test_cancel_request(relay: Relay, dbname: str) -> None:
    with psycopg.connect(relay.dsn(dbname), autocommit=True) as conn:
        canceller = threading.Timer(0.5, conn.cancel_safe)
        canceller.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        canceller.join()
    main, cancel = (analyse(c.wait_closed()) for c in relay.connections)

    key = main.backend_parser.backend_key
    assert key is not None
    assert cancel.frontend == [m.CancelRequest(key.pid, key.secret)]
    assert cancel.backend == []
    r = main.record("SELECT pg_sleep(20)")
    assert r.error_sqlstate == "57014" and r.finished_at > r.started_at


def test_psql_with_ssl_negotiation(relay: Relay, dbname: str, pg_server: PgServer) -> None:
    env = {
        **os.environ,
        "PGSSLMODE": "prefer",
        "PGCONNECT_TIMEOUT": "10",
        "PGGSSENCMODE": "disable",
    }
    started = time.monotonic()
    result = subprocess.run(
        [
            str(pg_server.bin_dir / "psql"),
            "-X",
            f"postgresql://postgres@127.0.0.1:{relay.port}/{dbname}",
            "-c",
            "SELECT 1 AS a; SELECT 2 AS b",
            "-c",
            "SELECT 1/0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "division by zero" in result.stderr, (result.stdout, result.stderr)
    assert time.monotonic() - started < 60
    an = _only(relay)

    assert an.frontend[0] == m.SSLRequest()
    assert an.backend[0] == m.SSLResponse(False)  # the test server has no TLS
    assert isinstance(an.frontend[1], m.StartupMessage)
    r = an.record("SELECT 1 AS a; SELECT 2 AS b")
    assert (r.kind, r.tags, r.rows) == ("simple", ("SELECT 1", "SELECT 1"), 2)
    assert an.record("SELECT 1/0").error_sqlstate == "22012"
