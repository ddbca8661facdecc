"""Access requests: pending ones first (longest waiting on top), then recent decisions.

The table lists each request in one row; the pane under it shows the selected one
in full (reason, who may still approve, history). Approvers and admins approve
(``a``: optionally shorter, with a note) and deny (``d``: with a reason the
requester sees); the node applies every rule (no self-approval, distinct
approvers, never longer than asked) and its refusal is shown as it comes.
Auditors see the same list without the decision keys.

A command held for approval (a ``hold`` guardrail rule) is a request of kind
``command``: the row shows the command itself, and ``w`` watches the session
that waits for it, so the approver sees what the contractor is doing before
deciding (approvers may watch only such a session).
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

from replay.formatting import format_duration, format_when, one_line
from replay.screens.dialogs import ApproveChoice, ApproveDialog, ReasonDialog
from replay.screens.help import HelpScreen
from replay.screens.live import LiveScreen
from replay.source import RequestInfo, SessionInfo, SessionSource, SourceError
from replay.widgets.request_detail import RequestDetail

__all__ = ["DECIDERS", "RequestsScreen", "request_row"]

DECIDERS = ("admin", "approver")
"""Operator roles that may approve and deny (the node checks the rest)."""

_COLUMNS = (
    ("#", 4),
    ("state", 8),
    ("who", 9),
    ("targets", 11),
    ("for", 6),
    ("asked", 5),
    ("reason", 23),
)
"""Fixed widths that fit 80 columns, like the sessions browser's."""
_PENDING = Text("PENDING", style="bold black on yellow")


def request_row(r: RequestInfo) -> tuple[Text, ...]:
    """The table cells of one request."""
    asked = f"@{r.profile}" if r.profile else ",".join(r.targets)
    what = f"+#{r.extends_grant}" if r.kind == "extend" else asked
    state = _PENDING if r.state == "pending" else Text(r.state)
    if r.kind == "break-glass":
        state = Text("GLASS", style="bold white on dark_red")
    if r.held is not None:  # the command is what the approver decides on
        what = r.held
        if r.state == "pending":
            state = Text("HELD", style="bold black on yellow")
    return (
        Text(str(r.id)),
        state,
        Text(one_line(r.requester, 9)),
        Text(one_line(what, 11)),
        Text(format_duration(r.duration)),
        Text(format_when(r.created_at)[11:16]),
        Text(one_line(r.reason, 23)),
    )


