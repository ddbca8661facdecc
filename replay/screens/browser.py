"""The sessions browser: live and past sessions in one table, filters, full-text search.

Filters (user, target, since, until, live only) go to the node as ``list_sessions``
arguments; search (``/``) asks the node for commands and queries containing the text
and lists the hits, each of which opens the player at its moment. Enter on a session
opens the player; on a live session an admin gets the live view instead (``w``
always watches). The status line counts pending access requests; ``p`` opens them.
``u`` shows the effective access of the selected session's user.
A live session with alerts shows their count where its end reason will be; ``a``
opens the alerts view.
Requests run in async workers, so a slow node never freezes keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from replay.formatting import (
    format_bytes,
    format_duration,
    format_offset,
    format_when,
    one_line,
    parse_when,
)
from replay.messages import OpenAccess, OpenAlerts, OpenLive, OpenPlayer, OpenRequests
from replay.screens.help import HelpScreen
from replay.source import SearchHit, SessionInfo, SessionSource, SourceError

__all__ = ["BrowserScreen", "session_row"]


_SESSION_COLUMNS = (
    ("", 4),
    ("user", 9),
    ("target", 9),
    ("via", 3),
    ("start UTC", 11),
    ("length", 6),
    ("volume", 6),
    ("end", 16),
)
"""Fixed widths that fit 80 columns (cells are cut to them): the table does not jump
on every reload, and DataTable never redraws rows with stale auto-widths."""
_LIVE = Text("LIVE", style="bold white on dark_red")
_HIT_COLUMNS = (("at", 8), ("user", 9), ("target", 9), ("text", 44))


@dataclass(frozen=True)
class Filters:
    """What the filter inputs say (None: not filtered)."""

    user: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None


def session_row(s: SessionInfo, now: float) -> tuple[str | Text, ...]:
    """The table cells of one session (``now`` gives a live session's duration)."""
    end = s.ended_at if s.ended_at is not None else now
    volume = (
        f"{s.events} ev" if s.protocol == "postgres" else format_bytes(s.bytes_in + s.bytes_out)
    )
    return (
        _LIVE if s.live else "",
        Text(one_line(s.user, 9)),
        Text(one_line(s.target, 9)),
        "pg" if s.protocol == "postgres" else s.protocol,
        format_when(s.started_at)[5:16],
        format_duration(end - s.started_at),
        volume,
        _flag(s.alerts) if s.live and s.alerts else Text(one_line(s.end_reason or "", 16)),
    )


def _flag(alerts: int) -> Text:
    """A live session's alerts so far, in the column its end reason will take."""
    return Text(f"! {alerts} alert{'s' if alerts != 1 else ''}", style="bold black on yellow")


class BrowserScreen(Screen[None]):
    """See the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=False),
        Binding("w", "watch", "Watch", tooltip="watch the selected live session"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("f", "filter", "Filter", tooltip="edit the user/target/date filters"),
        Binding("l", "live_only", "Live only", tooltip="show only live sessions, or all"),
        Binding("r", "reload", "Reload"),
        Binding("p", "requests", "Requests", tooltip="the access requests (pending first)"),
        Binding(
            "u",
            "access",
            "Access",
            tooltip="what the selected session's user can reach now",
            show=False,
        ),
        Binding("a", "alerts", "Alerts", tooltip="alerts and policy decisions, newest first"),
        Binding("escape", "clear", "Clear", tooltip="clear the search results", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        source: SessionSource,
        *,
        admin: bool,
        wall_clock: Callable[[], float],
        live_only: bool = False,
        refresh_interval: float | None = 5.0,
    ) -> None:
        """Browse ``source``; ``wall_clock`` gives "now" (frozen in tests)."""
        super().__init__()
        self.source = source
        self.admin = admin
        self.wall_clock = wall_clock
        self.live_only = live_only
        self.refresh_interval = refresh_interval
        self.sessions: dict[str, SessionInfo] = {}
        self.hits: list[SearchHit] = []
        self.searched = ""
        """The text of the last search (highlighted in the player it opens)."""
        self.filters = Filters()
        self.pending_requests: int | None = None
        """Pending access requests at the last reload (None: the node did not say)."""

    def compose(self) -> ComposeResult:
        """Filters, search box, sessions table, search hits, status, keys."""
        yield Static("", id="info", classes="topbar")
        with Horizontal(id="filters"):
            yield Input(placeholder="user", id="f-user", compact=True)
            yield Input(placeholder="target", id="f-target", compact=True)
            yield Input(placeholder="since 2h|YYYY-MM-DD", id="f-since", compact=True)
            yield Input(placeholder="until", id="f-until", compact=True)
        yield Input(placeholder="/ search commands and queries", id="search", compact=True)
        sessions: DataTable[str | Text] = DataTable(
            id="sessions", cursor_type="row", zebra_stripes=True
        )
        yield sessions
        hits: DataTable[str] = DataTable(id="hits", cursor_type="row")
        yield hits
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        """Columns, first load, periodic reload."""
        table = self.query_one("#sessions", DataTable)
        for label, width in _SESSION_COLUMNS:
            table.add_column(label, width=width)
        hits = self.query_one("#hits", DataTable)
        for label, width in _HIT_COLUMNS:
            hits.add_column(label, width=width)
        hits.display = False
        table.focus()
        self.reload()
        self.count_requests()
        if self.refresh_interval:
            self.set_interval(self.refresh_interval, self.reload)
            self.set_interval(self.refresh_interval, self.count_requests)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Watching is for admins only."""
        if action == "watch" and not self.admin:
            return False
        return True

    # -- loading ------------------------------------------------------------------------

    def _read_filters(self) -> bool:
        now = self.wall_clock()

        def text(key: str) -> str | None:
            return self.query_one(f"#f-{key}", Input).value.strip() or None

        try:
            since, until = (text(k) for k in ("since", "until"))
            self.filters = Filters(
                user=text("user"),
                target=text("target"),
                since=parse_when(since, now) if since else None,
                until=parse_when(until, now) if until else None,
            )
        except ValueError as e:
            self.notify(str(e), severity="error", timeout=8, markup=False)
            return False
        return True

    def _status(self) -> None:
        parts = [f"{len(self.sessions)} sessions"]
        if self.live_only:
            parts.append("live only")
        f = self.filters
        parts += [f"{k}={v}" for k, v in (("user", f.user), ("target", f.target)) if v]
        parts += [f"{k} {format_when(v)}" for k, v in (("since", f.since), ("until", f.until)) if v]
        if self.hits:
            parts.append(f"{len(self.hits)} search hits")
        if self.pending_requests:
            n = self.pending_requests
            parts.append(f"{n} pending request{'s' if n != 1 else ''} (p)")
        self.query_one("#info", Static).update(Text("bastion sessions · " + " · ".join(parts)))

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        """Ask the node for the sessions matching the filters and refill the table."""
        f = self.filters
        try:
            sessions = await self.source.list_sessions(
                live=True if self.live_only else None,
                user=f.user,
                target=f.target,
                since=f.since,
                until=f.until,
            )
        except SourceError as e:
            self.notify(str(e), severity="error", timeout=10, markup=False)
            return
        table = self.query_one("#sessions", DataTable)
        selected = self._selected_id()
        now = self.wall_clock()
        table.clear()
        self.sessions = {s.id: s for s in sessions}
        for s in sessions:
            table.add_row(*session_row(s, now), key=s.id)
        if selected in self.sessions:
            table.move_cursor(row=table.get_row_index(selected), animate=False)
        self._status()

    @work(exclusive=True, group="requests")
    async def count_requests(self) -> None:
        """How many access requests wait for a decision (silent if the node cannot say)."""
        try:
            pending = await self.source.list_requests(pending_only=True)
        except SourceError:
            return
        self.pending_requests = len(pending)
        self._status()

    def on_screen_resume(self) -> None:
        """Back from another screen (e.g. after deciding requests): count again."""
        if self.is_mounted:
            self.count_requests()

    @work(exclusive=True, group="search")
    async def run_search(self, text: str) -> None:
        """Full-text search; the hits replace the sessions table until cleared."""
        f = self.filters
        try:
            hits = await self.source.search(
                text,
                user=f.user,
                target=f.target,
                since=f.since,
            )
        except SourceError as e:
            self.notify(str(e), severity="error", timeout=10, markup=False)
            return
        self.hits = hits
        self.searched = text
        table = self.query_one("#hits", DataTable)
        table.clear()
        for i, h in enumerate(hits):
            table.add_row(
                format_offset(h.offset),
                Text(one_line(h.user, 9)),
                Text(one_line(h.target, 9)),
                Text(one_line(h.text, 44)),
                key=str(i),
            )
        table.display = True
        self.query_one("#sessions").display = False
        table.focus()
        if not hits:
            self.notify(f"nothing found for {text!r}", timeout=4, markup=False)
        self._status()

    def _selected_id(self) -> str | None:
        table = self.query_one("#sessions", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return key.value

    # -- events and actions -------------------------------------------------------------

    @on(Input.Submitted, "#filters Input")
    def filters_submitted(self) -> None:
        """Apply the filters and reload."""
        if self._read_filters():
            self.reload()
            self.query_one("#sessions").focus()

    @on(Input.Submitted, "#search")
    def search_submitted(self, event: Input.Submitted) -> None:
        """Search for the text (an empty search clears the hits)."""
        text = event.value.strip()
        if not text:
            self.action_clear()
            return
        if self._read_filters():
            self.run_search(text)

    @on(DataTable.RowSelected, "#sessions")
    def session_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a session: live view for a live one (admins), else the player."""
        self.action_open()

    @on(DataTable.RowSelected, "#hits")
    def hit_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a search hit: the player at the hit's moment."""
        index = int(event.row_key.value or 0)
        if 0 <= index < len(self.hits):
            hit = self.hits[index]
            matches = tuple(sorted({h.offset for h in self.hits if h.session_id == hit.session_id}))
            self.post_message(
                OpenPlayer(
                    hit.session_id,
                    one_line(hit.text, 40),
                    hit.offset,
                    highlight=self.searched or None,
                    matches=matches,
                )  # fmt: skip
            )

    def action_open(self) -> None:
        """Open the selected session."""
        session = self.sessions.get(self._selected_id() or "")
        if session is None:
            return
        if session.live and self.admin:
            self.post_message(OpenLive(session))
        else:
            self.post_message(OpenPlayer(session.id, f"{session.user}@{session.target}"))

    def action_watch(self) -> None:
        """Watch the selected live session."""
        session = self.sessions.get(self._selected_id() or "")
        if session is None or not session.live:
            self.notify("select a live session to watch", timeout=3, markup=False)
            return
        self.post_message(OpenLive(session))

    def action_reload(self) -> None:
        """Ask the node again (sessions and the pending count)."""
        self.reload()
        self.count_requests()

    def action_requests(self) -> None:
        """Open the access requests."""
        self.post_message(OpenRequests())

    def action_access(self) -> None:
        """Open the effective access of the selected session's user."""
        session = self.sessions.get(self._selected_id() or "")
        if session is None:
            self.notify("select a session to see its user's access", timeout=3, markup=False)
            return
        self.post_message(OpenAccess(session.user))

    def action_alerts(self) -> None:
        """Open the alerts."""
        self.post_message(OpenAlerts())

    def action_search(self) -> None:
        """Focus the search box."""
        self.query_one("#search", Input).focus()

    def action_filter(self) -> None:
        """Focus the first filter."""
        self.query_one("#f-user", Input).focus()

    def action_live_only(self) -> None:
        """Toggle between live sessions only and all sessions."""
        self.live_only = not self.live_only
        self.reload()

    def action_clear(self) -> None:
        """Hide the search hits and go back to the sessions table."""
        self.hits = []
        self.query_one("#hits").display = False
        self.query_one("#sessions").display = True
        self.query_one("#sessions").focus()
        self._status()

    def action_help(self) -> None:
        """Show every key of the browser."""
        self.app.push_screen(HelpScreen("Sessions", self.BINDINGS))

    def action_quit(self) -> None:
        """Quit the console."""
        self.app.exit()
