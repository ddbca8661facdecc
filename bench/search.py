"""Search index at fleet scale: indexing throughput, index size, search latency.

Usage (from the repository root)::

    PYTHONPATH=. python bench/search.py                      # 1k and 10k, SQLite and PostgreSQL
    PYTHONPATH=. python bench/search.py --sizes 1000 --backends sqlite
    PYTHONPATH=. python bench/search.py --sizes 1000,10000,100000

How: ``--templates`` real recordings are written with the recorder (a shell with
``journalctl`` logs, ``ls -l`` of /usr trees, ``top`` repainting, coloured errors,
and for one session in four a psql-style capture of rows as ``pg.rows`` events)
and indexed by the node's own code (``bastion.search_indexer.index_session``:
read, emulate the terminal, mask, insert): that gives the indexing throughput in
MB of recorded output per second. The fleet of N sessions then gets a real
recording each (template i mod K with its own number for the token, so a rare
token has one hit) and the template's index rows with that number, inserted
through ``Store.replace_session_index``; "recordings MB" is the fleet's recordings
on disk. Search latency is ``Store.search_index`` (limit 100, what the CLI asks
for, reading candidate sessions' output back from their recordings with a fresh
``OutputLines`` each run) over ``--runs`` runs each of a rare captured row, a rare
line a terminal showed, a common word and a mid-word substring, plus end-to-end
``python -m bastion sessions search`` of both rare tokens (process start included)
and ``python -m bastion --help`` (the CLI's start alone): median wall and CPU
seconds of 5 runs each, with bytecode cached as an installed node has it. On
PostgreSQL the bench runs ``VACUUM ANALYZE`` after the bulk load (what autovacuum
does) and prints each search relation's size.
Nothing here asserts; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bastion.cli_node import init_dir
from bastion.config import Config
from bastion.ids import new_session_id
from bastion.search_entries import session_entries
from bastion.search_indexer import OutputLines, index_session, masks_of
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import Role, SessionRecord, TargetKind
from recorder import LocalStorage, RecordingWriter
from recorder.keys import load_signing_key
from recording import PROMPT, LogGen, TopGen, _name, ls_format, usr_dirs
from report import percentile

TOKEN = "ZQSESSIONQZ"  # noqa: S105  not a secret: replaced by each fleet session's number
CUSTOMER = "cust-" + TOKEN
BUILD = "build-" + TOKEN


def say(msg: str) -> None:
    """Progress to stderr."""
    print(f"[bench/search {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _const(value: float) -> Callable[[], float]:
    return lambda: value


def template_events(i: int) -> list[tuple[float, str, Any]]:
    """Template session ``i``: (time, op, data) for the writer."""
    r = random.Random(i)
    logs = LogGen(random.Random(1000 + i))
    top = TopGen(random.Random(2000 + i))
    packages = sorted({_name(r) for _ in range(200)})
    t = 0.5
    ev: list[tuple[float, str, Any]] = [(0.1, "output", PROMPT.encode())]

    def command(text: str, output: str) -> None:
        nonlocal t
        for ch in text:  # typed: one keystroke and its echo at a time
            ev.append((t, "input", ch.encode()))
            ev.append((t + 0.01, "output", ch.encode()))
            t += r.uniform(0.06, 0.25)
        ev.append((t, "input", b"\r"))
        ev.append((t + 0.05, "output", ("\r\n" + output + PROMPT).encode()))
        t += r.uniform(2, 20)

    command("journalctl -u app -n 120 --no-pager", "".join(logs.line() for _ in range(120)))
    dirs = usr_dirs(r, packages)
    path, entries = dirs[r.randrange(len(dirs))]
    command(f"ls -l {path}", ls_format(entries[:40]) + "\r\n")
    command("cat /srv/app/RELEASE", f"deployed {BUILD} by ci at 2024-11-29\r\n")
    ev.append((t, "input", b"top\r"))
    ev.append((t + 0.05, "output", b"top\r\n\x1b[?1049h\x1b[H\x1b[2J"))
    for k in range(4):
        ev.append((t + 0.1 + 3 * k, "output", top.screen(3.0).encode()))
    t += 13
    ev.append((t, "input", b"q"))
    ev.append((t + 0.01, "output", b"\x1b[24;1H\x1b[K\x1b[?1049l" + PROMPT.encode()))
    t += 2
    command("journalctl -p err -n 30 --no-pager", "".join(logs.line() for _ in range(30)))
    if i % 4 == 0:  # a psql session's captured rows, as the PostgreSQL proxy records them
        rows = [[str(n), f"{_name(r)}-{n}", f"{_name(r)}@example.com", "***"] for n in range(20)]
        rows[7][1] = CUSTOMER
        payload = {"set": 1, "columns": ["id", "name", "email", "password"],
                   "masked": ["password"], "rows": rows, "total": 20, "truncated": False,
                   "tag": "SELECT 20"}  # fmt: skip
        ev.append((t, "event", ("pg.rows", payload)))
    return ev


def _record(
    storage: LocalStorage, key: Any, sid: str, started: float, events: list[tuple[float, str, Any]]
) -> Any:
    """Write one session's recording with the real writer; its summary."""
    clock = _Clock()
    writer = RecordingWriter.create(
        storage, sid, {"cols": 80, "rows": 24}, key, clock=clock, wall_clock=_const(started),
    )  # fmt: skip
    writer.resize(80, 24)
    for at, op, data in events:
        clock.now = at
        if op == "event":
            name, payload = data
            writer.event(name, payload)
        else:
            getattr(writer, op)(data)
    return writer.close("client disconnected")


