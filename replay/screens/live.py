"""The live view: a session's current screen, then everything it shows as it happens.

The node sends a ``Snapshot`` first (bytes that rebuild the current screen on a fresh
emulator, however much output came before), then the live events. An async worker
feeds them to the emulator as they arrive; a 20 fps timer redraws only if something
changed, so a session dumping megabytes does not queue thousands of repaints.

Admins can terminate the session (the reason is shown to the contractor) or lock the
user; both go through the node, which audits them. Auditors see neither key.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from bastion.pg.query_event import QueryEvent
from replay.formatting import format_offset, one_line, visible_keys
from replay.screens.dialogs import ReasonDialog
from replay.screens.help import HelpScreen
from replay.source import (
    LiveEnd,
    LiveEvent,
    LiveInput,
    LiveMarker,
    LiveOutput,
    LiveQuery,
    LiveResize,
    SessionInfo,
    SessionSource,
    Snapshot,
    SourceError,
)
from replay.terminal import TerminalEmulator
from replay.widgets.query_table import QueryTable
from replay.widgets.terminal_view import TerminalView

__all__ = ["LiveScreen"]

_FPS = 20
_TYPED_KEEP = 2000


class LiveScreen(Screen[None]):
    """See the module docstring."""

    AUTO_FOCUS = ""  # no widget takes the keys from the screen
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "terminate", "Terminate", tooltip="end the session (asks for a reason)"),
        Binding("L", "lock", "Lock user", tooltip="lock the user and end their sessions"),
        Binding("i", "typed", "Typed", tooltip="show or hide what is being typed"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("escape,q", "back", "Back"),
    ]

    def __init__(self, source: SessionSource, session: SessionInfo, *, admin: bool) -> None:
        """Watch ``session``; ``admin`` enables terminate and lock."""
        super().__init__()
        self.source = source
        self.session = session
        self.admin = admin
        self.emulator = TerminalEmulator(80, 24)
        self.database = session.protocol == "postgres"
        self.session_offset = 0.0
        self.typed = ""
        self.show_typed = False
        self.ended: str | None = None
        self.started = False
        self.dirty = True

    def compose(self) -> ComposeResult:
        """Status line, screen or query table, typed overlay, keys."""
        yield Static("connecting…", id="info", classes="topbar")
        yield TerminalView(id="term")
        yield QueryTable(id="queries")
        yield Static("", id="typed")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        """Show the right view, start following and the frame timer."""
        self.query_one(TerminalView).display = not self.database
        self.query_one(QueryTable).display = self.database
        self.query_one("#typed").display = False
        self.set_interval(1 / _FPS, self.flush)
        self.follow()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Terminate and lock exist only for admins (hidden for auditors); terminate is
        disabled (shown dimmed) once the session has ended."""
        if action in ("terminate", "lock") and not self.admin:
            return False
        if action == "terminate" and self.ended is not None:
            return None
        return True

    # -- following ----------------------------------------------------------------------

    @work(exclusive=True, group="watch")
    async def follow(self) -> None:
        """Feed the watch stream into the emulator until the session ends."""
        try:
            async for event in self.source.watch(self.session.id):
                self.apply(event)
        except SourceError as e:
            self.notify(str(e), severity="error", timeout=10, markup=False)
            self.ended = self.ended or f"watch failed: {e}"
            self.dirty = True
        if self.ended is None:
            self.ended = "stream closed"
            self.dirty = True
        self.refresh_bindings()

    def apply(self, event: LiveEvent) -> None:
        """Apply one live event (snapshot, output, input, resize, marker, query, end)."""
        if isinstance(event, Snapshot):
            self.emulator = TerminalEmulator(event.cols, event.rows)
            self.emulator.feed(event.screen_bytes)
            self.session_offset = event.offset
            self.started = True
            if event.queries:
                self.query_one(QueryTable).set_queries(list(event.queries))
        elif isinstance(event, LiveOutput):
            self.emulator.feed(event.data)
            self.session_offset = event.offset
        elif isinstance(event, LiveInput):
            self.typed = (self.typed + event.data.decode("utf-8", "replace"))[-_TYPED_KEEP:]
            self.session_offset = event.offset
        elif isinstance(event, LiveResize):
            self.emulator.resize(event.cols, event.rows)
            self.session_offset = event.offset
        elif isinstance(event, LiveMarker):
            self.notify(one_line(event.label, 80), title="marker", timeout=4, markup=False)
        elif isinstance(event, LiveQuery):
            query = QueryEvent.from_payload(event.payload, event.offset)
            if query is not None:
                self.query_one(QueryTable).add_query(query.to_payload())
            self.session_offset = event.offset
        elif isinstance(event, LiveEnd):
            self.ended = event.reason
            self.refresh_bindings()
        self.dirty = True

    def flush(self) -> None:
        """Frame timer: redraw if events arrived since the last frame."""
        if not self.dirty:
            return
        self.dirty = False
        if not self.database:
            self.query_one(TerminalView).show(self.emulator.snapshot())
        typed = self.query_one("#typed", Static)
        typed.display = self.show_typed
        if self.show_typed:
            typed.update(Text("typed: " + visible_keys(self.typed[-300:])))
        s = self.session
        state = f"ENDED: {one_line(self.ended, 30)}" if self.ended is not None else "● LIVE"
        if not self.started and self.ended is None:
            state = "connecting…"
        self.query_one("#info", Static).update(
            Text(
                f"{state}  {s.user}@{s.target} ({s.protocol})  "
                f"{format_offset(self.session_offset)}  {s.id}"
            )
        )

    def screen_text(self) -> list[str]:
        """The screen as plain lines (what the contractor's terminal shows)."""
        return self.emulator.text()

    # -- actions ------------------------------------------------------------------------

    def action_terminate(self) -> None:
        """Ask for a reason, then end the session through the node."""
        title = f"Terminate {self.session.user}'s session on {self.session.target}?"

        def done(reason: str | None) -> None:
            if reason:
                self.run_request("terminate", reason)

        self.app.push_screen(ReasonDialog(title, "Terminate"), done)

    def action_lock(self) -> None:
        """Ask for a reason, then lock the user (which also ends their sessions)."""
        title = f"Lock user {self.session.user} and end all their sessions?"

        def done(reason: str | None) -> None:
            if reason:
                self.run_request("lock", reason)

        self.app.push_screen(ReasonDialog(title, "Lock"), done)

    @work(group="request")
    async def run_request(self, what: str, reason: str) -> None:
        """Send terminate or lock to the node and report the outcome."""
        try:
            if what == "terminate":
                await self.source.terminate(self.session.id, reason)
                self.notify(f"terminate sent: {reason}", timeout=4, markup=False)
            else:
                await self.source.lock_user(self.session.user, reason)
                self.notify(f"user {self.session.user} locked", timeout=4, markup=False)
        except SourceError as e:
            self.notify(str(e), severity="error", timeout=10, markup=False)

    def action_typed(self) -> None:
        """Show or hide what the contractor types."""
        self.show_typed = not self.show_typed
        self.dirty = True

    def action_help(self) -> None:
        """Show every key of the live view."""
        self.app.push_screen(HelpScreen("Live view", self.BINDINGS))

    def action_back(self) -> None:
        """Stop watching (quit when it is the only screen)."""
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()
