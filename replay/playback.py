"""The player's state machine, without any UI: position, speed, play/pause, seeking.

Why separate from the screen: every rule of playback (how far a tick moves, idle
gaps, where "next command" lands, what a seek restores) is decided here from a
recording reader, keyframes and an injected clock, so it is tested without a
terminal and the Textual screen only draws ``snapshot()``.

Moving forward applies the events between the old and the new position to the live
emulator; moving backwards, or forwards past a keyframe, restores the nearest
keyframe and feeds only what follows it, so no seek or frame feeds more than one
keyframe interval of output (playing fast through heavy output skips screens rather
than freezing the console).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from recorder import Event, RecordingReader
from replay.clock import Clock
from replay.formatting import visible_keys
from replay.keyframe_store import KeyframeStore, events_after
from replay.keyframes import apply_event
from replay.recording_facts import RecordingFacts, header_size
from replay.terminal import ScreenSnapshot, TerminalEmulator

__all__ = ["SPEEDS", "Player"]

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


class Player:
    """Plays one recording on a clock; see the module docstring."""

    def __init__(
        self,
        reader: RecordingReader,
        clock: Clock,
        *,
        idle_limit: float | None = 2.0,
    ) -> None:
        """A paused player at the start of ``reader``.

        ``idle_limit``: while playing, a pause in the session longer than this many
        seconds is cut to that length (None plays gaps in full).
        """
        self.reader = reader
        self.clock = clock
        self.idle_limit = idle_limit
        self.cols, self.rows = header_size(reader)
        self.duration = reader.duration
        self.position = 0.0
        self.playing = False
        self.speed = 1.0
        self.keyframes: KeyframeStore | None = None
        self.facts = RecordingFacts(duration=self.duration)
        self.emulator = TerminalEmulator(self.cols, self.rows)
        self._last_tick = clock.now()
        self._last_event_time = 0.0
        self._events: Iterator[Event] = iter(())
        self._pending: Event | None = None
        self._restart(self.emulator, 0.0, include_start=True)

    # -- indexing -----------------------------------------------------------------------

    def set_index(self, keyframes: KeyframeStore, facts: RecordingFacts) -> None:
        """Install the keyframes and facts built (in a worker) after opening."""
        self.keyframes, self.facts = keyframes, facts
        self.duration = max(self.duration, facts.duration)

    # -- controls -----------------------------------------------------------------------

    def play(self) -> None:
        """Start (or restart from the beginning when at the end)."""
        if self.position >= self.duration:
            self.seek(0.0)
        self.playing = True
        self._last_tick = self.clock.now()

    def pause(self) -> None:
        """Stop advancing."""
        self.playing = False

    def toggle(self) -> None:
        """Play if paused, pause if playing."""
        if self.playing:
            self.pause()
        else:
            self.play()

    def faster(self) -> float:
        """Next speed up (at most 16x); returns the speed."""
        i = bisect.bisect_right(SPEEDS, self.speed)
        self.speed = SPEEDS[min(i, len(SPEEDS) - 1)]
        return self.speed

    def slower(self) -> float:
        """Next speed down (at least 0.25x); returns the speed."""
        i = bisect.bisect_left(SPEEDS, self.speed) - 1
        self.speed = SPEEDS[max(i, 0)]
        return self.speed

    def tick(self) -> bool:
        """Advance by the clock's movement times the speed; True if the screen may change."""
        now = self.clock.now()
        elapsed, self._last_tick = now - self._last_tick, now
        if not self.playing or elapsed <= 0:
            return False
        target = self.position + elapsed * self.speed
        limit = self.idle_limit
        pending = self._pending
        if limit is not None and pending is not None and pending.time > target:
            # inside a gap: once it has lasted ``limit``, jump to the next event
            if target - self._last_event_time >= limit:
                target = pending.time
        if target >= self.duration:
            target = self.duration
            self.playing = False
        self.seek(target)  # past a keyframe (fast play of heavy output): restore, not feed
        return True

    def seek(self, time: float) -> None:
        """Show the screen at session time ``time`` (clamped to the recording)."""
        time = min(max(0.0, time), self.duration)
        keyframes = self.keyframes
        if time >= self.position and (
            keyframes is None
            or bisect.bisect_right(keyframes.times, time)
            == bisect.bisect_right(keyframes.times, self.position)
        ):
            self._advance(time)  # no keyframe on the way: feeding is the cheapest
            return
        if keyframes is not None:
            emu = keyframes.seek(self.reader, time)
        else:
            emu = TerminalEmulator(self.cols, self.rows)
            for event in self.reader.events(0.0):
                if event.time > time:
                    break
                apply_event(emu, event)
        self._restart(emu, time)

    def skip(self, seconds: float) -> None:
        """Seek relative to the current position (negative: back)."""
        self.seek(self.position + seconds)

    # -- navigation ---------------------------------------------------------------------

    def next_time(self, times: list[float]) -> float | None:
        """The first of ``times`` (sorted) after the position."""
        i = bisect.bisect_right(times, self.position + 1e-6)
        return times[i] if i < len(times) else None

    def previous_time(self, times: list[float]) -> float | None:
        """The last of ``times`` (sorted) before the position (with 0.5 s of slack, so
        pressing twice walks back instead of landing on the same one)."""
        i = bisect.bisect_left(times, self.position - 0.5) - 1
        return times[i] if i >= 0 else None

    def command_times(self) -> list[float]:
        """When each typed command was entered."""
        return [t for t, _ in self.facts.commands]

    def marker_times(self) -> list[float]:
        """When each marker was set."""
        return [t for t, _ in self.facts.markers]

    def marker_near(self, time: float | None, prefix: str) -> float | None:
        """When the marker labelled ``prefix…`` nearest to ``time`` was set (the first
        such marker when ``time`` is None); None if there is none."""
        found = [t for t, label in self.facts.markers if label.startswith(prefix)]
        if not found:
            return None
        return found[0] if time is None else min(found, key=lambda t: abs(t - time))

    def query_times(self) -> list[float]:
        """When each database query started."""
        return [float(q.get("start", 0.0)) for q in self.facts.queries]

    def typed_before(self, limit: int = 200) -> str:
        """The last ``limit`` characters typed up to the position, control keys shown
        as ``^X`` / ``<ESC>`` so the overlay cannot drive the console's terminal."""
        times = [t for t, _ in self.facts.inputs]
        end = bisect.bisect_right(times, self.position)
        chunks: list[str] = []
        size = 0
        for _, data in reversed(self.facts.inputs[:end]):
            text = visible_keys(data.decode("utf-8", "replace"))
            chunks.append(text)
            size += len(text)
            if size >= limit:
                break
        return "".join(reversed(chunks))[-limit:]

    def snapshot(self) -> ScreenSnapshot:
        """What the screen shows at the position."""
        return self.emulator.snapshot()

    # -- internals ----------------------------------------------------------------------

    def _advance(self, time: float) -> None:
        pending = self._pending
        while pending is not None and pending.time <= time:
            apply_event(self.emulator, pending)
            self._last_event_time = pending.time
            pending = next(self._events, None)
        self._pending = pending
        self.position = time

    def _restart(self, emu: TerminalEmulator, time: float, include_start: bool = False) -> None:
        """Continue with ``emu`` (the state after every event <= ``time``)."""
        self.emulator = emu
        self.position = time
        self._last_event_time = time
        if include_start:
            self._events = self.reader.events(time)
        else:
            self._events = events_after(self.reader, time)
        self._pending = next(self._events, None)
        if include_start:  # nothing applied yet: events at exactly ``time`` are pending
            self.position = time - 1e-9 if time > 0 else 0.0
            self._advance(time)
