"""The search index: displayed lines, the store's index on both backends, masks,
and a reindex killed with SIGKILL half-way giving the same index as a clean run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import UsageError
from bastion.search_entries import Masks, plain_stream, stream_holds_lines
from bastion.search_indexer import OutputLines, reindex
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import Role, SessionRecord, TargetKind
from bastion.store.search import KINDS, SearchIndex, _longest_literal
from replay.screen_lines import DisplayedLines
from tests.bastion.search_fleet import build_fleet, open_config_store

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------- displayed lines


def test_displayed_lines_are_what_the_screen_showed() -> None:
    lines = DisplayedLines(40, 5)
    lines.feed(0.5, b"$ ")
    for i, c in enumerate(b"printf x"):  # typed with echo: one line, not eight
        lines.feed(1 + i / 10, bytes([c]))
    lines.feed(2.0, b"\b\b\r\n\x1b[31mred-\x1b[1m4711\x1b[0m\r\n$ ")
    for s in range(5):  # a full-screen program repainting: changed rows only
        lines.feed(3 + s, b"\x1b[?1049h\x1b[H\x1b[2Jtop - 12:00:0%d\r\nPID 1 bash\x1b[?1049l" % s)
    lines.feed(9.0, b"\r\n" + b"".join(b"burst %d\r\n" % n for n in range(30)))  # scrolls past
    found = lines.finish()
    assert found["$ printf x"] == 1.7  # when the typed line was complete
    assert found["red-4711"] == 2.0  # colours and bold gone
    assert [found[f"top - 12:00:0{s}"] for s in range(5)] == [3, 4, 5, 6, 7]
    assert found["PID 1 bash"] == 3  # the same row repainted: once, at its first moment
    assert all(found[f"burst {n}"] == 9.0 for n in range(30))
    assert not any("\x1b" in text for text in found)


def test_the_plain_stream_rules_out_only_what_was_not_displayed() -> None:
    """A session's plain stream (escapes and controls gone) holds every displayed line
    of scrolling output, so a text it lacks was not shown; a line put together by
    cursor motion is not in it, and such a session is never ruled out by its stream."""
    data = b"$ \x1b[32mls\x1b[0m\r\nCustomer \x1b[1m4711\x1b[0m\r\n\x1b]0;title\x07done\r\n"
    lines = DisplayedLines(80, 24)
    lines.feed(1.0, data)
    shown = lines.finish()
    stream = plain_stream(data)
    assert "\x1b" not in stream and "customer 4711" in stream and "title" not in stream
    assert stream_holds_lines(stream, shown)
    moved = b"abcdef\x1b[3Dxyz\r\n"  # the screen shows "abcxyz"
    lines = DisplayedLines(80, 24)
    lines.feed(1.0, moved)
    shown = lines.finish()
    assert "abcxyz" in shown and not stream_holds_lines(plain_stream(moved), shown)
    assert not stream_holds_lines(None, shown)  # no stream (too big): never ruled out


def test_masks_replace_what_they_match() -> None:
    masks = Masks([r"\bAKIA[0-9A-Z]{16}\b"])
    assert masks.apply("key AKIAABCDEFGHIJKLMNOP here") == "key *** here"


def test_longest_literal_narrows_a_regex_safely() -> None:
    assert _longest_literal(r"customer-\d+ rec") == "customer-"
    assert _longest_literal("abcx?yz") == "abc"
    assert _longest_literal("a|bcdef") == ""
    assert _longest_literal("(?i)hello") == ""


# --------------------------------------------------------------------------- the store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/state.db"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    with open_store(url, SecretBox(SecretBox.generate_key())) as s:
        yield s


def _session(store: Store, sid: str, started: float, user: str = "alice") -> None:
    found = store.get_user(user)
    if found is None:
        found = store.add_user(user, Role.CONTRACTOR, [], None, started - 10)
    target = store.get_target("web1")
    if target is None:
        target = store.add_target(
            name="web1", kind=TargetKind.SSH, host="10.0.0.5", port=22, logins=["deploy"],
            principal="bastion-web1", host_keys=["ssh-ed25519 AAAAhost"], now=started - 10,
        )  # fmt: skip
    store.start_session(
        SessionRecord(
            id=sid, user_id=found.id, user_name=found.name, target_id=target.id,
            target_name=target.name, grant_id=None, node="n1", protocol="ssh", login="deploy",
            client_addr="192.0.2.7:5555", started_at=started,
        )
    )  # fmt: skip
    store.end_session(sid, ended_at=started + 60, reason="done", bytes_in=1, bytes_out=1)


class ShownLines:
    """Stands in for ``OutputLines``: each session's displayed lines, and who was read."""

    def __init__(self, lines: dict[str, dict[str, float]]) -> None:
        self.lines = lines
        self.read: list[str] = []

    def __call__(
        self, session_id: str, must_show: str | None = None, in_stream: bool = False
    ) -> dict[str, float] | None:
        self.read.append(session_id)
        return self.lines.get(session_id)


