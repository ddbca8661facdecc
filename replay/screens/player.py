"""The player: a recorded session's screen (or query timeline) with transport controls.

The screen only draws; ``replay.playback.Player`` decides what the session showed at
each moment. Opening reads the header and index in a worker thread; a second worker
builds (or loads from the cache) the keyframes and facts with its own reader, since a
file reader is not shared between threads. Until they arrive, playing and seeking
forward work; seeking back restarts from the beginning.

Terminal sessions show the emulated screen; database sessions (``pg.query`` events)
show the query table, whose filter (``/``) narrows what ``n``/``p`` walk through.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from recorder import RecordingError, RecordingReader
from replay.cache import open_indexed
from replay.clock import Clock
from replay.formatting import format_offset, one_line
from replay.keyframe_store import KeyframeStore
from replay.keyframes import KeyframeError
from replay.opening import RecordingOpener, open_reader
from replay.playback import Player
from replay.recording_facts import IndexingStopped, RecordingFacts
from replay.screens.dialogs import JumpDialog
from replay.screens.help import HelpScreen
from replay.widgets.query_table import QueryTable
from replay.widgets.terminal_view import TerminalView
from replay.widgets.timeline import Timeline

__all__ = ["PlayerScreen"]

_FPS = 20
_SEEK = Binding.Group("seek", compact=True)
_SPEED = Binding.Group("speed", compact=True)
_CMD = Binding.Group("cmd", compact=True)
_MARK = Binding.Group("mark", compact=True)


class PlayerScreen(Screen[None]):
    """See the module docstring."""

    AUTO_FOCUS = ""  # keys belong to the player; only "/" focuses the query filter
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "play_pause", "Play", key_display="␣", tooltip="play or pause"),
        Binding("left", "skip(-5)", "-5s", group=_SEEK, key_display="←"),
        Binding("right", "skip(5)", "+5s", group=_SEEK, key_display="→"),
        Binding("shift+left", "skip(-60)", "-1m", group=_SEEK, key_display="⇧←"),
        Binding("shift+right", "skip(60)", "+1m", group=_SEEK, key_display="⇧→"),
        Binding("minus", "slower", "slower", group=_SPEED, key_display="-"),
        Binding("plus,equals_sign", "faster", "faster", group=_SPEED, key_display="+"),
        Binding("p", "command(-1)", "previous command/query", group=_CMD),
        Binding("n", "command(1)", "next command/query", group=_CMD),
        Binding("N", "command(-1, True)", "previous search match", group=_CMD, show=False),
        Binding(
            "left_square_bracket", "marker(-1)", "previous marker", group=_MARK, key_display="["
        ),
        Binding("right_square_bracket", "marker(1)", "next marker", group=_MARK, key_display="]"),
        Binding("g", "jump", "Jump", tooltip="jump to a session time"),
        Binding("i", "typed", "Typed", tooltip="show or hide what was typed"),
        Binding("s", "idle", "Idle", tooltip="skip idle gaps over 2 s on/off"),
        Binding("slash", "filter", "Find", key_display="/", tooltip="filter the query table"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("escape,q", "back", "Back"),
    ]

    def __init__(
        self,
        path: str,
        clock: Clock,
        *,
        title: str = "",
        start_at: float | None = None,
        idle_limit: float = 2.0,
        marker: str | None = None,
        opener: RecordingOpener | None = None,

        highlight: str | None = None,
        matches: tuple[float, ...] = (),
    ) -> None:
        """Play the recording at ``path``; ``start_at`` jumps there once indexed, or
        to the marker nearest it whose label begins with ``marker`` (an alert's).
        ``opener`` reads ``path`` (default: a local file; the console's also reads S3)."""
        super().__init__()
        self.path = path
        self.opener = opener
        self.clock = clock
        self.session_title = title
        self.start_at = start_at
        self.marker = marker
        self.highlight = highlight
        """A search's text: highlighted on screen; ``n``/``N`` step through ``matches``."""
        self.matches = sorted(matches)
        self.idle_limit = idle_limit
        self.player: Player | None = None
        self.database = False
        self.show_typed = False
        self.indexed = False
        self.problem = ""

    def compose(self) -> ComposeResult:
        """Status line, screen or query table, typed-input overlay, timeline, keys."""
        yield Static("opening…", id="info", classes="topbar")
        yield TerminalView(id="term", highlight=self.highlight)
        yield Input(placeholder="filter queries (Enter)", id="query-filter", compact=True)
        yield QueryTable(id="queries")
        yield Static("", id="typed")
        yield Timeline(id="timeline")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        """Hide the database parts, open the recording, start the frame timer."""
        for widget_id in ("#query-filter", "#queries", "#typed"):
            self.query_one(widget_id).display = False
        self.set_interval(1 / _FPS, self.tick)
        self.open_recording()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The query filter exists only for database sessions (hidden otherwise)."""
        if action == "filter" and not self.database:
            return False
        return True

    def on_unmount(self) -> None:
        """Close the recording."""
        if self.player is not None:
            self.player.reader.close()

    # -- opening ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="open")
    def open_recording(self) -> None:
        """Read the header and index, then build or load keyframes and facts."""
        try:
            reader = self._open()
            player = Player(reader, self.clock, idle_limit=self.idle_limit)
        except (OSError, RecordingError) as e:
            self.app.call_from_thread(self._failed, f"cannot open {self.path}: {e}")
            return
        worker = get_current_worker()
        if worker.is_cancelled:
            player.reader.close()
            return
        self.app.call_from_thread(self._opened, player)
        try:
            with self._open() as scan_reader:
                if self.opener is None:
                    store, facts = open_indexed(
                        self.path, scan_reader, stop=lambda: worker.is_cancelled
                    )
                else:
                    store, facts = open_indexed(
                        self.path,
                        scan_reader,
                        stop=lambda: worker.is_cancelled,
                        identity=self.opener.identity(self.path),
                    )
        except IndexingStopped:
            return
        except (OSError, RecordingError, KeyframeError) as e:
            self.app.call_from_thread(self._failed, f"cannot index {self.path}: {e}")
            return
        self.app.call_from_thread(self._indexed, store, facts)

    def _open(self) -> RecordingReader:
        """The recording at ``path``: a local file, or through the console's opener."""
        if self.opener is None:
            return RecordingReader.open(self.path)
        return open_reader(self.opener, self.path)

    def _failed(self, message: str) -> None:
        if not self.is_attached:
            return
        self.problem = message
        self.notify(message, severity="error", timeout=10, markup=False)
        self._update_info()

    def _opened(self, player: Player) -> None:
        if not self.is_attached:  # the screen was left while the file was opening
            player.reader.close()
            return
        self.player = player
        self.database = player.reader.header.meta.get("protocol") == "postgres"
        self._layout()
        self._redraw()

    def _indexed(self, store: KeyframeStore, facts: RecordingFacts) -> None:
        player = self.player
        if player is None or not self.is_attached:
            return
        player.set_index(store, facts)
        self.indexed = True
        self.database = self.database or bool(facts.queries)
        self._layout()
        if self.database:
            self.query_one(QueryTable).set_queries(facts.queries)
        times = player.query_times() if self.database else player.command_times()
        self.query_one(Timeline).update(
            player.duration, facts.density, times, player.marker_times()
        )
        at = self.start_at
        if self.marker is not None:
            at = player.marker_near(at, self.marker) or at
            self.marker = None
        if at is not None:
            player.seek(at)
            self.start_at = None
        self._redraw()

    def _layout(self) -> None:
        self.refresh_bindings()
        self.query_one(TerminalView).display = not self.database
        self.query_one(QueryTable).display = self.database
        self.query_one("#query-filter").display = self.database

    # -- drawing ------------------------------------------------------------------------

    def tick(self) -> None:
        """Frame timer: advance the player by the clock and redraw if anything moved."""
        if self.player is not None and self.player.tick():
            self._redraw()

    def _redraw(self) -> None:
        player = self.player
        if player is None:
            return
        if self.database:
            self.query_one(QueryTable).follow(player.position)
        else:
            self.query_one(TerminalView).show(player.snapshot())
        self.query_one(Timeline).move(player.position)
        typed = self.query_one("#typed", Static)
        typed.display = self.show_typed
        if self.show_typed:
            typed.update(Text("typed: " + (player.typed_before(300) or "(nothing yet)")))
        self._update_info()

    def _update_info(self) -> None:
        info = self.query_one("#info", Static)
        player = self.player
        if player is None:
            info.update(Text(self.problem or "opening…"))
            return
        state = "▶" if player.playing else "⏸"
        extra = [] if self.indexed else ["indexing…"]
        if player.idle_limit is None:
            extra.append("idle gaps played")
        if not self.database and self.query_one(TerminalView).clipped:
            extra.append("(clipped: enlarge the window)")
        text = (
            f"{state} {format_offset(player.position)} / {format_offset(player.duration)}"
            f"  {player.speed:g}x  {one_line(self.session_title, 40)}"
        )
        info.update(Text(" ".join([text, *extra])))

    # -- actions ------------------------------------------------------------------------

    def action_play_pause(self) -> None:
        """Play or pause."""
        if self.player is not None:
            self.player.toggle()
            self._redraw()

    def action_skip(self, seconds: float) -> None:
        """Seek relative to the position."""
        if self.player is not None:
            self.player.skip(seconds)
            self._redraw()

    def action_faster(self) -> None:
        """Double the speed (up to 16x)."""
        if self.player is not None:
            self.player.faster()
            self._redraw()

    def action_slower(self) -> None:
        """Halve the speed (down to 0.25x)."""
        if self.player is not None:
            self.player.slower()
            self._redraw()

    def _go(self, times: list[float], direction: int, what: str) -> None:
        player = self.player
        if player is None:
            return
        when = player.next_time(times) if direction > 0 else player.previous_time(times)
        if when is None:
            self.notify(
                f"no {'next' if direction > 0 else 'previous'} {what}", timeout=2, markup=False
            )
            return
        player.seek(when)
        self._redraw()

    def action_command(self, direction: int, match_only: bool = False) -> None:
        """Jump to the next/previous search match when opened from a search (``n``/``N``),
        else to the next/previous command (or shown query for databases)."""
        if self.player is None:
            return
        if self.matches:
            self._step_match(direction)
            return
        if match_only:
            return
        if self.database:
            self._go(self.query_one(QueryTable).times(), direction, "query")
        else:
            self._go(self.player.command_times(), direction, "command")

    def _step_match(self, direction: int) -> None:
        """The next/previous search match, exactly (matches may be milliseconds apart)."""
        player = self.player
        if player is None:
            return
        at = player.position
        if direction > 0:
            later = [t for t in self.matches if t > at + 1e-6]
            when = later[0] if later else None
        else:
            earlier = [t for t in self.matches if t < at - 1e-6]
            when = earlier[-1] if earlier else None
        if when is None:
            word = "next" if direction > 0 else "previous"
            self.notify(f"no {word} match", timeout=2, markup=False)
            return
        player.seek(when)
        self._redraw()

    def action_marker(self, direction: int) -> None:
        """Jump to the next/previous marker."""
        if self.player is not None:
            self._go(self.player.marker_times(), direction, "marker")

    def action_jump(self) -> None:
        """Ask for a time and seek there."""

        def done(when: float | None) -> None:
            if when is not None and self.player is not None:
                self.player.seek(when)
                self._redraw()

        self.app.push_screen(JumpDialog(), done)

    def action_typed(self) -> None:
        """Show or hide the typed-input overlay."""
        self.show_typed = not self.show_typed
        self._redraw()

    def action_idle(self) -> None:
        """Cut idle gaps to ``idle_limit`` seconds, or play them in full."""
        if self.player is not None:
            limit = self.player.idle_limit
            self.player.idle_limit = None if limit is not None else self.idle_limit
            self._redraw()

    def action_filter(self) -> None:
        """Focus the query filter (database sessions)."""
        if self.database:
            self.query_one("#query-filter", Input).focus()

    def action_help(self) -> None:
        """Show every key of the player."""
        self.app.push_screen(HelpScreen("Player", self.BINDINGS))

    def action_back(self) -> None:
        """Leave the query filter, else the player (quit when it is the only screen)."""
        if isinstance(self.focused, Input):
            self.set_focus(None)
            return
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()

    @on(Input.Submitted, "#query-filter")
    def filter_queries(self, event: Input.Submitted) -> None:
        """Apply the query filter and give the keys back to the player."""
        self.query_one(QueryTable).set_filter(event.value)
        self.set_focus(None)
        self._redraw()

    @on(QueryTable.Seek)
    @on(Timeline.Seek)
    def seek_to(self, event: QueryTable.Seek | Timeline.Seek) -> None:
        """Seek where the timeline or the query table says."""
        if self.player is not None:
            self.player.seek(event.offset)
            self._redraw()
