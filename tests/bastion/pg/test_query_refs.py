"""A named prepared statement's text once per chunk, references after (pure, no sockets).

The writer (``QueryLog``) and the readers' ``QueryResolver`` on real recording
files: every reference resolves inside its own chunk, the resolved events are
what the node wrote before (full text on every event), and a reader that starts
at any chunk (a late watcher's snapshot) resolves too.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.cli_recordings import _export_to
from bastion.control.messages import LiveQuery
from bastion.control.snapshot import build_snapshot
from bastion.control.watch import to_live_event
from bastion.pg.query_event import (
    MAX_REF_GAP,
    QUERY_EVENT,
    QueryEvent,
    QueryResolver,
    resolve_queries,
    searchable_queries,
)
from bastion.pg.query_log import QueryLog, query_payload
from bastion.pg.tracker import QueryRecord
from recorder import RecordingReader, RecordingWriter, WriterPolicy
from recorder.events import Event, JSONValue, Structured
from replay.recording_facts import scan_recording

SID = "01QUERYREFSAAAAAAAAAAAAAAA"


def _writer(path: Path, chunk_bytes: int = 4096) -> RecordingWriter:
    return RecordingWriter.create(
        path, SID, {}, Ed25519PrivateKey.generate(), policy=WriterPolicy(chunk_bytes=chunk_bytes)
    )


def _rec(sql: str | None, statement: str | None, n: int = 0) -> QueryRecord:
    return QueryRecord(
        kind="extended" if statement is not None else "simple",
        sql=sql,
        statement=statement,
        portal="" if statement is not None else None,
        params=(str(n),) if statement else (),
        tag="SELECT 1",
        tags=("SELECT 1",),
        rows=1,
        started_at=n / 1000,
        finished_at=n / 1000 + 0.0001,
    )


def _workload(n: int) -> list[QueryRecord]:
    """Named, unnamed and simple statements interleaved, one name re-prepared."""
    out: list[QueryRecord] = []
    for i in range(n):
        if i % 7 == 0:
            out.append(_rec("BEGIN", None, i))
        elif i % 5 == 0:
            out.append(_rec("SELECT $1 /* unnamed */", "", i))
        elif i < n // 2:
            out.append(_rec("SELECT abalance FROM pgbench_accounts WHERE aid = $1", "P_1", i))
        else:  # after DEALLOCATE P_1, the name comes back with another text
            out.append(_rec("UPDATE pgbench_accounts SET abalance = $1 /* é */", "P_1", i))
        out.append(_rec("SELECT 'x' || $1", "S_2", i))
    return out


def _record(path: Path, records: list[QueryRecord], chunk_bytes: int = 4096) -> None:
    writer = _writer(path, chunk_bytes)
    log = QueryLog()
    for seq, rec in enumerate(records, 1):
        log.record(writer, seq, rec)
    writer.close()


def _payloads(events: Iterable[Event]) -> list[dict[str, Any]]:
    return [e.payload for e in events if isinstance(e, Structured) and isinstance(e.payload, dict)]


def _chunks(path: Path) -> list[list[dict[str, Any]]]:
    """The query payloads of each chunk, as recorded."""
    with RecordingReader.open(path) as reader:
        return [_payloads(reader.chunk_events(entry)) for entry in reader.index]


def _sql(payload: JSONValue) -> str | None:
    query = QueryEvent.from_payload(payload)
    assert query is not None
    return query.sql


def test_text_once_per_chunk_and_readers_see_every_text(tmp_path: Path) -> None:
    path = tmp_path / "r.bastrec"
    records = _workload(600)
    _record(path, records)
    chunks = _chunks(path)
    assert len(chunks) > 5
    refs = 0
    for events in chunks:  # each chunk resolves on its own: any reader may start there
        resolver = QueryResolver()
        texts = set()
        for p in events:
            if "sql_ref" in p:
                refs += 1
                assert p["sql"] is None and p["sql_ref"] in texts and p["statement"]
                assert "sql_hex" not in p
            elif p["statement"]:
                texts.add(p["seq"])
            assert _sql(resolver.payload(p)) is not None
    assert refs > len(records) * 0.6
    # resolved, the recording is exactly what the node wrote before: the text every time
    with RecordingReader.open(path) as reader:
        got = _payloads(resolve_queries(reader.events()))
    assert got == [query_payload(seq, rec) for seq, rec in enumerate(records, 1)]
    assert not any("sql_ref" in p for p in got)


def test_a_re_parse_with_other_text_records_the_new_text(tmp_path: Path) -> None:
    path = tmp_path / "r.bastrec"
    records = [_rec("SELECT 1", "s1", 1), _rec("SELECT 1", "s1", 2), _rec("SELECT 2", "s1", 3)]
    records += [_rec("SELECT 2", "s1", 4), _rec("SELECT 1", "s1", 5)]
    _record(path, records)
    (events,) = _chunks(path)
    assert [p["sql"] for p in events] == ["SELECT 1", None, "SELECT 2", None, "SELECT 1"]
    assert [p.get("sql_ref") for p in events] == [None, 1, None, 3, None]


def test_simple_and_unnamed_statements_keep_their_text(tmp_path: Path) -> None:
    path = tmp_path / "r.bastrec"
    _record(path, [_rec("SELECT 1", None, i) for i in range(3)] + [_rec("SELECT 1", "", 9)] * 3)
    (events,) = _chunks(path)
    assert all(p["sql"] == "SELECT 1" and "sql_ref" not in p for p in events)


def test_a_chunk_cut_between_text_and_reference_repeats_the_text(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "r.bastrec")
    log = QueryLog()
    log.record(writer, 1, _rec("SELECT 1", "s1"))
    log.record(writer, 2, _rec("SELECT 1", "s1"))
    writer.flush()  # what tick() does from a worker thread when the chunk is a second old
    log.record(writer, 3, _rec("SELECT 1", "s1"))
    log.record(writer, 4, _rec("SELECT 1", "s1"))
    # the check is made under the writer's lock: a stale chunk records nothing
    assert writer.event(QUERY_EVENT, {"seq": 99}, chunk=1) == 0
    writer.close()
    chunks = _chunks(tmp_path / "r.bastrec")
    assert [[p["sql"] for p in c] for c in chunks] == [["SELECT 1", None], ["SELECT 1", None]]
    assert chunks[1][1]["sql_ref"] == 3


def test_references_stay_within_the_resolvers_window(tmp_path: Path) -> None:
    path = tmp_path / "r.bastrec"
    records = [_rec("SELECT $1", "s1", i) for i in range(MAX_REF_GAP + 5)]
    _record(path, records, chunk_bytes=4 << 20)  # one chunk: only the gap repeats the text
    (events,) = _chunks(path)
    texts = [p["seq"] for p in events if p["sql"] is not None]
    assert texts == [1, 1 + MAX_REF_GAP]
    resolver = QueryResolver()
    assert all(_sql(resolver.payload(p)) for p in events)


def test_resolver_restores_the_exact_bytes_and_leaves_unknown_refs() -> None:
    latin1 = b"SELECT 'caf\xe9'".decode("utf-8", "surrogateescape")
    first = query_payload(1, _rec(latin1, "s1"))
    ref = query_payload(2, _rec(latin1, "s1"), sql_ref=1)
    assert "sql_hex" in first and "sql_hex" not in ref
    resolver = QueryResolver()
    assert resolver.payload(ref) is ref  # started after the text: stays a reference
    assert resolver.payload(first) is first
    assert resolver.payload(ref) == query_payload(2, _rec(latin1, "s1"))
    event: Event = Structured(1.0, QUERY_EVENT, ref)
    live = to_live_event(event, resolver)
    assert isinstance(live, LiveQuery) and live.payload["sql"] == first["sql"]
    assert searchable_queries([Structured(0.5, QUERY_EVENT, first), event], 100.0) == [
        (100.0, first["sql"])
    ]


def test_every_file_reader_sees_the_text(tmp_path: Path) -> None:
    path = tmp_path / "r.bastrec"
    records = _workload(300)
    _record(path, records)
    expected = [query_payload(seq, rec) for seq, rec in enumerate(records, 1)]
    with RecordingReader.open(path) as reader:
        _, facts = scan_recording(reader)  # the console's player
    assert facts.queries == expected
    out = io.BytesIO()
    with RecordingReader.open(path) as reader:
        assert _export_to(reader, "jsonl", out, include_input=False) == len(records)
    lines = [json.loads(x) for x in out.getvalue().decode().splitlines()[1:]]
    assert [x["payload"] for x in lines] == expected  # self-contained: no sql_ref


def test_a_late_watcher_resolves_from_the_snapshot_on(tmp_path: Path) -> None:
    path = tmp_path / "r.bastrec"
    writer = _writer(path)
    log = QueryLog()
    records = _workload(400)
    for seq, rec in enumerate(records[:300], 1):
        log.record(writer, seq, rec)
    tail = writer.live_tail()
    assert len(tail.chunks) > 3 and tail.pending
    resolver = QueryResolver()
    with open(path, "rb") as f:
        snap = build_snapshot(f, tail, SID, None, resolver=resolver)
    expected = [query_payload(seq, rec) for seq, rec in enumerate(records, 1)]
    assert snap.queries and snap.queries == expected[300 - len(snap.queries) : 300]
    live: list[JSONValue] = []  # what the watch streams after the snapshot
    for seq, rec in enumerate(records[300:], 301):
        log.record(writer, seq, rec)
    writer.close()
    with RecordingReader.open(path) as reader:
        after = [e for e in reader.events() if isinstance(e, Structured)][300:]
    assert any("sql_ref" in p for p in _payloads(after))
    for event in after:
        query = to_live_event(event, resolver)
        assert isinstance(query, LiveQuery)
        live.append(query.payload)
    assert live == expected[300:]
