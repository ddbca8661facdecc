"""Alerts: every ``alert.*`` and ``policy.*`` audit row, newest first, one per line.

The node reads them from the audit log (``list_alerts``), so alerts of sessions on
other nodes and from before a restart are here too. Enter on one opens its session:
the live view while the session runs (admins), else the player at the alert's
marker. Alerts without a session (wrong MFA codes, a new source network, off-hours
logins happen before a session exists) have nothing to open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from replay.formatting import format_when, one_line
from replay.messages import OpenLive, OpenPlayer
from replay.screens.help import HelpScreen
from replay.source import AlertInfo, SessionSource, SourceError

__all__ = ["AlertsScreen", "alert_row"]

_COLUMNS = (
    ("when UTC", 11),
    ("user", 9),
    ("target", 9),
    ("alert", 18),
    ("what", 23),
)
"""Fixed widths that fit 80 columns, like the sessions browser's."""
_LIVE = Text("LIVE", style="bold white on dark_red")


def alert_row(a: AlertInfo) -> tuple[Text, ...]:
    """The table cells of one alert."""
    style = "bold red" if a.action.startswith("policy.") else "bold yellow"
    name = Text(one_line(a.action, 18), style=style)
    if a.live:
        name = Text.assemble(_LIVE, " ", Text(one_line(a.action, 13), style=style))
    return (
        Text(format_when(a.at)[5:16]),
        Text(one_line(a.user, 9)),
        Text(one_line(a.target or "-", 9)),
        name,
        Text(one_line(a.what, 23)),
    )


class AlertsScreen(Screen[None]):
    """See the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", tooltip="the session: live view or player at the alert"),
        Binding("r", "reload", "Reload"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("escape,q", "back", "Back"),
    ]

    def __init__(
        self,
        source: SessionSource,
        *,
        admin: bool,
        wall_clock: Callable[[], float],
        refresh_interval: float | None = 5.0,
    ) -> None:
        """Alerts of ``source``; admins open live sessions in the live view."""
        super().__init__()
        self.source = source
        self.admin = admin
        self.wall_clock = wall_clock
        self.refresh_interval = refresh_interval
        self.alerts: dict[int, AlertInfo] = {}

    def compose(self) -> ComposeResult:
        """Status line, alerts table, the selected alert in full, keys."""
        yield Static("", id="info", classes="topbar")
        table: DataTable[Text] = DataTable(id="alerts", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="alert-detail")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        """Columns, first load, periodic reload."""
        table = self.query_one("#alerts", DataTable)
        for label, width in _COLUMNS:
            table.add_column(label, width=width)
        table.focus()
        self.reload()
        if self.refresh_interval:
            self.set_interval(self.refresh_interval, self.reload)

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        """Ask the node for the alerts and refill the table (keeping the selection)."""
        try:
            found = await self.source.list_alerts()
        except SourceError as e:
            self.notify(str(e), severity="error", timeout=10, markup=False)
            return
        table = self.query_one("#alerts", DataTable)
        selected = self.selected()
        table.clear()
        self.alerts = {a.id: a for a in found}
        for a in found:
            table.add_row(*alert_row(a), key=str(a.id))
        if selected is not None and selected.id in self.alerts:
            table.move_cursor(row=table.get_row_index(str(selected.id)), animate=False)
        live = sum(a.live for a in found)
        self.query_one("#info", Static).update(
            Text(f"bastion alerts · {len(found)} newest first · {live} in live sessions")
        )
        self.show_selected()

    def selected(self) -> AlertInfo | None:
        """The alert under the cursor."""
        table = self.query_one("#alerts", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.alerts.get(int(key or 0))

    def show_selected(self) -> None:
        """The selected alert in full under the table."""
        a = self.selected()
        text = Text()
        if a is not None:
            where = f"session {a.session}" if a.session else "no session (at login)"
            text = Text(
                f"#{a.id} {format_when(a.at)} {a.action} · {a.user} → {a.target or '-'} · "
                f"{where}\n{a.what}"
            )
        self.query_one("#alert-detail", Static).update(text)

    @on(DataTable.RowHighlighted, "#alerts")
    def highlighted(self) -> None:
        """The cursor moved: show that alert."""
        self.show_selected()

    @on(DataTable.RowSelected, "#alerts")
    def row_selected(self) -> None:
        """Enter on an alert: open its session."""
        self.action_open()

    def action_open(self) -> None:
        """Open the selected alert's session."""
        a = self.selected()
        if a is None:
            return
        if a.session is None:
            self.notify(f"{a.action} happened at login: no session", timeout=4, markup=False)
            return
        self.open_session(a)

    @work(group="open")
    async def open_session(self, a: AlertInfo) -> None:
        """The live view if the session still runs here and now (admins), else the player."""
        if a.live and self.admin:
            try:
                live = await self.source.list_sessions(live=True, user=a.user)
            except SourceError as e:
                self.notify(str(e), severity="error", timeout=10, markup=False)
                return
            session = next((s for s in live if s.id == a.session), None)
            if session is not None:
                self.post_message(OpenLive(session))
                return
        assert a.session is not None  # noqa: S101  checked by action_open
        title = f"{a.user}@{a.target or '?'} · {a.action}"
        self.post_message(OpenPlayer(a.session, title, a.offset, a.marker))

    def action_reload(self) -> None:
        """Ask the node again."""
        self.reload()

    def action_help(self) -> None:
        """Show every key of the alerts view."""
        self.app.push_screen(HelpScreen("Alerts", self.BINDINGS))

    def action_back(self) -> None:
        """Back to the browser."""
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()