class RequestsScreen(Screen[None]):
    """See the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "approve", "Approve", tooltip="approve the selected request (or shorter)"),
        Binding("d", "deny", "Deny", tooltip="deny the selected request (asks for a reason)"),
        Binding("w", "watch", "Watch", tooltip="watch the session whose command is held"),
        Binding("r", "reload", "Reload"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("escape,q", "back", "Back"),
    ]

    def __init__(
        self,
        source: SessionSource,
        *,
        role: str,
        wall_clock: Callable[[], float],
        refresh_interval: float | None = 5.0,
    ) -> None:
        """Requests of ``source`` as seen by an operator of ``role``."""
        super().__init__()
        self.source = source
        self.role = role
        self.wall_clock = wall_clock
        self.refresh_interval = refresh_interval
        self.requests: dict[int, RequestInfo] = {}

    def compose(self) -> ComposeResult:
        """Status line, requests table, the selected request, keys."""
        yield Static("", id="info", classes="topbar")
        table: DataTable[Text] = DataTable(id="requests", cursor_type="row", zebra_stripes=True)
        yield table
        yield RequestDetail(id="request-detail")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        """Columns, first load, periodic reload."""
        table = self.query_one("#requests", DataTable)
        for label, width in _COLUMNS:
            table.add_column(label, width=width)
        table.focus()
        self.reload()
        if self.refresh_interval:
            self.set_interval(self.refresh_interval, self.reload)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Approve and deny exist for approvers and admins only (hidden for auditors)."""
        if action in ("approve", "deny") and self.role not in DECIDERS:
            return False
        return True

    # -- loading ------------------------------------------------------------------------

    @work(exclusive=True, group="load")
    async def reload(self) -> None:
        """Ask the node for the requests and refill the table (keeping the selection)."""
        try:
            found = await self.source.list_requests()
        except SourceError as e:
            self.notify(str(e), severity="error", timeout=10, markup=False)
            return
        table = self.query_one("#requests", DataTable)
        selected = self.selected()
        table.clear()
        self.requests = {r.id: r for r in found}
        for r in found:
            table.add_row(*request_row(r), key=str(r.id))
        if selected is not None and selected.id in self.requests:
            table.move_cursor(row=table.get_row_index(str(selected.id)), animate=False)
        pending = sum(r.state == "pending" for r in found)
        self.query_one("#info", Static).update(
            Text(f"bastion requests · {pending} pending · {len(found) - pending} decided (recent)")
        )
        self.show_selected()

    def selected(self) -> RequestInfo | None:
        """The request under the cursor."""
        table = self.query_one("#requests", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.requests.get(int(key or 0))

    def show_selected(self) -> None:
        """Put the selected request in the detail pane."""
        self.query_one(RequestDetail).show(self.selected(), self.wall_clock())

    @on(DataTable.RowHighlighted, "#requests")
    def highlighted(self) -> None:
        """The cursor moved: show that request."""
        self.show_selected()

    # -- deciding -----------------------------------------------------------------------

    def _pending_selected(self) -> RequestInfo | None:
        r = self.selected()
        if r is None:
            self.notify("no request selected", timeout=3, markup=False)
        elif r.state != "pending":
            said = f"request #{r.id} is {r.state}; only pending ones are decided"
            self.notify(said, timeout=4, markup=False)
            return None
        return r

    def action_approve(self) -> None:
        """Ask for an optional shorter duration and a note, then approve."""
        r = self._pending_selected()
        if r is None:
            return
        asked = f"profile {r.profile}" if r.profile else ",".join(r.targets)
        title = f"Approve request #{r.id}: {r.requester} → {asked}?"

        def done(choice: ApproveChoice | None) -> None:
            if choice is not None:
                self.decide(r, choice, None)

        self.app.push_screen(ApproveDialog(one_line(title, 66), r.duration), done)

    def action_deny(self) -> None:
        """Ask for a reason, then deny."""
        r = self._pending_selected()
        if r is None:
            return
        title = f"Deny request #{r.id} of {r.requester}?"

        def done(reason: str | None) -> None:
            if reason:
                self.decide(r, None, reason)

        self.app.push_screen(ReasonDialog(one_line(title, 66), "Deny"), done)

    @work(group="decide")
    async def decide(
        self, r: RequestInfo, approval: ApproveChoice | None, denial: str | None
    ) -> None:
        """Send the approval (or the denial) to the node, report the outcome, reload."""
        try:
            if approval is not None:
                now = await self.source.approve_request(
                    r.id, duration=approval.duration, reason=approval.reason
                )
            else:
                now = await self.source.deny_request(r.id, denial or "")
        except SourceError as e:
            self.notify(str(e), severity="error", timeout=10, markup=False)
            return
        if now.state == "approved":
            grants = ", ".join(f"#{g}" for g in now.grants)
            said = f"request #{r.id} approved" + (f": grant {grants}" if grants else "")
        elif now.state == "pending":
            said = f"request #{r.id}: approval recorded, {now.needed} more needed"
        else:
            said = f"request #{r.id} {now.state}"
        self.notify(said, timeout=5, markup=False)
        self.reload()

    def action_watch(self) -> None:
        """Watch the live screen of the session a held command waits in."""
        r = self.selected()
        if r is None or r.session_id is None:
            self.notify("only a held command has a session to watch", timeout=4, markup=False)
            return
        session = SessionInfo(
            id=r.session_id,
            user=r.requester,
            target=",".join(r.targets),
            protocol="postgres" if r.held_kind == "statement" else "ssh",
            login=r.login,
            client_addr="",
            node="",
            started_at=r.created_at,
            ended_at=None,
            end_reason=None,
            bytes_in=0,
            bytes_out=0,
            events=0,
            live=True,
        )
        self.app.push_screen(LiveScreen(self.source, session, admin=self.role == "admin"))

    # -- the rest -----------------------------------------------------------------------

    def action_reload(self) -> None:
        """Ask the node again."""
        self.reload()

    def action_help(self) -> None:
        """Show every key of the requests view."""
        self.app.push_screen(HelpScreen("Requests", self.BINDINGS))

    def action_back(self) -> None:
        """Back to the browser (quit when this is the only screen, as for approvers)."""
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()
