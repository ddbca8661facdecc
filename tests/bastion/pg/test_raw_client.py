"""Our own encoder as the client: a real server must understand every message we build.

libpq-based clients never send some messages (FunctionCall, Describe of a
statement, Close, CopyFail in extended mode, row-limited Execute) nor provoke
some answers (NotificationResponse, NegotiateProtocolVersion, an error at the
implicit COMMIT of Sync). This hand-driven client does, through the recording
relay, so the parsers and the tracker meet them from a real PostgreSQL too.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.pg import messages as m
from bastion.pg.protocol import BackendParser, encode
from tests.bastion.pg.relay import Relay, analyse
from tests.peers.postgres import PgServer

pytestmark = pytest.mark.integration

IDLE, IN_TX, FAILED = m.TransactionStatus
INT4 = 23


class RawClient:
    """A blocking client built from ``encode`` and ``BackendParser``."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.parser = BackendParser()

    def send(self, *msgs: Any) -> None:
        for msg in msgs:
            self.parser.frontend_sent(msg)
        self.sock.sendall(b"".join(encode(x) for x in msgs))

    def until(self, cls: type[Any] = m.ReadyForQuery) -> list[Any]:
        """Every server message up to and including the first of type ``cls``."""
        out: list[Any] = []
        while True:
            for event in self.parser.events():
                out.append(event)
                if isinstance(event, cls):
                    return out
            data = self.sock.recv(65536)
            assert data, f"server closed; got {out}"
            self.parser.receive_data(data)

    def close(self) -> None:
        self.send(m.Terminate())
        self.sock.close()


@pytest.fixture
def client(pg_server: PgServer, pg_url: str) -> Iterator[tuple[RawClient, Relay]]:
    dbname = pg_url.rsplit("/", 1)[1]
    with Relay(pg_server.host, pg_server.port) as relay:
        c = RawClient(relay.port)
        c.send(m.SSLRequest())
        assert c.until(m.SSLResponse) == [m.SSLResponse(False)]
        c.send(
            m.StartupMessage(
                {"user": "postgres", "database": dbname, "_pq_.no_such_option": "1"},
                m.PROTOCOL_3_0 | 7,
            )
        )
        greeting = c.until()
        assert m.NegotiateProtocolVersion(m.PROTOCOL_3_0, ["_pq_.no_such_option"]) in greeting
        assert greeting[-1] == m.ReadyForQuery(IDLE)
        try:
            yield c, relay
        finally:
            c.sock.close()


def test_messages_libpq_never_sends(client: tuple[RawClient, Relay]) -> None:
    c, relay = client
    c.send(
        m.Query(
            "CREATE TABLE p (id int PRIMARY KEY);"
            "CREATE TABLE ch (p int REFERENCES p DEFERRABLE INITIALLY DEFERRED);"
            "LISTEN chan; NOTIFY chan, 'hello';"
            "DO $$ BEGIN RAISE NOTICE 'just so you know'; END $$"
        )
    )
    answers = c.until()
    assert any(isinstance(x, m.NoticeResponse) and x.message == "just so you know" for x in answers)
    assert any(isinstance(x, m.NotificationResponse) and x.payload == "hello" for x in answers)

    c.send(
        m.Parse("s", "SELECT generate_series(1, $1)", [INT4]),
        m.Describe("S", "s"),
        m.Bind("c", "s", [1], [b"\x00\x00\x00\x05"]),
        m.Execute("c", 2),
        m.Execute("c", 2),
        m.Execute("c", 2),
        m.Close("S", "s"),
        m.Sync(),
    )
    answers = c.until()
    assert m.ParameterDescription([INT4]) in answers
    assert answers.count(m.PortalSuspended()) == 2 and m.CloseComplete() in answers

    c.send(m.FunctionCall(177, [1], [b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"], 1))  # int4pl
    assert c.until()[0] == m.FunctionCallResponse(b"\x00\x00\x00\x03")

    c.send(m.Query(""))
    assert c.until()[0] == m.EmptyQueryResponse()

    # an orphan row is only refused at the implicit COMMIT that Sync performs
    c.send(m.Parse("", "INSERT INTO ch VALUES (42)"), m.Bind("", ""), m.Execute(""), m.Sync())
    answers = c.until()
    assert isinstance(answers[-2], m.ErrorResponse) and answers[-2].sqlstate == "23503"

    c.send(m.Parse("", "COPY p FROM STDIN"), m.Bind("", ""), m.Execute(""), m.Flush())
    assert isinstance(c.until(m.CopyInResponse)[-1], m.CopyInResponse)
    c.send(m.CopyData(b"1\n2\n"), m.CopyFail("changed my mind"), m.Sync())
    answers = c.until()
    assert [type(x) for x in answers] == [m.ErrorResponse, m.ReadyForQuery]

    c.send(m.Query("COPY p FROM STDIN"))
    c.until(m.CopyInResponse)
    c.send(m.CopyData(b"1\n"), m.CopyData(b"2\n3\n"), m.CopyDone())
    assert m.CommandComplete("COPY 3") in c.until()
    c.close()

    an = analyse(relay.connections[0].wait_closed())
    assert an.unmatched == 0
    assert an.frontend_parser.startup is not None
    assert an.frontend_parser.startup.minor == 7
    series = [r for r in an.records if r.sql == "SELECT generate_series(1, $1)"]
    assert [(r.params, r.rows, r.suspended, r.tag) for r in series] == [
        (("5",), 2, True, None),
        (("5",), 2, True, None),
        (("5",), 1, False, "SELECT 1"),
    ]
    (call,) = [r for r in an.records if r.kind == "function"]
    assert (call.function_oid, call.params) == (177, (b"\0\0\0\x01", b"\0\0\0\x02"))  # untyped
    commit = [r for r in an.records if r.error_sqlstate == "23503"]
    assert [(r.kind, r.sql) for r in commit] == [("extended", None)]
    inserted = an.record("INSERT INTO ch VALUES (42)")
    assert (inserted.tag, inserted.tx_status) == ("INSERT 0 1", IDLE)
    failed, copied = [r for r in an.records if r.sql == "COPY p FROM STDIN"]
    assert (failed.kind, failed.error_sqlstate, failed.copy_bytes) == ("copy", "57014", 4)
    assert (copied.kind, copied.rows, copied.copy_messages, copied.copy_bytes) == ("copy", 3, 2, 6)


def test_gssenc_answer_from_a_real_server(pg_server: PgServer) -> None:
    """Debian's server is built with GSSAPI and answers 'G' (we would refuse GSS ourselves)."""
    c = RawClient(pg_server.port)
    try:
        c.send(m.GSSENCRequest())
        (answer,) = c.until(m.GSSENCResponse)
        assert isinstance(answer, m.GSSENCResponse)
    finally:
        c.sock.close()
