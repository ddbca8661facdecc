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

``--rules`` adds rows where the gate asks the node's ``PolicyHook`` about every
Query and Parse through ``Hooks`` (as ``Session.allowed_at_once`` does): without SQL
rules (what a node without rules does per statement), and with the 20 SQL rules of
``bench/pg.py`` (``GUARD_RULES``), judging what the memo does not know (the first
transaction). Simple-protocol transactions carry a new ``aid`` each,
as pgbench's do, so the exact-text memo misses and the statement's shape decides.
It also prints the per-statement cost of the memo's look-up over 20,000 distinct
``pgbench -S -M simple`` texts, and of its parts, and the client side alone (gate,
the question per statement, client scanner) without a hook, with the policy hook and
no SQL rules, and with the 20 rules.

Run from the repository root::

    PYTHONPATH=. python bench/pg_hotpath.py [--n 5000] [--repeat 7] [--cold 16] [--rules]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def aid(i: int) -> int:
    """pgbench's random account of transaction ``i`` (scale 10), repeatable."""
    return 1 + (i * 7919) % 1_000_000


def streams(mode: str, n: int = 1) -> tuple[bytes, list[bytes], bytes]:
    """(client bytes of the first transaction, of the ``n`` later ones (one when they
    repeat), server bytes)."""
    from bastion.pg.messages import FieldDescription

    desc = RowDescription([FieldDescription("abalance", 16400, 3, 23, 4)])
    rows = [encode(DataRow([b"0"])), encode(CommandComplete("SELECT 1"))]
    ready = encode(ReadyForQuery(TransactionStatus.IDLE))
    if mode == "simple":
        qs = [encode(Query(SQL.replace("$1", str(aid(i))))) for i in range(n + 1)]
        return qs[0], qs[1:], encode(desc) + b"".join(rows) + ready
    bind = encode(Bind("", "P_0" if mode == "prepared" else "", [0], [b"12345"], [0]))
    tail = encode(Execute("", 0)) + encode(Sync())
    parse = encode(Parse("P_0" if mode == "prepared" else "", SQL, [0]))
    server = encode(ParseComplete()) + encode(BindComplete()) + encode(desc) + b"".join(rows)
    if mode == "prepared":
        first = parse + encode(Describe("S", "P_0")) + bind + tail
        return first, [bind + tail], encode(BindComplete()) + b"".join(rows) + ready
    every = parse + bind + encode(Describe("P", "")) + tail
    return every, [every], server + ready


def guard_hook(with_rules: bool = True) -> tuple[Callable[[str], bool], Callable[[str], None], Any]:
    """(allowed at once?, judge, hook): the node's ``PolicyHook`` with ``GUARD_RULES`` (or
    none), asked through the node's ``Hooks`` as ``Session.allowed_at_once`` does."""
    from bastion.policy.rules import Rule, RuleKind
    from bastion.session.hooks import Hooks, Verdict
    from pg import GUARD_RULES
    from tests.bastion.policy.standalone import standalone_policy_hook

    rules = []
    for name, action, *spec in GUARD_RULES if with_rules else ():
        opts: dict[str, str | bool] = {}
        for i, word in enumerate(spec):
            if word.startswith("--"):
                more = i + 1 < len(spec) and not spec[i + 1].startswith("--")
                opts[word[2:]] = spec[i + 1] if more else True
        rules.append(
            Rule(
                name,
                RuleKind.SQL,
                Verdict(action),
                sql_classes=frozenset(str(opts["sql"]).split(",")),
                tables=tuple(str(opts["tables"]).split(",")) if "tables" in opts else (),
                shadow=bool(opts.get("shadow")),
            )
        )

    hook, session = standalone_policy_hook(rules)
    hooks = Hooks([hook])

    def allowed(sql: str) -> bool:  # Session.allowed_at_once
        if not hooks.judging:
            return True
        found = hooks.cached(session, "statement", sql)
        return found is not None and found.verdict is Verdict.ALLOW and not found.flags

    def judge(sql: str) -> None:
        decision = asyncio.run(hook.statement(session, sql))
        assert decision.verdict is Verdict.ALLOW, decision  # none of the rules matches pgbench

    return allowed, judge, hook


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


def gated(
    gate: StatementGate, client: ClientScanner, rules: str, scan: bool
) -> Callable[[bytes], None]:
    """Client bytes through the gate, and with ``scan`` the pieces through the client
    scanner, as ``ClientConnection`` does. ``rules``: "" (every statement allowed, no
    hook), "none" (the node's policy hook with no SQL rule) or "20" (``GUARD_RULES``;
    the statements the gate stops are judged)."""
    allowed: Callable[[str], bool] = lambda _sql: True  # noqa: E731
    judge: Callable[[str], None] = lambda _sql: None  # noqa: E731
    if rules:
        allowed, judge, _hook = guard_hook(rules == "20")
    framed = hasattr(client, "scan")  # main before the gate framed once: feed bytes

    def scanned(pieces: list[Any]) -> None:
        if not scan:
            return
        for piece in pieces:
            if framed:
                client.scan(piece[0], piece[1])
            else:
                client.feed(piece[0])

    def client_side(data: bytes) -> None:
        pieces, pending = gate.feed(data, allowed)
        while pending is not None:  # the first transaction: judged, then on
            scanned(pieces)
            judge(pending.sql)
            piece, _ = gate.decided(None)
            scanned([piece])
            pieces, pending = gate.pump(allowed)
        scanned(pieces)

    return client_side


