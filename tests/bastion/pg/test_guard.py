"""The relay's statement gate and error swap, sans-IO: framing, holding, replacing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bastion.pg.decoding import decode_backend, decode_frontend
from bastion.pg.encoding import encode
from bastion.pg.errors import ProtocolViolation
from bastion.pg.guard import (
    DENIED_MARK,
    ErrorSwap,
    Piece,
    StatementGate,
    denial_error,
    replacement,
)
from bastion.pg.messages import (
    Bind,
    ErrorResponse,
    Execute,
    Parse,
    Query,
    ReadyForQuery,
    Sync,
    TransactionStatus,
)
from bastion.pg.relay_scan import BAD, ClientScanner
from bastion.pg.tracker import QueryTracker

TOKEN = "ab" * 16
Q = ord("Q")


def _allow_all(sql: str) -> bool:
    return True


def _known(*texts: str) -> Callable[[str], bool]:
    return lambda sql: sql in texts


def _sent(pieces: list[Piece]) -> bytes:
    return b"".join(up for _, _, up in pieces)


def _scanned(piece: Piece) -> bytes:
    """The messages of a piece as the scanner sees them (headers included)."""
    buf, frames, _ = piece
    return b"".join(buf[start - 5 : end] for _, start, end in frames)


def test_allowed_messages_pass_whole_and_unchanged() -> None:
    gate = StatementGate(1 << 20)
    data = encode(Query("select 1")) + encode(Query("select 2"))
    pieces, pending = gate.feed(data, _allow_all)
    assert pending is None and pieces == [(data, [(Q, 5, 14), (Q, 19, 28)], data)]
    assert pieces[0][0] is data and pieces[0][2] is data  # no copy
    assert gate.syncs == 2


def test_an_incomplete_message_is_never_forwarded() -> None:
    gate = StatementGate(1 << 20)
    q = encode(Query("drop table t"))
    pieces, pending = gate.feed(q[:7], _allow_all)
    assert pieces == [] and pending is None
    pieces, pending = gate.feed(q[7:], _allow_all)
    assert _sent(pieces) == q


def test_a_statement_to_judge_holds_everything_after_it() -> None:
    gate = StatementGate(1 << 20)
    first, fresh, last = (encode(Query(s)) for s in ("select 1", "drop table t", "select 2"))
    pieces, pending = gate.feed(first + fresh + last, _known("select 1", "select 2"))
    assert _sent(pieces) == first
    assert pending is not None and pending.sql == "drop table t" and pending.frame == fresh
    assert gate.feed(b"more", _allow_all) == ([], None)  # queued while judging
    piece, ready = gate.decided(TOKEN)
    assert _scanned(piece) == fresh and piece[2] == replacement(Q, "", TOKEN) and ready == 2
    pieces, pending = gate.pump(_known("select 2"))
    assert _sent(pieces) == last and pending is None


def test_a_denied_parse_drops_its_segment_up_to_sync() -> None:
    gate = StatementGate(1 << 20)
    ok = encode(Parse("", "select $1", ())) + encode(Bind("", "", (), (b"1",), ()))
    ok += encode(Execute("", 0))
    bad = encode(Parse("s1", "delete from t", ()))
    rest = encode(Bind("", "s1", (), (), ())) + encode(Execute("", 0))
    sync, after = encode(Sync()), encode(Query("select 3"))
    pieces, pending = gate.feed(ok + bad + rest + sync + after, _known("select $1", "select 3"))
    assert _sent(pieces) == ok and pending is not None and pending.name == "s1"
    piece, ready = gate.decided(TOKEN)
    assert _scanned(piece) == bad and ready == 1  # its segment ends at the coming Sync
    sent = piece[2]
    message = decode_frontend(sent[0], sent[5:])
    assert isinstance(message, Parse) and message.name == "s1"
    assert DENIED_MARK.decode() + TOKEN in message.query
    pieces, pending = gate.pump(_known("select $1", "select 3"))
    assert _sent(pieces) == sync + after and gate.syncs == 2 and not gate.discarding


def _error(message: str) -> bytes:
    return encode(ErrorResponse({"S": "ERROR", "C": "42703", "M": message}))


def test_the_swap_replaces_only_its_token_error() -> None:
    swap = ErrorSwap(1 << 20)
    ours = denial_error("bastion: statement denied by rule 'x'", "detail")
    swap.expect(b"", 0, TOKEN, ours, 1)
    other = _error('column "nope" does not exist')
    target = _error(f'column "{DENIED_MARK.decode()}{TOKEN}" does not exist')
    ready = encode(ReadyForQuery(TransactionStatus.FAILED))
    stream = other + target + ready
    out = swap.feed(stream[:9]) + swap.feed(stream[9:])
    assert out == other + ours + ready and not swap.active
    decoded = decode_backend(ours[0], ours[5:])
    assert isinstance(decoded, ErrorResponse) and decoded.fields["C"] == "42501"


def test_the_swap_forgets_a_token_at_its_ready_for_query() -> None:
    swap = ErrorSwap(1 << 20)
    swap.expect(b"", 3, TOKEN, b"ours", 5)
    aborted = _error("current transaction is aborted")  # 25P02: the text was never looked at
    ready = encode(ReadyForQuery(TransactionStatus.FAILED))
    assert swap.feed(ready) == ready and swap.active  # the 4th: not yet its segment
    assert swap.feed(aborted + ready) == aborted + ready and not swap.active


def test_the_swap_starts_inside_a_message_already_relayed() -> None:
    swap = ErrorSwap(1 << 20)
    row = encode(ReadyForQuery(TransactionStatus.IDLE))
    swap.expect(row[:3], 0, TOKEN, b"ours", 2)
    target = _error(f'column "{DENIED_MARK.decode()}{TOKEN}" does not exist')
    assert swap.feed(row[3:] + target) == row[3:] + b"ours"


def test_a_large_message_in_many_reads_goes_once_whole() -> None:
    gate = StatementGate(1 << 20)
    big = encode(Query("select '" + "x" * 200_000 + "'"))
    sent: list[bytes] = []
    for i in range(0, len(big), 4096):
        pieces, pending = gate.feed(big[i : i + 4096], _allow_all)
        assert pending is None
        sent.extend(up for _, _, up in pieces)
    assert sent == [big]


def test_a_header_beyond_the_limit_goes_to_the_scanner_at_once() -> None:
    gate = StatementGate(100)
    huge = b"Q" + (10_000).to_bytes(4, "big") + b"select"
    pieces, pending = gate.feed(huge, _allow_all)
    assert pending is None and _sent(pieces) == huge
    [(buf, frames, _)] = pieces
    assert frames == [(Q | BAD, 10_000, 0)]  # the scanner refuses it by name
    scanner = ClientScanner(QueryTracker(lambda: 0.0), 100)
    with pytest.raises(ProtocolViolation, match="exceeds the limit of 100"):
        scanner.scan(buf, frames)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"?\x00\x00\x00\x10", "invalid frontend message type '?'"),
        (b"S\x00\x00\x00\x05", "invalid length 5 of frontend message 'S'"),
    ],
)
def test_a_header_the_scanner_refuses_is_refused_before_its_body(
    header: bytes, problem: str
) -> None:
    """The gate frames with the scanner's bounds: it does not wait for a body the scanner
    will refuse (the gate once buffered an unknown type's whole body first)."""
    gate = StatementGate(1 << 20)
    ok = encode(Query("select 1"))
    pieces, pending = gate.feed(ok + header, _allow_all)
    assert pending is None and gate.buffered == 0
    [(buf, frames, sent)] = pieces
    assert sent == ok + header and frames[-1][0] & BAD
    tracker = QueryTracker(lambda: 0.0)
    scanner = ClientScanner(tracker, 1 << 20)
    with pytest.raises(ProtocolViolation) as scanned:
        scanner.scan(buf, frames)
    assert scanned.value.message == problem and tracker.in_flight == 1  # select 1 was tracked
    reference = ClientScanner(QueryTracker(lambda: 0.0), 1 << 20)
    with pytest.raises(ProtocolViolation) as fed:
        reference.feed(ok + header)
    assert fed.value.message == scanned.value.message
    with pytest.raises(ProtocolViolation, match="already failed"):
        scanner.scan(ok, [(Q, 5, len(ok))])