def test_index_search_on_both_backends(store: Store) -> None:
    now = time.time()
    _session(store, "s-old", now - 7200)
    _session(store, "s-new", now - 60, user="bob")
    store.replace_session_index(
        "s-old",
        [("output", 4.5, "Customer 4711: Jane Roe"), ("commands", 1.0, "psql -c 'select 1'")],
        source_bytes=100,
        now=now,
    )
    assert store.sessions_to_index() == ["s-new"]
    store.replace_session_index(
        "s-new",
        [("results", 2.0, "4711 | jane@example.com"), ("files", 3.0, "/tmp/50%_off.txt")],
        source_bytes=50,
        now=now,
    )
    assert store.sessions_to_index() == []
    # terminal output: only its trigrams are stored, its lines come from the recording
    shown = ShownLines({"s-old": {"Customer 4711: Jane Roe": 4.5}})
    (entry,) = [e for e in store.session_index("s-old") if e[0] == "output"]
    assert entry[:2] == ("output", 4.5) and re.fullmatch(r"#[0-9a-f]{32} 1 lines", entry[2])

    def search(text: str, **kw: Any) -> list[Any]:
        return store.search_index(text, output_lines=shown, **kw)

    hits = search("customer 47")  # case-insensitive substring
    assert [(h.session_id, h.kind, h.offset, h.text) for h in hits] == [
        ("s-old", "output", 4.5, "Customer 4711: Jane Roe")
    ]
    assert abs(hits[0].at - (now - 7200 + 4.5)) < 1e-3 and hits[0].user_name == "alice"
    assert shown.read == ["s-old"]  # only the candidate session's recording is read
    assert store.search_index("customer 47") == []  # without a reader, output is not searched
    assert search("jane roe 4711") == []  # a candidate whose lines do not match: no hit
    assert [h.session_id for h in search("4711")] == ["s-new", "s-old"]  # newest first
    assert [h.kind for h in search("4711", kinds=("results",))] == ["results"]
    assert [h.session_id for h in search("4711", user="alice")] == ["s-old"]
    assert [h.session_id for h in search("4711", since=now - 3600)] == ["s-new"]
    assert [h.text for h in search("50%_")] == ["/tmp/50%_off.txt"]  # no wildcards
    assert search("5%o") == []
    assert [h.text for h in search("Ro")] == ["Customer 4711: Jane Roe"]  # < 3 chars
    hits = search(r"Customer \d+:", regex=True)
    assert [h.text for h in hits] == ["Customer 4711: Jane Roe"]
    assert search(r"customer \d+:", regex=True) == []  # a regex is case-sensitive
    assert [h.kind for h in search(r"^/tmp/\d", regex=True)] == ["files"]
    with pytest.raises(UsageError, match="not a valid pattern"):
        search("(", regex=True)
    with pytest.raises(UsageError, match="--in takes"):
        search("x", kinds=("screens",))
    # replacing is idempotent: the same rows, no duplicates left behind
    store.replace_session_index(
        "s-old", [("output", 4.5, "Customer 4711: Jane Roe")], source_bytes=100, now=now
    )
    store.replace_session_index(
        "s-old", [("output", 4.5, "Customer 4711: Jane Roe")], source_bytes=100, now=now
    )
    assert [e[:2] for e in store.session_index("s-old")] == [("output", 4.5)]
    assert store.search_index("psql", output_lines=shown) == []  # the old row went
    assert store.index_totals() == (2, 3, 150)


