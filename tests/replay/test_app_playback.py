"""The player's model without a UI: clock-driven playback, speed, idle gaps, seeking,
command/marker navigation, keyframe store and cache - on the committed fixture recordings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder import RecordingReader
from replay.cache import cache_dir, open_indexed
from replay.clock import ManualClock
from replay.keyframe_store import KeyframeStore
from replay.keyframes import KeyframeError, apply_event
from replay.playback import SPEEDS, Player
from replay.recording_facts import scan_recording
from replay.terminal import TerminalEmulator
from tests.replay.sample_source import RECORDINGS


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def reader() -> Iterator[RecordingReader]:
    with RecordingReader.open(RECORDINGS / "s-vim.bastrec") as r:
        yield r


def full_replay(path: Path, time: float) -> list[str]:
    """The screen at ``time`` by feeding every event from the start (the reference)."""
    with RecordingReader.open(path) as r:
        emu = TerminalEmulator(80, 24)
        for event in r.events():
            if event.time > time:
                break
            apply_event(emu, event)
        return emu.text()


def indexed_player(reader: RecordingReader, clock: ManualClock) -> Player:
    player = Player(reader, clock)
    store, facts = scan_recording(reader)
    player.set_index(store, facts)
    return player


def test_paused_player_does_not_move_and_playing_follows_the_clock(
    reader: RecordingReader,
) -> None:
    clock = ManualClock()
    player = indexed_player(reader, clock)
    clock.advance(10)
    assert not player.tick() and player.position == 0.0
    player.play()
    clock.advance(1.5)
    assert player.tick()
    assert player.position == pytest.approx(1.5)
    assert player.snapshot().text() == full_replay(RECORDINGS / "s-vim.bastrec", 1.5)


def test_speed_steps_and_scales_time(reader: RecordingReader) -> None:
    clock = ManualClock()
    player = indexed_player(reader, clock)
    assert [player.faster() for _ in range(6)] == [2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
    assert [player.slower() for _ in range(8)] == [8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.25, 0.25]
    assert (min(SPEEDS), max(SPEEDS)) == (0.25, 16.0)
    player.speed = 4.0
    player.play()
    clock.advance(0.5)
    player.tick()
    assert player.position == pytest.approx(2.0)


def test_idle_gap_is_cut_to_the_limit_and_can_be_played_in_full(
    reader: RecordingReader,
) -> None:
    # the fixture has a 40 s pause before "exit" (typed at ~75.8 s)
    exit_time = indexed_player(reader, ManualClock()).command_times()[-1]
    gap_start = exit_time - 44.0
    for limit, expected_jump in ((2.0, True), (None, False)):
        clock = ManualClock()
        player = indexed_player(reader, clock)
        player.idle_limit = limit
        player.seek(gap_start)
        player.play()
        for _ in range(6):  # 6 x 0.5 s of wall time
            clock.advance(0.5)
            player.tick()
        assert (player.position >= exit_time - 1) is expected_jump, (limit, player.position)


def test_playback_stops_at_the_end(reader: RecordingReader) -> None:
    clock = ManualClock()
    player = indexed_player(reader, clock)
    player.seek(player.duration - 1)
    player.play()
    clock.advance(5)
    player.tick()
    assert player.position == player.duration and not player.playing
    assert player.snapshot().text()[-3:-1] == ["demo$ exit", "exit"]
    player.play()  # at the end: plays again from the start
    assert player.position == 0.0 and player.playing


@pytest.mark.parametrize("name", ["s-vim", "s-htop", "s-ls"])
def test_every_seek_matches_a_full_replay(name: str) -> None:
    path = RECORDINGS / f"{name}.bastrec"
    with RecordingReader.open(path) as r:
        player = indexed_player(r, ManualClock())
        assert len(player.keyframes or []) >= 3
        # forwards, backwards, across keyframes, onto exact event times
        times = [30.0, 5.0, 13.18, 0.0, 70.0, 20.0, 20.0, player.duration, 1.0]
        for t in times:
            player.seek(t)
            assert player.snapshot().text() == full_replay(path, t), t
            assert player.snapshot().alternate == _alternate(path, t)


def _alternate(path: Path, time: float) -> bool:
    with RecordingReader.open(path) as r:
        emu = TerminalEmulator(80, 24)
        for event in r.events():
            if event.time > time:
                break
            apply_event(emu, event)
        return emu.alternate


def test_seeking_without_keyframes_gives_the_same_screens(reader: RecordingReader) -> None:
    player = Player(reader, ManualClock())  # not indexed yet
    for t in (20.0, 3.0, 40.0):
        player.seek(t)
        assert player.snapshot().text() == full_replay(RECORDINGS / "s-vim.bastrec", t)


def test_next_and_previous_command_and_marker(reader: RecordingReader) -> None:
    player = indexed_player(reader, ManualClock())
    commands = player.command_times()
    assert [c for _, c in player.facts.commands][:3] == [
        "seq 1 30",
        "printf 'before vim\\n'",
        "vim -u NONE -i NONE -N notes.txt",
    ]
    assert player.next_time(commands) == commands[0]
    player.seek(commands[1])
    assert player.next_time(commands) == commands[2]
    assert player.previous_time(commands) == commands[0]
    assert player.facts.markers == [(player.marker_times()[0], "grant ends in 5 minutes")]
    assert commands[2] < player.marker_times()[0] < commands[3]
    player.seek(commands[2])
    assert "vim -u NONE" in player.snapshot().text()[-1]


def test_typed_overlay_shows_keys_before_the_position(reader: RecordingReader) -> None:
    player = indexed_player(reader, ManualClock())
    player.seek(player.command_times()[0])
    assert player.typed_before() == "seq 1 30⏎"
    player.seek(player.command_times()[3])
    assert player.typed_before().endswith("iHello, bastion!<ESC>:q!⏎")


def test_database_facts_list_queries() -> None:
    with RecordingReader.open(RECORDINGS / "s-pg.bastrec") as r:
        _, facts = scan_recording(r)
    assert [q["sql"] for q in facts.queries][:2] == [
        "BEGIN",
        "SELECT id, email FROM customers WHERE id = $1",
    ]
    assert facts.queries[3]["error"]["sqlstate"] == "42501"
    assert sum(facts.density) == len(facts.queries) == 7


def test_keyframe_store_round_trips_and_rejects_damage(reader: RecordingReader) -> None:
    store, _ = scan_recording(reader, identity="id-1")
    data = store.encode()
    again = KeyframeStore.decode(data, "id-1")
    assert again.times == store.times and again.blobs == store.blobs
    assert again.seek(reader, 30.0).text() == store.seek(reader, 30.0).text()
    with pytest.raises(KeyframeError, match="another version"):
        KeyframeStore.decode(data, "id-2")
    for bad in (data[:-3], data + b"x", b"junk", data[:30]):
        with pytest.raises(KeyframeError):
            KeyframeStore.decode(bad)
    broken = KeyframeStore(
        80, 24, store.times, store.skips, [b"\x28\xb5\x2f\xfd junk"] * len(store)
    )
    with pytest.raises(KeyframeError, match="corrupt keyframe"):
        broken.seek(reader, 30.0)


def test_cache_is_written_for_closed_recordings_and_reused(keyframe_cache: Path) -> None:
    path = RECORDINGS / "s-vim.bastrec"
    assert cache_dir() == keyframe_cache
    with RecordingReader.open(path) as r:
        store, facts = open_indexed(path, r)
    files = sorted(p.name for p in keyframe_cache.iterdir())
    assert len(files) == 2
    stamp = {p: p.stat().st_mtime_ns for p in keyframe_cache.iterdir()}
    with RecordingReader.open(path) as r:
        store2, facts2 = open_indexed(path, r)
    assert {p: p.stat().st_mtime_ns for p in keyframe_cache.iterdir()} == stamp  # not rebuilt
    assert store2.times == store.times and facts2.commands == facts.commands
    # a damaged cache file is rebuilt, not trusted
    kf = next(p for p in keyframe_cache.iterdir() if p.suffix == ".keyframes")
    kf.write_bytes(b"garbage")
    with RecordingReader.open(path) as r:
        store3, _ = open_indexed(path, r)
    assert store3.times == store.times
    assert kf.read_bytes() != b"garbage"


def test_cache_is_not_written_for_a_recording_still_being_written(
    tmp_path: Path, keyframe_cache: Path
) -> None:
    whole = (RECORDINGS / "s-vim.bastrec").read_bytes()
    cut = tmp_path / "live.bastrec"
    cut.write_bytes(whole[: len(whole) // 2])  # no trailer: like a live recording
    with RecordingReader.open(cut) as r:
        assert not r.complete
        open_indexed(cut, r)
    assert not keyframe_cache.exists() or not os.listdir(keyframe_cache)


@pytest.mark.parametrize("name", ["s-vim", "s-htop"])
def test_fast_play_crossing_keyframes_shows_the_right_screens(name: str) -> None:
    path = RECORDINGS / f"{name}.bastrec"
    with RecordingReader.open(path) as r:
        clock = ManualClock()
        player = indexed_player(r, clock)
        player.idle_limit = None
        player.speed = 16.0
        player.play()
        while player.playing:
            clock.advance(0.25)  # 4 s of session per frame: crosses keyframes
            player.tick()
            assert player.snapshot().text() == full_replay(path, player.position)
        assert player.position == player.duration
