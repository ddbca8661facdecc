"""The PostgreSQL relay's Python work per transaction, stage by stage, without sockets.

``bench/pg_profile.py`` measures the node's CPU per pgbench transaction; this
script replays the bytes of one ``pgbench -S`` transaction (simple: Query;
extended: Parse/Bind/Describe/Execute/Sync; prepared: Bind/Execute/Sync) through
the relay's sans-IO stages and times each cumulatively: the guardrail gate, the
scanners with the tracker, the ``pg.query`` payload, and the recording writer
(JSON, record encoding). The difference between the node's CPU per transaction
and this is the event loop, TLS and the kernel.

``--cold MIB`` streams that many MiB through the caches between two
transactions (what pgbench, the backends and other jobs do to a shared machine
between two of the node's reads) and times only the relay's stages, so the
figure is the same code with cold caches.

Run from the repository root::

    PYTHONPATH=. python bench/pg_hotpath.py [--n 5000] [--repeat 7] [--cold 16]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.pg.encoding import encode
from bastion.pg.guard import StatementGate
from bastion.pg.messages import (
    Bind,
    BindComplete,
    CommandComplete,
    DataRow,
    Describe,
    Execute,
    Parse,
    ParseComplete,
    Query,
    ReadyForQuery,
    RowDescription,
    Sync,
    TransactionStatus,
)
from bastion.pg.query_log import QueryLog, query_json, query_payload
from bastion.pg.relay_scan import ClientScanner, ServerScanner
from bastion.pg.tracker import QueryRecord, QueryTracker
from recorder.writer import RecordingWriter

SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"


def streams(mode: str) -> tuple[bytes, bytes, bytes]:
    """(client bytes of the first transaction, of every later one, server bytes)."""
    from bastion.pg.messages import FieldDescription

    desc = RowDescription([FieldDescription("abalance", 16400, 3, 23, 4)])
    rows = [encode(DataRow([b"0"])), encode(CommandComplete("SELECT 1"))]
    ready = encode(ReadyForQuery(TransactionStatus.IDLE))
    if mode == "simple":
        q = encode(Query(SQL.replace("$1", "12345")))
        return q, q, encode(desc) + b"".join(rows) + ready
    bind = encode(Bind("", "P_0" if mode == "prepared" else "", [0], [b"12345"], [0]))
    tail = encode(Execute("", 0)) + encode(Sync())
    parse = encode(Parse("P_0" if mode == "prepared" else "", SQL, [0]))
    server = encode(ParseComplete()) + encode(BindComplete()) + encode(desc) + b"".join(rows)
    if mode == "prepared":
        first = parse + encode(Describe("S", "P_0")) + bind + tail
        return first, bind + tail, encode(BindComplete()) + b"".join(rows) + ready
    every = parse + bind + encode(Describe("P", "")) + tail
    return every, every, server + ready


def timed(n: int, transaction: Callable[[int], None], cold: bytearray | None) -> float:
    """CPU seconds of ``n`` calls of ``transaction``; with ``cold``, a copy of it between
    two calls (evicts the caches), the copy not timed."""
    if cold is None:
        start = time.thread_time()  # CPU time: the machine is shared
        for i in range(n):
            transaction(i)
        return time.thread_time() - start
    sink = bytearray(len(cold))
    took = 0.0
    for i in range(n):
        sink[:] = cold
        start = time.thread_time()
        transaction(i)
        took += time.thread_time() - start
    return took


def _recorder(stage: str, writer: RecordingWriter | None) -> Callable[[list[QueryRecord]], None]:
    """The server scanner's record callback for ``stage``, as ``ClientConnection`` writes
    (a prepared statement's text once per chunk, the common record encoded directly)."""
    seq = 0
    log = QueryLog()

    def on_records(records: list[QueryRecord]) -> None:
        nonlocal seq
        for rec in records:
            seq += 1
            if writer is not None:
                log.record(writer, seq, rec)
            elif stage == "payload" and query_json(seq, rec) is None:
                query_payload(seq, rec)

    return on_records


def run(mode: str, n: int, stage: str, cold: bytearray | None = None) -> float:
    """µs per transaction with the stages up to ``stage`` (one run of ``n``; ``cold``:
    see ``timed``)."""
    first, later, server = streams(mode)
    t0 = time.monotonic()
    tracker = QueryTracker(lambda: time.monotonic() - t0)
    gate = StatementGate(1 << 20)
    writer = None
    work = Path(tempfile.mkdtemp(prefix="pg-hotpath-"))
    if stage == "record":
        writer = RecordingWriter.create(
            work / "r.bastrec", "01ARZ3NDEKTSV4RRFFQ69G5FAV", {}, Ed25519PrivateKey.generate()
        )
    on_records = _recorder(stage, writer)

    client = ClientScanner(tracker, 1 << 20)
    srv = ServerScanner(tracker, 1 << 20, on_records)
    allowed: Callable[[str], bool] = lambda _sql: True  # noqa: E731

    def transaction(i: int) -> None:
        data = first if i == 0 else later
        if stage != "none":
            pieces, _ = gate.feed(data, allowed)
            if stage != "gate":
                for scanned, _sent in pieces:
                    client.feed(scanned)
                srv.feed(server)

    took = timed(n, transaction, cold)
    if writer is not None:
        writer.close()
    shutil.rmtree(work)
    return took / n * 1e6


def main() -> None:
    """Print a markdown table of µs per transaction, cumulative by stage."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=7, help="best of this many runs (noise)")
    ap.add_argument(
        "--cold",
        type=int,
        default=0,
        metavar="MIB",
        help="copy this many MiB between transactions, untimed (cold caches; --n 300 is plenty)",
    )
    args = ap.parse_args()
    cold = bytearray(args.cold << 20) if args.cold else None
    stages = ("gate", "scan", "payload", "record")
    print("| pgbench -S mode | " + " | ".join(f"+{s}" for s in stages) + " |")
    print("|---|" + "---|" * len(stages))
    for mode in ("simple", "extended", "prepared"):
        best = [min(run(mode, args.n, s, cold) for _ in range(args.repeat)) for s in stages]
        cells = [f"{b:.1f}" for b in best]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
