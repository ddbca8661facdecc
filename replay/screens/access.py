"""A user's effective access: every target they can reach now, how, and why not.

Opened from the sessions browser on the selected session's user (``u``). The
node answers with the same code as ``bastion access USER`` (``user_access`` on
the control API), so the console never guesses from grant rows: the table has a
row per target (YES/NO, the way in or the reason), the pane under it the grants
behind the selected row (direct or via which profile, from which request, until
when). ``a`` adds history (ended and revoked grants, removed targets).
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from bastion.access_report import grant_line, way_line
from replay.formatting import format_when, one_line
from replay.screens.help import HelpScreen
from replay.source import SessionSource, SourceError, TargetAccess, UserAccess

__all__ = ["AccessScreen", "access_row"]

_COLUMNS = (("target", 14), ("can", 4), ("how, or why not", 56))
"""Fixed widths that fit 80 columns, like the other tables'."""
_YES = Text("YES", style="bold green")
_NO = Text("NO", style="bold red")


def access_row(t: TargetAccess) -> tuple[Text, ...]:
    """The table cells of one target."""
    name = t.target + (" (gone)" if t.removed else "")
    if t.reachable:
        how = "; ".join(way_line(w, t.kind) for w in t.ways)
    else:
        how = "; ".join(t.blocked) or "no usable grant"
    return (Text(one_line(name, 14)), _YES if t.reachable else _NO, Text(one_line(how, 56)))


def describe_target(t: TargetAccess | None) -> Text:
    """The pane's text: the target's verdict in full, its labels and each grant."""
    if t is None:
        return Text("no target: this user holds no current grant (a: show history)")
    text = Text(f"{t.target} [{t.kind}]", style="bold")
    if t.labels:
        text.append("  " + ",".join(f"{k}={v}" for k, v in sorted(t.labels.items())), "dim")
    for w in t.ways:
        text.append("\nway in: " + way_line(w, t.kind))
    for b in t.blocked:
        text.append("\nblocked: ", style="bold red")
        text.append(one_line(b, 300))
    for g in t.grants:
        text.append("\n" + one_line(grant_line(g), 300))
    return text


class AccessScreen(Screen[None]):
    """See the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "history", "History", tooltip="also ended grants and removed targets"),
        Binding("r", "reload", "Reload"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("escape,q", "back", "Back"),
    ]

    def __init__(self, source: SessionSource, user: str) -> None:
        """The effective access of ``user``, as the node behind ``source`` answers it."""
        super().__init__()
        self.source = source
        self.user = user
        self.include_all = False
        self.access: UserAccess | None = None

    def compose(self) -> ComposeResult:
        """Status line, targets table, the selected target's grants, keys."""
        yield Static("", id="info", classes="topbar")
        table: DataTable[Text] = DataTable(id="access", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="access-detail")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        """Columns and the first answer."""
        table = self.query_one("#access", DataTable)
        for label, width in _COLUMNS:
            table.add_column(label, width=width)
        table.focus()
        self.reload()

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        """Ask the node and refill the table."""
        try:
            found = await self.source.user_access(self.user, include_all=self.include_all)
        except SourceError as e:
            self.notify(str(e), severity="error", timeout=10, markup=False)
            return
        self.access = found
        table = self.query_one("#access", DataTable)
        table.clear()
        for i, t in enumerate(found.targets):
            table.add_row(*access_row(t), key=str(i))
        head = f"access of {found.user} ({found.role}, {found.state})"
        if found.engagement_until is not None:
            head += f" · until {format_when(found.engagement_until)}"
        reachable = sum(t.reachable for t in found.targets)
        head += f" · {reachable} of {len(found.targets)} reachable now"
        if self.include_all:
            head += " · with history"
        if found.login_refused:
            head += f" · cannot log in: {found.login_refused}"
        self.query_one("#info", Static).update(Text(one_line(head, 400)))
        self.show_selected()

    def selected(self) -> TargetAccess | None:
        """The target under the cursor."""
        table = self.query_one("#access", DataTable)
        if self.access is None or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.access.targets[int(key or 0)]

    def show_selected(self) -> None:
        """Put the selected target's grants in the pane."""
        self.query_one("#access-detail", Static).update(describe_target(self.selected()))

    @on(DataTable.RowHighlighted, "#access")
    def highlighted(self) -> None:
        """The cursor moved: show that target."""
        self.show_selected()

    def action_history(self) -> None:
        """Toggle ended grants and removed targets."""
        self.include_all = not self.include_all
        self.reload()

    def action_reload(self) -> None:
        """Ask the node again."""
        self.reload()

    def action_help(self) -> None:
        """Show every key of the access view."""
        self.app.push_screen(HelpScreen("Access", self.BINDINGS))

    def action_back(self) -> None:
        """Back to the browser."""
        self.app.pop_screen()
