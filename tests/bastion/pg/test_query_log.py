"""Query payloads and the optional, masked result-row capture (pure, no sockets)."""

from __future__ import annotations

from bastion.pg.encoding import encode
from bastion.pg.messages import (
    CommandComplete,
    DataRow,
    FieldDescription,
    PortalSuspended,
    RowDescription,
    TransactionStatus,
)
from bastion.pg.protocol import BackendParser
from bastion.pg.query_event import ROWS_EVENT, QueryEvent
from bastion.pg.query_log import (
    QUERY_EVENT,
    MaskRules,
    RowCapture,
    query_payload,
    searchable_queries,
)
from bastion.pg.tracker import QueryRecord
from recorder.codec import structured_payload
from recorder.events import Event, JSONValue, Output, Structured


def _desc(*names: str, binary: int = -1) -> RowDescription:
    return RowDescription(
        [FieldDescription(n, format=1 if i == binary else 0) for i, n in enumerate(names)]
    )


def test_masked_columns_never_reach_the_payload() -> None:
    capture = RowCapture(2, MaskRules(("*password*", "ssn")))
    assert capture.backend(_desc("id", "User_Password", "SSN", "blob", binary=3)) is None
    for i in range(3):
        capture.backend(DataRow([str(i).encode(), b"hunter2", b"123-45", b"\x00\xff"]))
    payload = capture.backend(CommandComplete("SELECT 3"))
    assert payload is not None
    assert payload["rows"] == [
        ["0", "***", "***", {"hex": "00ff"}],
        ["1", "***", "***", {"hex": "00ff"}],
    ]
    assert payload["total"] == 3 and payload["truncated"] is True
    assert payload["masked"] == ["User_Password", "SSN"] and payload["tag"] == "SELECT 3"
    assert b"hunter2" not in repr(payload).encode()


def test_suspended_portal_continues_the_same_columns() -> None:
    capture = RowCapture(10, MaskRules())
    capture.backend(_desc("n"))
    capture.backend(DataRow([b"1"]))
    first = capture.backend(PortalSuspended())
    capture.backend(DataRow([b"2"]))
    second = capture.backend(CommandComplete("FETCH 1"))
    assert first is not None and second is not None
    assert first["rows"] == [["1"]] and second["rows"] == [["2"]] and second["columns"] == ["n"]


def test_query_payload_shape() -> None:
    rec = QueryRecord(
        kind="extended",
        sql="SELECT $1",
        params=("x", b"\x01\x02", None),
        tag="SELECT 1",
        tags=("SELECT 1",),
        rows=1,
        started_at=1.5,
        finished_at=1.5025,
        tx_status=TransactionStatus.IN_TRANSACTION,
    )
    p = query_payload(7, rec)
    assert p["seq"] == 7 and p["params"] == ["x", {"hex": "0102"}, None]
    assert p["tx"] == "in-transaction" and p["duration_ms"] == 2.5 and p["error"] is None
    events: list[Event] = [Structured(2.0, QUERY_EVENT, p), Output(3.0, b"x")]
    assert searchable_queries(events, 1000.0) == [(1001.5, "SELECT $1")]


def test_rows_can_be_counted_without_decoding() -> None:
    parser = BackendParser(decode_rows=False)
    parser.receive_data(encode(DataRow([b"a" * 100])) + encode(CommandComplete("SELECT 1")))
    row = parser.next_event()
    assert isinstance(row, DataRow) and row.values == ()
    assert parser.next_event() == CommandComplete("SELECT 1")


def test_shared_common_messages_equal_their_decoding() -> None:
    """The parsers' pre-decoded common messages are exactly what decoding gives."""
    from bastion.pg import protocol
    from bastion.pg.decoding import decode_backend, decode_frontend

    for table, decode in (
        (protocol._COMMON_FRONTEND, decode_frontend),
        (protocol._COMMON_BACKEND, decode_backend),
    ):
        for type_byte, bodies in table.items():
            for body, msg in bodies.items():
                assert decode(type_byte, body) == msg


def test_query_event_view_keeps_the_recorded_payload() -> None:
    rec = QueryRecord(
        kind="simple",
        sql="SELEC 1",
        tag=None,
        started_at=4.25,
        finished_at=4.5,
        error_sqlstate="42601",
        error_message="syntax error",
    )
    p = query_payload(3, rec)
    q = QueryEvent.from_event(Structured(4.6, QUERY_EVENT, p))
    assert q is not None
    assert (q.seq, q.kind, q.sql, q.start, q.duration_ms) == (3, "simple", "SELEC 1", 4.25, 250.0)
    assert (q.error_sqlstate, q.error_message) == ("42601", "syntax error")
    assert (q.tag, q.rows) == (None, None)
    # the recording is a contract: the view hands on exactly what was recorded
    assert q.to_payload() == p
    assert structured_payload(QUERY_EVENT, q.to_payload()) == structured_payload(QUERY_EVENT, p)
    assert ROWS_EVENT == "pg.rows" and QUERY_EVENT == "pg.query"  # names on disk


def test_query_event_view_of_odd_payloads() -> None:
    assert QueryEvent.from_event(Structured(1.0, ROWS_EVENT, {"rows": []})) is None
    assert QueryEvent.from_event(Output(1.0, b"x")) is None
    assert QueryEvent.from_payload([1, 2]) is None
    odd: dict[str, JSONValue] = {
        "sql": 5,
        "seq": True,
        "start": "soon",
        "error": "boom",
        "future": [1],
    }
    q = QueryEvent.from_payload(odd, 2.5)
    assert q is not None and (q.sql, q.seq, q.start, q.error_sqlstate) == (None, None, 2.5, None)
    assert q.to_payload() == {**odd, "start": 2.5}  # unknown fields kept, a time filled in
    twice = [Structured(t, QUERY_EVENT, {"sql": " SELECT 1 "}) for t in (1.0, 2.0)]
    assert searchable_queries(twice, 100.0) == [(101.0, "SELECT 1")]  # once, at its first run
