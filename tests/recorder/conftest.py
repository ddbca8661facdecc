"""Fixtures for recorder tests: a signing key, a fake clock, ready-made recordings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import Event, RecordingSummary, RecordingWriter, WriterPolicy
from recorder.events import Exit, Input, Marker, Output, Resize, Structured

WALL_START = 1_732_838_400.0  # 2024-11-29T00:00:00Z


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class Recorded:
    """A recording made by ``make_recording`` and the events that went into it."""

    path: Path
    summary: RecordingSummary | None
    events: list[Event] = field(default_factory=list)


@pytest.fixture(scope="session")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def fast_policy(**kw: object) -> WriterPolicy:
    """Defaults for tests: no fsync (speed), otherwise the real bounds."""
    kw.setdefault("fsync_interval", None)
    return WriterPolicy(**kw)  # type: ignore[arg-type]


def write_events(w: RecordingWriter, clock: FakeClock, events: list[Event]) -> None:
    """Feed events to ``w`` at their times (relative to the writer's start), ticking."""
    t0 = clock.now
    for ev in events:
        clock.now = t0 + ev.time
        w.tick()
        if isinstance(ev, Output):
            w.output(ev.data)
        elif isinstance(ev, Input):
            w.input(ev.data)
        elif isinstance(ev, Resize):
            w.resize(ev.cols, ev.rows)
        elif isinstance(ev, Marker):
            w.marker(ev.label)
        elif isinstance(ev, Exit):
            w.exit(ev.status, ev.signal)
        else:
            w.event(ev.name, ev.payload)


def sample_events(n: int = 300, step: float = 0.37) -> list[Event]:
    """A varied, deterministic session: every kind, non-UTF-8 bytes, bursts."""
    events: list[Event] = [Resize(0.0, 80, 24)]
    for i in range(n):
        t = round((i + 1) * step, 6)
        if i % 7 == 0:
            events.append(Input(t, b"ls -l\r"))
        if i % 50 == 25:
            events.append(Output(t, bytes(range(256)) * 40))  # bulk, not UTF-8
        events.append(Output(t, f"line {i} \x1b[1;3{i % 8}mcolour\x1b[0m é\r\n".encode()))
        if i % 97 == 0:
            events.append(Marker(t, f"mark {i}"))
        if i % 61 == 0:
            events.append(Structured(t, "query", {"sql": f"select {i}", "params": [i, None]}))
    events.append(Exit(round((n + 1) * step, 6), status=0))
    return events


@pytest.fixture
def make_recording(tmp_path: Path, key: Ed25519PrivateKey) -> Callable[..., Recorded]:
    counter = iter(range(1_000_000))

    def make(
        events: list[Event] | None = None,
        *,
        session_id: str | None = None,
        close: bool = True,
        policy: WriterPolicy | None = None,
        meta: dict[str, object] | None = None,
    ) -> Recorded:
        events = sample_events() if events is None else events
        sid = session_id or f"sess-{next(counter)}"
        path = tmp_path / f"{sid}.bastrec"
        clock = FakeClock()
        w = RecordingWriter.create(
            path,
            sid,
            meta or {"user": "alice", "target": "web1", "cols": 80, "rows": 24},
            key,
            clock=clock,
            wall_clock=lambda: WALL_START,
            policy=policy or fast_policy(chunk_bytes=8192, checkpoint_chunks=4),
        )
        write_events(w, clock, events)
        summary = None
        if close:
            clock.advance(0.5)
            summary = w.close("client disconnected")
        else:
            clock.advance(10)
            w.tick()
            w.abort()
        return Recorded(path, summary, events)

    return make
