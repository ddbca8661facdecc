"""Small modal dialogs: a reason for terminate/lock/deny, an approval, a time to jump to.

Why a reason is mandatory: the contractor sees it when the session is cut (or the
request denied) and it is written to the audit log, so an empty one is refused in
the dialog itself. An approval's note is optional; its duration may only shorten
what was asked (the node enforces that too, this just says so before asking).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from replay.formatting import format_duration, parse_offset

__all__ = ["ApproveChoice", "ApproveDialog", "JumpDialog", "ReasonDialog"]


class ReasonDialog(ModalScreen[str | None]):
    """Ask to confirm an action and give a reason; dismisses with the reason or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, action: str) -> None:
        """``title`` says what will happen; ``action`` labels the confirm button."""
        super().__init__()
        self.title_text = title
        self.action_label = action

    def compose(self) -> ComposeResult:
        """Title, reason input, buttons."""
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text), classes="dialog-title")
            yield Input(placeholder="reason (the contractor sees it)", id="reason")
            yield Label("", id="problem", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button(self.action_label, variant="error", id="confirm")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#confirm")
    def confirm(self) -> None:
        """Dismiss with the reason, or say that one is needed."""
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.query_one("#problem", Label).update("A reason is required.")
            return
        self.dismiss(reason)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Dismiss without doing anything."""
        self.dismiss(None)


@dataclass(frozen=True)
class ApproveChoice:
    """What the approver confirmed: a shorter duration (None: as asked) and a note."""

    duration: float | None
    reason: str | None


class ApproveDialog(ModalScreen[ApproveChoice | None]):
    """Confirm an approval, optionally shorter and with a note; dismisses with the choice."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, asked: float) -> None:
        """``title`` says what is approved; ``asked`` is the requested duration (seconds)."""
        super().__init__()
        self.title_text = title
        self.asked = asked

    def compose(self) -> ComposeResult:
        """Title, duration and note inputs, buttons."""
        asked = format_duration(self.asked)
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text), classes="dialog-title")
            yield Input(placeholder=f"for (empty: as asked, {asked}; shorter: 30m, 1h)", id="for")
            yield Input(placeholder="note (optional, the requester sees it)", id="reason")
            yield Label("", id="problem", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button("Approve", variant="success", id="confirm")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#confirm")
    def confirm(self) -> None:
        """Dismiss with the choice, or say why the duration cannot be used."""
        text = self.query_one("#for", Input).value.strip()
        duration: float | None = None
        if text:
            try:
                duration = parse_offset(text)
            except ValueError as e:
                self.query_one("#problem", Label).update(Text(str(e)))
                return
            if not 0 < duration <= self.asked:
                self.query_one("#problem", Label).update(
                    Text(f"An approval may only shorten: at most {format_duration(self.asked)}.")
                )
                return
            if duration == self.asked:
                duration = None
        reason = self.query_one("#reason", Input).value.strip() or None
        self.dismiss(ApproveChoice(duration, reason))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Dismiss without approving."""
        self.dismiss(None)


class JumpDialog(ModalScreen[float | None]):
    """Ask for a session time; dismisses with seconds or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        """Prompt and input."""
        with Vertical(classes="dialog"):
            yield Label("Jump to session time (90, 1:30, 1:02:03, 2m)", classes="dialog-title")
            yield Input(placeholder="time", id="when")
            yield Label("", id="problem", classes="problem")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        """Dismiss with the parsed time, or show why it cannot be read."""
        try:
            self.dismiss(parse_offset(event.value))
        except ValueError as e:
            self.query_one("#problem", Label).update(Text(str(e)))

    def action_cancel(self) -> None:
        """Dismiss without jumping."""
        self.dismiss(None)
