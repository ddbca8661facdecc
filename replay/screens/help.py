"""The ``?`` help: every key of the screen underneath, with what it does.

Built from that screen's ``BINDINGS`` so the help can never disagree with the keys.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

__all__ = ["HelpScreen", "describe_bindings"]


def describe_bindings(bindings: list[BindingType]) -> list[tuple[str, str]]:
    """(keys, description) pairs, keys of one action joined with " / "."""
    rows: dict[str, tuple[list[str], str]] = {}
    for b in bindings:
        if not isinstance(b, Binding):
            continue
        keys = [k.strip() for k in b.key.split(",")]
        shown = b.key_display or " / ".join(keys)
        description = b.tooltip or b.description or b.action
        entry = rows.setdefault(b.action, ([], description))
        entry[0].append(shown)
    return [(" / ".join(keys), description) for keys, description in rows.values()]


class HelpScreen(ModalScreen[None]):
    """A table of keys; any of escape, ``?`` or ``q`` closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, title: str, bindings: list[BindingType]) -> None:
        """Help for the screen called ``title`` with those ``bindings``."""
        super().__init__()
        self.help_title = title
        self.rows = describe_bindings(bindings)

    def compose(self) -> ComposeResult:
        """Title and the key table."""
        with Vertical(classes="dialog help"):
            yield Label(f"{self.help_title} — keys (escape closes)", classes="dialog-title")
            table: DataTable[str] = DataTable(cursor_type="none", show_cursor=False)
            yield table

    def on_mount(self) -> None:
        """Fill the table."""
        table = self.query_one(DataTable)
        table.add_columns("key", "action")
        for keys, description in self.rows:
            table.add_row(keys, description)

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