def _numbered(events: list[tuple[float, str, Any]], number: str) -> list[tuple[float, str, Any]]:
    """A template's events with its token replaced by a fleet session's number."""
    out: list[tuple[float, str, Any]] = []
    for at, op, data in events:
        if op in ("output", "input"):
            data = data.replace(TOKEN.encode(), number.encode())
        elif op == "event":
            name, payload = data
            rows = [[c.replace(TOKEN, number) for c in row] for row in payload["rows"]]
            data = (name, {**payload, "rows": rows})
        out.append((at, op, data))
    return out


def write_templates(config: Config, store: Store, count: int) -> list[str]:
    """``count`` recorded, ended template sessions; their ids."""
    storage = LocalStorage(config.recordings_dir)
    key = load_signing_key(config.recording_signing_key)
    user = store.add_user("tmpl", Role.CONTRACTOR, [], None, time.time())
    target = store.add_target(
        name="tmpl", kind=TargetKind.SSH, host="10.0.0.1", port=22, logins=["deploy"],
        principal="tmpl", host_keys=["ssh-ed25519 AAAAhost"], now=time.time(),
    )  # fmt: skip
    ids = []
    for i in range(count):
        sid = new_session_id()
        started = time.time() - 86400
        location = storage.location_for(sid, started)
        store.start_session(
            SessionRecord(
                id=sid, user_id=user.id, user_name=user.name, target_id=target.id,
                target_name=target.name, grant_id=None, node="bench", protocol="ssh",
                login="deploy", client_addr="192.0.2.1:1", started_at=started,
                recording=location,
            )
        )  # fmt: skip
        summary = _record(storage, key, sid, started, template_events(i))
        store.end_session(
            sid, ended_at=started + summary.duration, reason="client disconnected",
            bytes_in=0, bytes_out=0, events=summary.events, final_hash=summary.final_hash,
            final_signature=summary.signature,
        )  # fmt: skip
        ids.append(sid)
    return ids


def index_bytes(store: Store) -> tuple[int, int]:
    """Bytes the index takes on disk (tables, FTS shadow tables, indexes), and of
    those the postings alone (the FTS5 tables; the signatures)."""
    db = store._db
    with db.transaction() as tx:
        if db.name == "sqlite":
            row = tx.one(
                "SELECT SUM(pgsize) AS n,"
                " SUM(CASE WHEN name LIKE 'search_fts%' THEN pgsize ELSE 0 END) AS p"
                " FROM dbstat WHERE name LIKE 'search%' OR name LIKE 'sqlite_autoindex_search%'"
            )
        else:  # postings: the signatures
            row = tx.one(
                "SELECT pg_total_relation_size('search_chunks')"
                " + pg_total_relation_size('search_indexed') AS n,"
                " (SELECT COALESCE(SUM(bit_length(sig)), 0) / 8 FROM search_chunks) AS p"
            )
    if row is None or row["n"] is None:
        return 0, 0
    return int(row["n"]), int(row["p"])


