"""Review of the relay scanners (session 3): regressions against the general parsers.

1. Buffering a large message must stay linear in its size. ``_Scanner._start``
   rebuilt ``tail + data`` on every feed, so a message arriving in N pieces cost
   O(N^2) copying; one large legal message (a client's 48 MiB COPY row, a
   target's 48 MiB DataRow from ``SELECT repeat(...)``) then stalled the node's
   single event loop for every session (48 MiB in 16 KiB reads: over 3 s for
   the first 14 MiB, against 0.26 s for the general parsers).

2. After a ProtocolViolation ``buffered`` must not claim a message boundary the
   client has not reached: ``_fail`` empties the tail, so when the target's bad
   header started in an earlier read (already forwarded to the client),
   ``ClientConnection._inject`` sees ``buffered == 0`` and writes the bastion's
   own ErrorResponse into the middle of that server message. ``BackendParser``
   keeps its buffer on failure.

Both were found by an independent review and fixed in ``relay_scan``.
"""

from __future__ import annotations

import struct

import pytest

from bastion.pg import messages as m
from bastion.pg.protocol import BackendParser, ProtocolViolation, encode
from bastion.pg.relay_scan import ClientScanner, ServerScanner
from bastion.pg.tracker import QueryRecord, QueryTracker

MIB = 1024 * 1024
SIZE = 8 * MIB  # well under both limits (64 MiB client, 1 GiB server)
CHUNK = 16 * 1024  # one TLS record; a trickling client can make reads smaller still


def _clock() -> float:
    return 0.0


def _ignore(_records: list[QueryRecord]) -> None:
    pass


def _splits_while_feeding(scanner: ClientScanner | ServerScanner, wire: bytes) -> int:
    """Feed ``wire`` in CHUNK pieces; how many times the scanner split its buffer.

    Splitting (and the copy of the buffer it implies) once per read is what made a
    large message quadratic; a linear scanner appends the pieces and splits the
    whole message once, plus once for the read that brought its header.
    """
    calls = 0
    split = scanner._split

    def counted(buf: bytes, runs: frozenset[int] = frozenset()) -> list[tuple[int, int, int]]:
        nonlocal calls
        calls += 1
        return split(buf, runs)

    scanner._split = counted  # type: ignore[method-assign]
    view = memoryview(wire)
    for i in range(0, len(wire), CHUNK):
        scanner.feed(bytes(view[i : i + CHUNK]))
    return calls


def _copy_row(size: int) -> bytes:
    return b"d" + struct.pack("!i", size + 4) + bytes(size)


def _data_row(size: int) -> bytes:
    return b"D" + struct.pack("!ihi", size + 10, 1, size) + bytes(size)


def test_client_scanner_buffers_a_large_copy_row_in_linear_time() -> None:
    scanner = ClientScanner(QueryTracker(_clock), 64 * MIB)
    assert _splits_while_feeding(scanner, _copy_row(SIZE)) <= 2
    assert scanner.buffered == 0


def test_server_scanner_buffers_a_large_data_row_in_linear_time() -> None:
    scanner = ServerScanner(QueryTracker(_clock), 1024 * MIB, _ignore)
    assert _splits_while_feeding(scanner, _data_row(SIZE)) <= 2
    assert scanner.buffered == 0


def test_failed_server_scan_does_not_report_a_boundary_inside_a_forwarded_message() -> None:
    """The first bytes of the bad header were forwarded with the previous read."""
    ready = encode(m.ReadyForQuery(m.TransactionStatus.IDLE))
    first = ready + b"D\x7f"  # relayed to the client: it now waits for the rest of 'D'
    rest = b"\xff\xff\xff"  # a 2 GiB DataRow: over the limit

    reference = BackendParser(decode_rows=False)
    reference.receive_data(first)
    assert isinstance(reference.next_event(), m.ReadyForQuery)
    reference.next_event()
    reference.receive_data(rest)
    with pytest.raises(ProtocolViolation):
        reference.next_event()
    assert reference.buffered > 0  # the old relay: no boundary, nothing injected

    scanner = ServerScanner(QueryTracker(_clock), 1024 * MIB, _ignore)
    scanner.feed(first)
    assert scanner.buffered == 2
    with pytest.raises(ProtocolViolation):
        scanner.feed(rest)
    # connection._inject writes its ErrorResponse at once when buffered == 0: here it
    # would land after the client's "D\x7f", inside the target's message.
    assert scanner.buffered > 0
