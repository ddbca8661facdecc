"""Edge cases of the PostgreSQL proxy found in review, each once a real bug.

Startup options parsed the way PostgreSQL parses them, bytes pipelined with the
password, a client that resets during login, a TLS handshake that never
finishes, text that is not UTF-8, a broken target CA file (real psycopg / raw
TLS sockets, a real bastion node, a real PostgreSQL 15). Each docstring says
what used to go wrong.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import psycopg
import pytest

from bastion.pg.encoding import encode
from bastion.pg.messages import PasswordMessage, Query, SSLRequest, StartupMessage
from tests.peers.bastion_node import BastionHarness, Contractor
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pg(bastion: BastionHarness, pg_server: PgServer) -> Iterator[PgTargets]:
    """pg1/pg2 behind the shared bastion."""
    yield PgTargets.create(bastion, pg_server)


def _user(pg: PgTargets, credset: str = "readwrite") -> Contractor:
    who = pg.harness.contractor("rv")
    pg.grant(who, "pg1", credset)
    return who


def _tls_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _startup_over_tls(pg: PgTargets, who: Contractor) -> ssl.SSLSocket:
    """TLS up, StartupMessage sent, AuthenticationCleartextPassword received."""
    raw = socket.create_connection(("127.0.0.1", pg.harness.pg_port), timeout=15)
    raw.sendall(encode(SSLRequest()))
    assert raw.recv(1) == b"S"
    sock = _tls_client().wrap_socket(raw)
    sock.sendall(encode(StartupMessage({"user": who.name, "database": "pg1"})))
    assert sock.recv(9)[:1] == b"R"
    return sock


# --- startup options allow-list ------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        # a TAB inside a value survives safe_options() unescaped; PostgreSQL splits on it
        "-c 'search_path=public\t--default_transaction_read_only=on'",
        # an escaped backslash before a space: the normalised '\\\\ ' ends the word in PostgreSQL
        "-c search_path=public\\\\\\ --default_transaction_read_only=on",
    ],
    ids=["tab", "backslash"],
)
def test_startup_options_cannot_smuggle_a_refused_setting(pg: PgTargets, options: str) -> None:
    """front_door.safe_options only escapes ' ' in values; PostgreSQL's pg_split_opts
    splits on any isspace() and honours backslashes, so a refused setting
    (default_transaction_read_only, or role) reaches the target."""
    who = _user(pg)
    token = pg.token(who)
    try:
        conn = psycopg.connect(**pg.conninfo(who, password=token, options=options))
    except psycopg.OperationalError:
        return  # refused: the allow-list held
    with conn:
        value = conn.execute("SHOW default_transaction_read_only").fetchone()
    assert value == ("off",), f"startup options {options!r} set a refused setting: {value}"


# --- bytes pipelined after the password ----------------------------------------------------


def test_query_pipelined_with_the_password_is_forwarded(pg: PgTargets) -> None:
    """connection._start_relay drains the bytes buffered after the PasswordMessage through
    _client_data(b"", drain_only=True), which tracks them but never writes them upstream:
    the query never runs and the tracker expects an answer that will never come."""
    who = _user(pg)
    token = pg.token(who)
    sock = _startup_over_tls(pg, who)
    with sock:
        sock.sendall(encode(PasswordMessage(token)) + encode(Query("SELECT 'pipelined-q1'")))
        sock.settimeout(10)
        seen = b""
        try:
            while b"pipelined-q1" not in seen or not seen.endswith(b"Z\x00\x00\x00\x05I"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                seen += chunk
        except TimeoutError:
            pass
        assert b"pipelined-q1" in seen, f"no answer to the pipelined query: {seen[-80:]!r}"


# --- client gone while the bastion logs in upstream ----------------------------------------


def test_client_reset_during_login_still_seals_the_recording(pg: PgTargets) -> None:
    """A client that resets right after its password: connection._login takes the
    'client left while we logged in' branch, which calls _finish with self.recording
    still None (only _start_relay sets it), so the recording is never closed: no
    signed trailer, no final hash, and the LiveRecording is ticked forever."""
    who = _user(pg)
    token = pg.token(who)
    sock = _startup_over_tls(pg, who)
    sock.sendall(encode(PasswordMessage(token)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST while the node is logging in upstream
    session = pg.session_of(who, timeout=20)
    assert session.end_reason == "client-closed"
    assert session.final_hash is not None, "the session's recording was never sealed"
    verify = pg.harness.cli("verify", session.id)
    assert verify.returncode == 0, verify.stdout + verify.stderr


# --- logins in progress: the max_startups counter ------------------------------------------


def _stall_after_ssl_request(pg: PgTargets) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", pg.harness.pg_port), timeout=15)
    raw.sendall(encode(SSLRequest()))
    assert raw.recv(1) == b"S"
    return raw  # never sends a ClientHello


def _closed_by_peer(s: socket.socket) -> bool:
    """True once the other end has closed ``s`` (whatever it sent before is discarded)."""
    s.settimeout(0.2)
    try:
        while s.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return True


def test_stalled_tls_handshake_does_not_keep_a_login_slot(pg: PgTargets) -> None:
    """A client that gets 'S' and never completes the TLS handshake is cut off at
    login_timeout (5 s here), but the app protocol's connection_lost is never called
    (asyncio's SSLProtocol skips it while still in DO_HANDSHAKE), so
    PgFrontEnd.unauthenticated is never decremented. Enough of these (max_startups)
    and every client is refused with 'too many connections are logging in'."""

    def in_progress() -> float:
        return pg.harness.gauge("pg_logins_in_progress")

    before = in_progress()
    socks = [_stall_after_ssl_request(pg) for _ in range(3)]
    assert in_progress() >= before + 3
    try:
        # our ends stay open: only the node's login timeout can free the slots
        wait_until(
            lambda: in_progress() <= before,
            20,
            "the stalled handshakes' login slots to be freed at login_timeout (5 s)",
        )
        for s in socks:
            wait_until(partial(_closed_by_peer, s), 10, "the node to close a stalled handshake")
    finally:
        for s in socks:
            s.close()


# --- text that is not UTF-8 (client_encoding is forwarded) ----------------------------------


def test_latin1_statement_is_recorded_and_session_survives(pg: PgTargets) -> None:
    """decoding.py decodes SQL with surrogateescape; query_payload passes those lone
    surrogates to the recorder, whose canonical_json(...).encode('utf-8') raises
    UnicodeEncodeError (a ValueError, not a RecordingWriteError). LiveRecording._guard
    does not catch it, it escapes connection.from_upstream into the upstream
    transport, which dies: the INSERT has run on the target but is never recorded."""
    who = _user(pg)
    token = pg.token(who)
    marker = f"caf\u00e9-{who.name}"
    lost: str | None = None
    try:
        with psycopg.connect(
            **pg.conninfo(who, password=token, client_encoding="latin1"), autocommit=True
        ) as conn:
            conn.execute(f"INSERT INTO items (name) VALUES ('{marker}')")  # noqa: S608  the test's own literal
            conn.execute("SELECT 'still-here'").fetchone()
    except psycopg.OperationalError as e:
        lost = str(e)
    rw = next(c for c in pg.harness.target("pg1").credsets if c.name == "readwrite")
    assert rw.password is not None
    with psycopg.connect(pg.server.dsn("app", rw.user, rw.password)) as direct:
        ran = direct.execute("SELECT count(*) FROM items WHERE name = %s", [marker]).fetchone()
    queries = pg.queries(pg.session_of(who))
    recorded = [q for q in queries if q.get("sql") and "INSERT INTO items" in q["sql"]]
    assert ran == (1,)  # the statement did run on the target
    assert recorded, f"the INSERT ran on the target but is not recorded ({lost=}): {queries}"
    assert lost is None, lost


# --- upstream TLS set-up failing outside the LoginFailed paths ------------------------------


def test_missing_target_ca_file_is_a_clean_refusal(pg: PgTargets) -> None:
    """upstream_tls_context() runs outside connect_upstream's try: a verify-full target
    whose CA file is gone raises FileNotFoundError out of log_in after the session row
    and recording were started. The client waits for the login timeout, the session
    row is never ended and its recording never closed."""
    from bastion.store.models import Credset, TargetKind

    h = pg.harness
    name = f"pgca{int(time.time() * 1000) % 100000}"
    h.store.add_target(
        name=name,
        kind=TargetKind.POSTGRES,
        host=pg.server.host,
        port=pg.server.port,
        logins=[],
        principal=name,
        database="app",
        credsets=[Credset("rw", "nobody", "x")],
        tls_mode="verify-full",
        tls_ca=str(h.dir / "no-such-ca.pem"),
        now=time.time(),
    )
    who = h.contractor("rv")
    pg.grant(who, name, "rw")
    token = pg.token(who, name)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(**pg.conninfo(who, password=token, dbname=name)).close()
    took = time.monotonic() - started
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not h.store.list_sessions(user=who.name, live=False):
        time.sleep(0.2)
    sessions = h.store.list_sessions(user=who.name)
    assert "login timed out" not in str(info.value), (took, str(info.value))
    assert all(s.ended_at is not None for s in sessions), "session row left open"


# --- fail closed: no recording, no database session ------------------------------------------


def test_unrecordable_database_session_is_refused(tmp_path: Path, pg_server: PgServer) -> None:
    """When the recording cannot be created the connection is refused before anything
    reaches the target, and both the failure and the refusal are audited."""
    from bastion.store.models import Credset, TargetKind
    from tests.peers.bastion_node import make_harness

    b = make_harness(tmp_path / "node")
    try:
        role, password = f"fc_{secrets.token_hex(3)}", secrets.token_urlsafe(9)
        pg_server.create_role(role, password)
        b.store.add_target(
            name="pgfc",
            kind=TargetKind.POSTGRES,
            host=pg_server.host,
            port=pg_server.port,
            logins=[],
            principal="pgfc",
            database="postgres",
            credsets=[Credset("rw", role, password)],
            now=time.time(),
        )
        targets = PgTargets(b, pg_server, role, role)
        who = b.contractor("db")
        targets.grant(who, "pgfc", "rw")
        token = targets.token(who, "pgfc")
        rec_dir = b.config.recordings_dir
        shutil.rmtree(rec_dir)
        rec_dir.write_text("not a directory")  # even root cannot create files below this
        with pytest.raises(psycopg.OperationalError, match="cannot be recorded"):
            psycopg.connect(**targets.conninfo(who, password=token, dbname="pgfc")).close()
        failed = b.wait_audit(who.name, "recording.failed")
        assert failed and failed[-1].details["fail_closed"] is True
        refused = b.wait_audit(who.name, "session.refused")
        assert refused[-1].details["reason"] == "recording-unavailable"
        assert not b.store.list_sessions(user=who.name)
        with psycopg.connect(pg_server.dsn()) as admin:
            seen = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [role]
            ).fetchone()
        assert seen == (0,)  # the bastion never logged in to the target
    finally:
        b.close()