def run(mode: str, n: int, stage: str, cold: bytearray | None = None, rules: str = "") -> float:
    """µs per transaction with the stages up to ``stage`` (one run of ``n``; ``cold``:
    see ``timed``; ``rules``: see ``gated``)."""
    first, later, server = streams(mode, n)
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
    client_side = gated(gate, client, rules, scan=stage != "gate")

    def transaction(i: int) -> None:
        if stage != "none":
            client_side(first if i == 0 else later[i % len(later)])
            if stage != "gate":
                srv.feed(server)

    took = timed(n, transaction, cold)
    if writer is not None:
        writer.close()
    shutil.rmtree(work)
    return took / n * 1e6


def memo_costs(n: int, repeat: int) -> None:
    """µs per distinct simple-protocol statement: the rules memo's look-up and its parts."""
    from bastion.policy import sql as policy_sql

    texts = [SQL.replace("$1", str(aid(i))) for i in range(n)]
    allowed, judge, _hook = guard_hook()
    judge(texts[0])
    parts: list[tuple[str, Callable[[str], object]]] = [("`allowed_at_once` (memo)", allowed)]
    if hasattr(policy_sql, "literal_key"):
        parts.append(("`literal_key`", policy_sql.literal_key))
    parts.append(("`shape_of` (normalize)", policy_sql.shape_of))
    print("| per distinct statement | µs |")
    print("|---|---:|")
    for name, fn in parts:
        best = float("inf")
        for _ in range(repeat):
            start = time.thread_time()
            for t in texts:
                fn(t)
            best = min(best, time.thread_time() - start)
        print(f"| {name} | {best / n * 1e6:.2f} |")


class _NoTracker(QueryTracker):
    """The client side alone: nothing is queued for answers that never come."""

    def query(self, sql: str) -> None:
        pass

    def parse(self, *args: Any) -> None:
        pass

    def bind(self, *args: Any) -> None:
        pass

    def execute(self, *args: Any) -> None:
        pass

    def describe(self, *args: Any) -> None:
        pass

    def sync(self) -> None:
        pass


def client_costs(n: int, repeat: int) -> None:
    """µs per simple statement / extended transaction on the relay's client side: gate,
    the relay's question per Query and Parse (no hook; the policy hook without SQL
    rules; with ``GUARD_RULES``), client scanner."""
    print("| client side, µs | no hook | hook, no rules | 20 rules |")
    print("|---|---|---|---|")
    for mode in ("simple", "extended"):
        first, later, _server = streams(mode, n)
        datas = [later[i % len(later)] for i in range(1, n)]
        cells = []
        for rules in ("", "none", "20"):
            best = float("inf")
            for _ in range(repeat):
                gate = StatementGate(1 << 20)
                client = ClientScanner(_NoTracker(lambda: 0.0), 1 << 20)
                side = gated(gate, client, rules, scan=True)
                side(first)  # judged in full with rules: not timed
                start = time.thread_time()
                for data in datas:
                    side(data)
                best = min(best, time.thread_time() - start)
            cells.append(f"{best / len(datas) * 1e6:.2f}")
        print(f"| {mode} | " + " | ".join(cells) + " |")


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
    ap.add_argument(
        "--rules", action="store_true", help="rows with GUARD_RULES in force, and memo costs"
    )
    args = ap.parse_args()
    cold = bytearray(args.cold << 20) if args.cold else None
    stages = ("gate", "scan", "payload", "record")
    print("| pgbench -S mode | " + " | ".join(f"+{s}" for s in stages) + " |")
    print("|---|" + "---|" * len(stages))
    for mode in ("simple", "extended", "prepared"):
        for rules in ("", "none", "20") if args.rules else ("",):
            best = [
                min(run(mode, args.n, s, cold, rules) for _ in range(args.repeat)) for s in stages
            ]
            cells = [f"{b:.1f}" for b in best]
            label = {"": mode, "none": f"{mode}, hook, no rules", "20": f"{mode}, 20 rules"}
            print(f"| {label[rules]} | " + " | ".join(cells) + " |")
    if args.rules:
        print()
        memo_costs(20_000, args.repeat)
        print()
        client_costs(20_000, args.repeat)


if __name__ == "__main__":
    main()