def build_fleet(
    config: Config,
    store: Store,
    size: int,
    templates: list[list[tuple[str, float, str]]],
    in_stream: list[bool],
) -> tuple[float, int]:
    """``size`` sessions, each with a real recording (a template's events with its own
    number for the token) and its index rows; returns (seconds spent inserting the
    index rows, bytes of the fleet's recordings)."""
    db = store._db
    storage = LocalStorage(config.recordings_dir)
    key = load_signing_key(config.recording_signing_key)
    now = time.time()
    users = [store.add_user(f"u{n}", Role.CONTRACTOR, [], None, now).id for n in range(50)]
    targets = [
        store.add_target(
            name=f"t{n}", kind=TargetKind.SSH, host="10.0.0.2", port=22, logins=["deploy"],
            principal=f"t{n}", host_keys=["ssh-ed25519 AAAAhost"], now=now,
        ).id
        for n in range(20)
    ]  # fmt: skip
    ids = [new_session_id() for _ in range(size)]
    events = [template_events(i) for i in range(len(templates))]
    recorded = 0
    for start in range(0, size, 1000):
        with db.transaction(write=True) as tx:
            for i in range(start, min(size, start + 1000)):
                began = now - 90 * 86400 + i * 60
                location = storage.location_for(ids[i], began)
                summary = _record(
                    storage, key, ids[i], began, _numbered(events[i % len(events)], f"{i:08d}")
                )
                recorded += storage.path_of(location).stat().st_size
                tx.run(
                    "INSERT INTO sessions (id, user_id, target_id, grant_id, node, protocol,"
                    " login, client_addr, started_at, ended_at, end_reason, recording,"
                    " bytes_in, bytes_out, events, final_hash)"
                    " VALUES (?, ?, ?, NULL, 'bench', 'ssh', 'deploy', '192.0.2.1:1', ?, ?,"
                    " 'client disconnected', ?, 0, 0, ?, ?)",
                    [ids[i], users[i % 50], targets[i % 20], began, began + summary.duration,
                     location, summary.events, summary.final_hash],
                )  # fmt: skip
        say(f"  {min(size, start + 1000)}/{size} sessions recorded")
    t0 = time.perf_counter()
    for i, sid in enumerate(ids):
        number = f"{i:08d}"
        rows = [(k, o, text.replace(TOKEN, number)) for k, o, text in templates[i % len(templates)]]
        store.replace_session_index(
            sid, rows, source_bytes=0, now=now, output_in_stream=in_stream[i % len(templates)]
        )
        if i and i % 2000 == 0:
            say(f"  {i}/{size} sessions inserted")
    return time.perf_counter() - t0, recorded


def latency(store: Store, config: Config, text: str, runs: int) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, hits) of ``search_index(text)`` with the CLI's limit, reading
    candidate sessions' output back from their recordings as the CLI does (a new
    reader each run: nothing cached between runs but the OS's page cache)."""
    times = []
    hits = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        found = store.search_index(text, limit=100, output_lines=OutputLines(store, config))
        hits = len(found)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), percentile(times, 99), hits


