"""The relay's fused scanners against the general parsers + tracker (differential).

``relay_scan`` decodes the frequent messages itself for speed; these tests
feed the same conversations, valid and byte-mutated, whole and in random
pieces, to the scanners and to ``FrontendParser``/``BackendParser`` followed
by ``QueryTracker.frontend``/``backend``, and require the same query records,
the same row captures, and a ProtocolViolation exactly when the parsers raise one.

With guardrails the client's bytes are framed by ``StatementGate`` and the
scanner takes its frames (``ClientScanner.scan``): that path (``_gated``) must
give the same outcome too, with statements passed at once or after a judgment.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.pg import messages as m
from bastion.pg.guard import StatementGate
from bastion.pg.protocol import BackendParser, ProtocolViolation, Sentinel, encode
from bastion.pg.query_log import MaskRules, RowCapture
from bastion.pg.relay_scan import ClientScanner, ServerScanner
from bastion.pg.tracker import QueryRecord, QueryTracker
from tests.bastion.pg.strategies import backend_messages, ready_frontend, ready_messages
from tests.fuzzing import apply_mutations, byte_mutations

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Step = tuple[bool, bytes]  # (from the client?, wire bytes)

client_messages = st.one_of(ready_messages, st.just(m.Terminate()))
steps = st.lists(
    st.one_of(
        st.tuples(st.just(True), st.lists(client_messages, min_size=1, max_size=6)),
        st.tuples(st.just(False), st.lists(backend_messages, min_size=1, max_size=8)),
    ),
    max_size=8,
)


def _wire(conversation: list[tuple[bool, list[Any]]]) -> list[Step]:
    return [(client, b"".join(encode(msg) for msg in msgs)) for client, msgs in conversation]


def _nonempty(wire: list[Step]) -> list[Step]:
    return [(client, data) for client, data in wire if data]  # b"" would mean EOF


@dataclass
class Outcome:
    records: list[QueryRecord] = field(default_factory=list)
    rows: list[object] = field(default_factory=list)
    failed: str | None = None  # which side raised ProtocolViolation
    state: tuple[object, ...] = ()  # the tracker's counters at the end

    def end(self, tracker: QueryTracker) -> Outcome:
        self.state = (tracker.unmatched, tracker.in_flight, tracker.tx_status)
        return self


def _clock() -> float:
    return 1.0


def _reference(conversation: list[Step], capture: bool) -> Outcome:
    out = Outcome()
    tracker = QueryTracker(_clock)
    front = ready_frontend()
    back = BackendParser(decode_rows=capture)
    rows = RowCapture(3, MaskRules(("secret*",))) if capture else None
    for client, data in conversation:
        parser = front if client else back
        parser.receive_data(data)
        try:
            while not isinstance(msg := parser.next_event(), Sentinel):
                if client:
                    tracker.frontend(msg)
                    continue
                out.records += tracker.backend(msg)
                if rows is not None and (payload := rows.backend(msg)) is not None:
                    out.rows.append(payload)
        except ProtocolViolation:
            out.failed = "client" if client else "server"
            return out.end(tracker)
    return out.end(tracker)


def _scanned(conversation: list[Step], capture: bool, pieces: list[int]) -> Outcome:
    out = Outcome()
    tracker = QueryTracker(_clock)
    rows = RowCapture(3, MaskRules(("secret*",))) if capture else None
    client_scan = ClientScanner(tracker, 64 * 1024 * 1024)
    server_scan = ServerScanner(tracker, 1 << 30, out.records.extend, rows, out.rows.append)
    cut = iter(pieces * 1000)
    for client, data in conversation:
        scanner = client_scan if client else server_scan
        pos = 0
        try:
            while pos < len(data):
                size = next(cut, len(data))
                scanner.feed(data[pos : pos + size])
                pos += size
        except ProtocolViolation:
            out.failed = "client" if client else "server"
            return out.end(tracker)
    return out.end(tracker)


def _gated(conversation: list[Step], capture: bool, pieces: list[int], judged: int) -> Outcome:
    """As ``_scanned``, the client's side through the guardrails' gate: every ``judged``-th
    statement (0: none) is not known and waits for a judgment that allows it."""
    out = Outcome()
    tracker = QueryTracker(_clock)
    rows = RowCapture(3, MaskRules(("secret*",))) if capture else None
    client_scan = ClientScanner(tracker, 64 * 1024 * 1024)
    gate = StatementGate(64 * 1024 * 1024)
    server_scan = ServerScanner(tracker, 1 << 30, out.records.extend, rows, out.rows.append)
    asked = 0

    def allowed(_sql: str) -> bool:
        nonlocal asked
        asked += 1
        return judged == 0 or asked % judged != 0

    cut = iter(pieces * 1000)
    for client, data in conversation:
        pos = 0
        try:
            while pos < len(data):
                size = next(cut, len(data))
                chunk = data[pos : pos + size]
                pos += size
                if not client:
                    server_scan.feed(chunk)
                    continue
                passed, pending = gate.feed(chunk, allowed)
                while True:
                    for buf, frames, _ in passed:
                        client_scan.scan(buf, frames)
                    if pending is None:
                        break
                    piece, _ = gate.decided(None)  # judged: allowed as it is
                    client_scan.scan(piece[0], piece[1])
                    passed, pending = gate.pump(allowed)
                if client_scan.terminated and gate.buffered:
                    # the start of a message after Terminate: the gate holds it, the relay
                    # has ended the session at Terminate (``feed`` alone raises here)
                    raise ProtocolViolation("client sent data after the end of its conversation")
        except ProtocolViolation:
            out.failed = "client" if client else "server"
            return out.end(tracker)
    return out.end(tracker)


@fuzz
@given(steps, st.booleans(), st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_scanners_match_parsers_and_tracker(
    conversation: list[tuple[bool, list[Any]]], capture: bool, pieces: list[int]
) -> None:
    wire = _wire(conversation)
    expected = _reference(wire, capture)
    assert _scanned(wire, capture, [1 << 30]) == expected
    assert _scanned(wire, capture, pieces) == expected
    assert _gated(wire, capture, [1 << 30], 0) == expected
    assert _gated(wire, capture, pieces, 2) == expected


@fuzz
@given(steps, byte_mutations(max_run=8), st.booleans(), st.integers(0, 7))
def test_mutated_streams_are_refused_exactly_when_the_parsers_refuse_them(
    conversation: list[tuple[bool, list[Any]]],
    mutations: Any,
    capture: bool,
    which: int,
) -> None:
    wire = _wire(conversation)
    if not wire:
        return
    i = which % len(wire)
    client, data = wire[i]
    wire[i] = (client, apply_mutations(data, mutations, max_insert=16))
    wire = _nonempty(wire)
    expected = _reference(wire, capture)
    assert _scanned(wire, capture, [1 << 30]) == expected
    assert _scanned(wire, capture, [3, 7, 1]) == expected
    assert _gated(wire, capture, [1 << 30], 3) == expected
    assert _gated(wire, capture, [3, 7, 1], 0) == expected


@fuzz
@given(st.data(), steps, st.booleans())
def test_messages_with_mutated_bodies_and_valid_frames_match(
    data: st.DataObject, conversation: list[tuple[bool, list[Any]]], capture: bool
) -> None:
    """Bodies mutated inside a correct frame reach every field decoder, not just framing."""
    wire: list[Step] = []
    for client, msgs in conversation:
        framed = b""
        for msg in msgs:
            raw = encode(msg)
            body = raw[5:]
            if data.draw(st.booleans()):
                body = apply_mutations(body, data.draw(byte_mutations(max_run=4)), max_insert=6)
            framed += raw[:1] + struct.pack("!i", len(body) + 4) + body
        wire.append((client, framed))
    expected = _reference(wire, capture)
    assert _scanned(wire, capture, [1 << 30]) == expected
    assert _gated(wire, capture, [1 << 30], 2) == expected


def test_a_pgbench_extended_round_trip_gives_one_record_with_its_parameter() -> None:
    tracker = QueryTracker(_clock)
    records: list[QueryRecord] = []
    client, server = (
        ClientScanner(tracker, 1 << 20),
        ServerScanner(tracker, 1 << 20, records.extend),
    )
    sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
    client.feed(
        b"".join(
            encode(msg)
            for msg in (
                m.Parse("", sql, ()),
                m.Bind("", "", (0,), (b"42",), (0,)),
                m.Describe("P", ""),
                m.Execute("", 0),
                m.Sync(),
            )
        )
    )
    reply = b"".join(
        encode(msg)
        for msg in (
            m.ParseComplete(),
            m.BindComplete(),
            m.RowDescription([m.FieldDescription("abalance", 1, 2, 23, 4, -1, 0)]),
            m.DataRow([b"0"]),
            m.CommandComplete("SELECT 1"),
            m.ReadyForQuery(m.TransactionStatus.IDLE),
        )
    )
    server.feed(reply[:-3])
    assert records == [] and server.buffered == 3  # inside ReadyForQuery: not a boundary
    server.feed(reply[-3:])
    assert server.buffered == 0
    [rec] = records
    assert (rec.kind, rec.sql, rec.params, rec.tag, rec.rows) == (
        "extended",
        sql,
        ("42",),
        "SELECT 1",
        1,
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"Q\x7f\xff\xff\xffSELECT", "exceeds the limit"),
        (b"S\x00\x00\x00\x05x", "invalid length"),
        (b"?\x00\x00\x00\x04", "invalid frontend message type"),
        (encode(m.Terminate()) + encode(m.Sync()), "after the end of its conversation"),
    ],
)
def test_client_scanner_refuses_before_buffering_and_stays_failed(
    data: bytes, problem: str
) -> None:
    scanner = ClientScanner(QueryTracker(_clock), 1 << 20)
    with pytest.raises(ProtocolViolation, match=problem):
        scanner.feed(data)
    with pytest.raises(ProtocolViolation, match="already failed"):
        scanner.feed(encode(m.Sync()))


@fuzz
@given(
    st.sampled_from(["rows", "copy"]),
    st.integers(2, 300),
    st.integers(0, 299),
    st.sampled_from(["none", "length", "huge", "type", "truncate"]),
    st.lists(st.integers(1, 700), min_size=1, max_size=5),
)
def test_long_runs_of_rows_match_with_a_fault_anywhere_in_them(
    kind: str, count: int, at: int, fault: str, pieces: list[int]
) -> None:
    """A result's rows and a COPY's lines are skipped in a loop of their own: a run cut
    by a bad length, a frame of another type or the end of the data mid-run gives the
    same records and the same refusal as the parsers."""
    row = m.DataRow([b"42", None]) if kind == "rows" else m.CopyData(b"42\tline\n")
    head: list[Any] = [m.RowDescription([m.FieldDescription("a"), m.FieldDescription("b")])]
    if kind == "copy":
        head = [m.CopyOutResponse(0, [0, 0])]
    tail: list[Any] = [m.CommandComplete(f"{'SELECT' if kind == 'rows' else 'COPY'} {count}")]
    if kind == "copy":
        tail.insert(0, m.CopyDone())
    tail.append(m.ReadyForQuery(m.TransactionStatus.IDLE))
    frames = [bytearray(encode(row)) for _ in range(count)]
    target = frames[at % count]
    if fault == "length":
        struct.pack_into("!i", target, 1, 3)  # shorter than a header allows
    elif fault == "huge":
        struct.pack_into("!i", target, 1, 1 << 30)
    elif fault == "type":
        target[0] = ord("n")  # NoData in the middle of the rows
    server = (
        b"".join(encode(x) for x in head) + b"".join(frames) + b"".join(encode(x) for x in tail)
    )
    if fault == "truncate":
        server = server[: len(server) - len(encode(tail[-1])) - 3]
    query = "SELECT a, b FROM t" if kind == "rows" else "COPY t TO STDOUT"
    wire = [(True, encode(m.Query(query))), (False, server)]
    expected = _reference(wire, False)
    assert _scanned(wire, False, [1 << 30]) == expected
    assert _scanned(wire, False, pieces) == expected
    if fault in ("length", "type"):  # refused at that very frame, for that reason
        scanner = ServerScanner(QueryTracker(_clock), 1 << 30, lambda _records: None)
        with pytest.raises(ProtocolViolation) as refused:
            scanner.feed(server)
        parser = BackendParser()
        parser.receive_data(server)
        with pytest.raises(ProtocolViolation) as reference:
            while not isinstance(parser.next_event(), Sentinel):
                pass
        assert refused.value.message == reference.value.message
