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
from bastion.pg.query_log import MaskRules, RowCapture, query_payload, searchable_queries
from bastion.pg.tracker import QueryRecord
from recorder.events import Output, Structured


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
    events = [Structured(2.0, "pg.query", p), Output(3.0, b"x")]
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