def test_a_large_session_is_indexed_in_bounded_transactions(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Megabytes of output are written a few chunks per transaction (the SQLite write
    lock is never held for the whole session); a run cut after its first transaction
    leaves the session unmarked, and the next run gives the rows a clean run gives."""
    from bastion.store import search as search_module

    now = time.time()
    _session(store, "s-big", now - 60)
    entries = [("results", float(n), f"row {n:06d} " + "x" * 2000) for n in range(600)]
    writes: list[int] = []
    real_insert = SearchIndex._insert_chunks

    def counting(self: Store, tx: Any, sid: str, chunks: Any, *flag: Any) -> None:
        writes.append(len(chunks))
        real_insert(self, tx, sid, chunks, *flag)

    monkeypatch.setattr(SearchIndex, "_insert_chunks", counting)
    store.replace_session_index("s-big", entries, source_bytes=1, now=now)
    assert len(writes) > 1 and max(writes) <= search_module._CHUNKS_PER_TX
    clean = store.session_index("s-big")
    assert len(clean) == 600

    def cut_after_first(self: Store, tx: Any, sid: str, chunks: Any, *flag: Any) -> None:
        if writes:
            raise OSError("killed")
        writes.append(len(chunks))
        real_insert(self, tx, sid, chunks, *flag)

    writes.clear()
    monkeypatch.setattr(SearchIndex, "_insert_chunks", cut_after_first)
    with pytest.raises(OSError):
        store.replace_session_index("s-big", entries, source_bytes=1, now=now)
    assert store.sessions_to_index() == ["s-big"]  # unmarked: the next reindex redoes it
    assert 0 < len(store.session_index("s-big")) < 600
    monkeypatch.setattr(SearchIndex, "_insert_chunks", real_insert)
    store.replace_session_index("s-big", entries, source_bytes=1, now=now)
    assert store.session_index("s-big") == clean
    assert store.sessions_to_index() == []
    assert [h.offset for h in store.search_index("row 000599")] == [599.0]


@pytest.mark.integration
def test_postgresql_search_reads_the_signatures(pg_url: str) -> None:
    """PostgreSQL keeps each chunk's trigrams and digit 4-grams as a Bloom signature: a
    search reads only the chunks whose signature has every bit of the text's, the
    planner never JIT-compiles it, and rows written before the signatures (their text
    stored) are still found."""
    with open_store(pg_url, SecretBox(SecretBox.generate_key())) as store:
        now = time.time()
        for n in range(20):
            _session(store, f"s-{n}", now - 1000 + n)
            text = f"line {n} " + "lorem ipsum dolor " * 200
            store.replace_session_index(
                f"s-{n}", [("results", 1.0, text), ("output", 2.0, f"shown {n:06d}")],
                source_bytes=1, now=now,
            )  # fmt: skip
        sql, params = store._search_sql("cust-4711", KINDS, None, None, None)
        with store._db.transaction() as tx:
            store._plain_plan(tx)
            found = tx.all("EXPLAIN " + sql + " LIMIT ? OFFSET ?", [*params, 200, 0])
        plan = "\n".join(str(next(iter(r.values()))) for r in found)
        assert "JIT" not in plan, plan
        assert [h.session_id for h in store.search_index("line 7 lorem")] == ["s-7"]
        shown = ShownLines({f"s-{n}": {f"shown {n:06d}": 2.0} for n in range(20)})
        hits = store.search_index("shown 000013", output_lines=shown)
        assert [h.session_id for h in hits] == ["s-13"]
        assert shown.read == ["s-13"]  # the signatures let only s-13 through
        with store._db.transaction(write=True) as tx:  # a row from before migration 17
            tx.run(
                "INSERT INTO search_chunks (session_id, kind, first_offset, lines, offsets,"
                " text) VALUES ('s-3', 'results', 0.5, 1, ?, 'legacy row 4711')",
                [zlib.compress(b"[0.5]")],
            )
        assert [h.text for h in store.search_index("row 4711")] == ["legacy row 4711"]


def test_reindexing_leaves_dead_output_postings_until_a_rebuild(store: Store) -> None:
    """SQLite cannot delete a contentless FTS5 row without its text: a re-indexed
    session's old output postings stay, are never a hit, and a rebuild from empty
    (``reindex --again`` without ``--since``) drops them with every marker."""
    now = time.time()
    _session(store, "s-1", now - 60)
    rows = [("output", 1.0, "shown 4711"), ("results", 2.0, "row 4711")]
    shown = ShownLines({"s-1": {"shown 4711": 1.0}})
    for _ in range(2):
        store.replace_session_index("s-1", rows, source_bytes=1, now=now)
    hits = store.search_index("4711", output_lines=shown)
    assert [(h.kind, h.text) for h in hits] == [("output", "shown 4711"), ("results", "row 4711")]

    def postings() -> int:
        with store._db.transaction() as tx:
            found = tx.all("SELECT rowid FROM search_fts WHERE search_fts MATCH '\"471\"'")
        return len(found)

    if store._db.name == "sqlite":
        assert postings() == 3  # the first output chunk's, dead; both current chunks'
    store.clear_search_index()
    assert store.sessions_to_index() == ["s-1"] and store.search_index("4711") == []
    if store._db.name == "sqlite":
        assert postings() == 0


def test_an_unindexed_search_of_output_is_bounded(store: Store) -> None:
    """A text the index cannot narrow (under three characters) re-reads at most
    UNINDEXED_OUTPUT_SESSIONS sessions' output, then says how to narrow it."""
    from bastion.store.search import UNINDEXED_OUTPUT_SESSIONS

    now = time.time()
    count = UNINDEXED_OUTPUT_SESSIONS + 5
    for n in range(count):
        _session(store, f"s-{n:03d}", now - 10_000 + n)
        store.replace_session_index(
            f"s-{n:03d}", [("output", 1.0, f"line {n}")], source_bytes=1, now=now
        )
    shown = ShownLines({f"s-{n:03d}": {f"line {n}": 1.0} for n in range(count)})
    with pytest.raises(UsageError, match="narrow it with --since"):
        store.search_index("zq", output_lines=shown)
    assert len(shown.read) == UNINDEXED_OUTPUT_SESSIONS
    assert [h.text for h in store.search_index("ne", output_lines=shown, limit=3)] == [
        f"line {count - 1}", f"line {count - 2}", f"line {count - 3}",
    ]  # fmt: skip
    assert store.search_index("zq", output_lines=shown, kinds=("results",)) == []


def test_digit_quads_narrow_a_number_soundly(store: Store) -> None:
    """A number's trigrams are in most chunks; its 4-grams (from runs of digits) narrow
    the candidates, and a number inside a longer one is still found."""
    now = time.time()
    lines = {}
    for n in range(12):
        _session(store, f"s-{n}", now - 1000 + n)
        # every chunk has the trigrams of 5822, only one has the number
        shown = f"id {n:02d} 582 822 build-{4711 + n * 1111:05d}9"
        lines[f"s-{n}"] = {shown: 1.0}
        store.replace_session_index(f"s-{n}", [("output", 1.0, shown)], source_bytes=1, now=now)
    reader = ShownLines(lines)
    hits = store.search_index("5822", output_lines=reader)  # inside build-058229 only
    assert [h.session_id for h in hits] == ["s-1"]
    assert reader.read == ["s-1"]  # the others were ruled out by the index


# ------------------------------------------------------------------ reindex and SIGKILL


def _whole_index(config_path: Path) -> dict[str, list[tuple[str, float, str]]]:
    from bastion.config import load_config

    config = load_config(config_path)
    with open_config_store(config) as store:
        ids = store.sessions_to_index(again=True, limit=100_000)
        assert store.sessions_to_index(limit=100_000) == []  # every session is marked
        return {sid: store.session_index(sid) for sid in ids}


def test_reindex_killed_half_way_then_rerun_equals_a_clean_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    config = build_fleet(tmp_path / "node", 120)
    clean_dir = tmp_path / "clean"
    shutil.copytree(tmp_path / "node", clean_dir)
    from bastion.config import load_config

    clean = load_config(clean_dir / "bastion.toml")
    with open_config_store(clean) as store:
        assert reindex(store, clean) == (120, 0)
    expected = _whole_index(clean_dir / "bastion.toml")
    with open_config_store(clean) as store:
        reader = OutputLines(store, clean)
        hits = store.search_index("marker-00007", output_lines=reader)
        assert [(h.kind, h.offset, h.text) for h in hits] == [("output", 1.1, "marker-00007")]
        # read as plain streams (every line of these sessions is in theirs), not emulated
        assert reader.read == 0 and reader.streams >= 1
        sid = hits[0].session_id
        streamed, emulated = reader(sid, None, True), reader(sid, None, False)
        assert streamed is not None and emulated is not None and reader.read == 1
        assert streamed["marker-00007"] == emulated["marker-00007"] == 1.1
        joined = "\n".join(streamed)
        assert all(line in joined for line in emulated)  # every displayed line is there
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "reindex", "-v", "--config", str(config.path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    done = 0
    while done < 10:  # some sessions committed, many to go
        line = proc.stdout.readline()
        assert line, "reindex ended before it could be killed"
        done += line.endswith("entries\n")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    with open_config_store(config) as store:
        left = len(store.sessions_to_index(limit=100_000))
    assert 0 < left < 120 - 9  # killed half-way: part indexed, part not
    again = subprocess.run(
        [sys.executable, "-m", "bastion", "reindex", "--config", str(config.path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"indexed {left} session(s), 0 failed" in again.stderr
    assert _whole_index(config.path) == expected


def test_session_sources_on_both_backends(store: Store) -> None:
    """What the indexer reads from the store: command lines and audited file paths."""
    now = time.time()
    _session(store, "s-files", now - 100)
    _session(store, "s-other", now - 100)
    store.add_session_commands("s-files", [(now - 99, "ls /srv")])
    store.append_audit(
        "alice", "file.upload", "web1", {"session": "s-files", "path": "/srv/a.txt"}, now - 98
    )
    store.append_audit(
        "alice", "file.upload", "web1", {"session": "s-other", "path": "/srv/b.txt"}, now - 98
    )
    store.append_audit(
        "alice", "session.end", "web1", {"session": "s-files", "path": "not-a-file"}, now - 97
    )
    found = store.session_sources("s-files")
    assert found is not None
    session, commands, files = found
    assert session.id == "s-files"
    assert [(round(at - now), text) for at, text in commands] == [(-99, "ls /srv")]
    assert [(round(at - now), path) for at, path in files] == [(-98, "/srv/a.txt")]
    assert store.session_sources("nope") is None