def _cli(args: list[str], pycache: Path) -> tuple[float, float]:
    """(wall s, CPU s) of ``python -m bastion ARGS``, with compiled bytecode cached as an
    installed node has it (this machine's environment sets PYTHONDONTWRITEBYTECODE,
    which makes every start compile ~125 modules from source: ~0.4 s of CPU)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(BASTION_ACTOR="bench", PYTHONPYCACHEPREFIX=str(pycache))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bastion", *args], capture_output=True, text=True, check=False,
        env=env,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bastion {' '.join(args)} failed: {done.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu


def cli_times(args: list[str], pycache: Path, runs: int = 5) -> tuple[float, float]:
    """Median (wall s, CPU s) of ``runs`` CLI runs after one that fills the bytecode cache."""
    _cli(args, pycache)
    found = [_cli(args, pycache) for _ in range(runs)]
    return statistics.median(w for w, _ in found), statistics.median(c for _, c in found)


@contextmanager
def backend_url(name: str, stack: ExitStack) -> Iterator[str | None]:
    """None for SQLite (the node's default file), else a fresh PostgreSQL database."""
    if name == "sqlite":
        yield None
        return
    from tests.peers.postgres import find_pg_bin, start_pg_server

    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries not found (set BASTION_PG_BIN)")
    server = stack.enter_context(start_pg_server(bin_dir))
    yield server.dsn(server.create_database())


def run(backend: str, size: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One backend at one fleet size: the report's row."""
    with ExitStack() as stack, backend_url(backend, stack) as url:
        config = init_dir(work / f"{backend}-{size}", "127.0.0.1:0", url, "bench")
        store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
        stack.callback(store.close)
        say(f"{backend} {size}: recording {args.templates} template sessions")
        ids = write_templates(config, store, args.templates)
        storage = LocalStorage(config.recordings_dir)
        rec_bytes = output_bytes = 0
        masks = masks_of(config)
        t0 = time.perf_counter()
        for sid in ids:
            index_session(store, config, sid, masks)
        index_seconds = time.perf_counter() - t0
        templates = []
        in_stream: list[bool] = []
        for sid in ids:
            s = store.get_session(sid)
            assert s is not None and s.recording is not None
            path = str(storage.path_of(s.recording))
            found = session_entries(store, sid, path, masks)
            assert found is not None
            templates.append(found.entries)
            in_stream.append(found.output_in_stream)
        output_bytes = store.index_totals()[2]
        say(f"{backend} {size}: recording the fleet and inserting its index rows")
        insert_seconds, rec_bytes = build_fleet(config, store, size, templates, in_stream)
        if backend == "postgresql" and url is not None:
            # what autovacuum does after a bulk load: planner statistics, and the GIN
            # index's pending list (fastupdate) merged into the index proper
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE search_chunks")
                conn.execute("ANALYZE")
                for name, n in conn.execute(
                    "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c"
                    " WHERE c.relname LIKE 'search%' OR c.oid = (SELECT reltoastrelid"
                    " FROM pg_class WHERE relname = 'search_chunks') ORDER BY 2 DESC"
                ):
                    say(f"  {name}: {n / 1e6:.1f} MB")
        entries = store.index_totals()[1]
        size_bytes, postings_bytes = index_bytes(store)
        fleet_rec = rec_bytes
        rare = f"cust-{size // 2 // 4 * 4:08d}"  # a session whose template captured rows
        rare_output = f"build-{size // 3:08d}"  # one line a terminal showed, in one session
        row: dict[str, Any] = {
            "backend": backend, "sessions": size, "entries": entries,
            "index_mb_s": output_bytes / 1e6 / index_seconds,
            "rows_s": (entries - sum(len(t) for t in templates)) / insert_seconds,
            "index_mb": size_bytes / 1e6, "postings_mb": postings_bytes / 1e6,
            "recordings_mb": fleet_rec / 1e6,
        }  # fmt: skip
        queries = (
            ("rare", rare), ("rare_output", rare_output), ("common", "error"),
            ("substring", "ginx[10"),
        )  # fmt: skip
        for label, text in queries:
            p50, p99, hits = latency(store, config, text, args.runs)
            row[label] = (p50, p99, hits)
            say(f"{backend} {size}: {label} {text!r}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {hits}")
        pycache = work / "pycache"
        search = ["sessions", "search", rare, "--config", str(config.path)]
        row["cli_s"], row["cli_cpu"] = cli_times(search, pycache)
        search = ["sessions", "search", rare_output, "--config", str(config.path)]
        row["cli_out_s"], row["cli_out_cpu"] = cli_times(search, pycache)
        row["start_s"], row["start_cpu"] = cli_times(["--help"], pycache)
        return row


def report(rows: list[dict[str, Any]]) -> str:
    """The markdown table for bench/README.md."""
    lines = [
        "| backend | sessions | entries | indexing (MB output/s) | insert (rows/s) | index MB "
        "(postings) | recordings MB | index / recordings | rare (row) p50/p99 ms "
        "| rare (output) p50/p99 ms | common p50/p99 ms "
        "| substring p50/p99 ms | rare row, CLI end to end (wall / CPU) "
        "| rare output, CLI end to end (wall / CPU) | CLI start alone (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{r[k][0]:.1f} / {r[k][1]:.1f} ({r[k][2]} hits)"
            for k in ("rare", "rare_output", "common", "substring")
        ]
        lines.append(
            f"| {r['backend']} | {r['sessions']:,} | {r['entries']:,} | {r['index_mb_s']:.2f} "
            f"| {r['rows_s']:,.0f} | {r['index_mb']:.0f} ({r['postings_mb']:.0f}) "
            f"| {r['recordings_mb']:.0f} | {r['index_mb'] / r['recordings_mb']:.2f}x | "
            + " | ".join(cells)
            + f" | {r['cli_s']:.2f} / {r['cli_cpu']:.2f} s "
            f"| {r['cli_out_s']:.2f} / {r['cli_out_cpu']:.2f} s "
            f"| {r['start_s']:.2f} / {r['start_cpu']:.2f} s |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--templates", type=int, default=40, help="real recordings indexed")
    parser.add_argument("--runs", type=int, default=30, help="searches per query")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        for backend in args.backends.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                rows.append(run(backend, size, args, Path(tmp)))
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
