"""The query timeline of a database session: one row per ``pg.query`` event.

Columns: when (session time), kind, statement, tag or row count, duration, error
and parameters (the error first, so it shows in 100 columns). A filter narrows the
rows to statements, parameters or errors containing a text; the row of the query
playing is highlighted as the player moves.
Recorded SQL is flattened to one line and stripped of control characters.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from replay.formatting import format_offset, one_line

__all__ = ["QueryTable", "query_row", "query_text"]

_COLUMNS = (
    ("at", 7),
    ("kind", 8),
    ("statement", 36),
    ("result", 12),
    ("time", 8),
    ("error", 30),
    ("params", 24),
)
"""Fixed widths (the cells are cut to them): columns do not jump as queries stream in,
and DataTable never redraws rows with stale auto-widths."""


def _params(params: Any) -> str:
    if not isinstance(params, list) or not params:
        return ""
    shown = []
    for p in params:
        if p is None:
            shown.append("NULL")
        elif isinstance(p, dict) and "hex" in p:
            shown.append(f"\\x{p['hex']}")
        else:
            shown.append(str(p) if not isinstance(p, str) else repr(p))
    return ", ".join(shown)


def _result(q: dict[str, Any]) -> str:
    tags = q.get("tags")
    tag = q.get("tag")
    if isinstance(tags, list) and len(tags) > 1:
        return f"{tags[0]} … {tags[-1]}"
    if tag:
        return str(tag)
    rows = q.get("rows")
    return f"{rows} rows" if rows is not None else ""


def _error(q: dict[str, Any]) -> str:
    error = q.get("error")
    if isinstance(error, dict):
        return f"{error.get('sqlstate') or ''} {error.get('message') or ''}".strip()
    return ""


def query_row(q: dict[str, Any]) -> tuple[Text, ...]:
    """The table cells of one query payload (``Text``: recorded SQL is never markup)."""
    duration = q.get("duration_ms")
    return (
        Text(format_offset(float(q.get("start", 0.0)))),
        Text(one_line(str(q.get("kind") or ""), 8)),
        Text(one_line(str(q.get("sql") or ""), 36)),
        Text(one_line(_result(q), 12)),
        Text(f"{duration:.1f}ms" if isinstance(duration, int | float) else ""),
        Text(one_line(_error(q), 30)),
        Text(one_line(_params(q.get("params")), 24)),
    )


def query_text(q: dict[str, Any]) -> str:
    """Everything a filter matches against (statement, parameters, tag, error)."""
    return " ".join(
        [str(q.get("sql") or ""), json.dumps(q.get("params")), _result(q), _error(q)]
    ).lower()


class QueryTable(DataTable[Text], can_focus=False):
    """See the module docstring. Clicking a row posts ``QueryTable.Seek``; not focusable,
    so the player's keys (``n``/``p`` walk the shown queries) always work."""

    @dataclass
    class Seek(Message):
        """Play from the start of the selected query."""

        offset: float
        """Session time to seek to (not ``time``: every Message already has one)."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's keyword
        """An empty table; ``set_queries`` fills it."""
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.queries: list[dict[str, Any]] = []
        self.shown: list[dict[str, Any]] = []
        self.filter_text = ""

    def on_mount(self) -> None:
        """Create the columns."""
        for label, width in _COLUMNS:
            self.add_column(label, width=width)

    def set_queries(self, queries: list[dict[str, Any]]) -> None:
        """Replace the queries (sorted by start) and redraw with the current filter."""
        self.queries = sorted(queries, key=lambda q: float(q.get("start", 0.0)))
        self._fill()

    def add_query(self, q: dict[str, Any]) -> None:
        """Append one query (live sessions)."""
        self.queries.append(q)
        if self._matches(q):
            self.shown.append(q)
            self.add_row(*query_row(q), key=str(len(self.shown) - 1))

    def set_filter(self, text: str) -> None:
        """Show only queries containing ``text`` (case-insensitive); "" shows all."""
        self.filter_text = text.strip().lower()
        self._fill()

    def times(self) -> list[float]:
        """Start times of the shown queries."""
        return [float(q.get("start", 0.0)) for q in self.shown]

    def follow(self, position: float) -> None:
        """Put the cursor on the last shown query started at or before ``position``."""
        i = bisect.bisect_right(self.times(), position) - 1
        if i >= 0 and i != self.cursor_row:
            self.move_cursor(row=i, animate=False)

    def _matches(self, q: dict[str, Any]) -> bool:
        return not self.filter_text or self.filter_text in query_text(q)

    def _fill(self) -> None:
        self.clear()
        self.shown = [q for q in self.queries if self._matches(q)]
        for i, q in enumerate(self.shown):
            self.add_row(*query_row(q), key=str(i))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Seek the player to the selected query."""
        event.stop()
        index = int(event.row_key.value or 0)
        if 0 <= index < len(self.shown):
            self.post_message(self.Seek(float(self.shown[index].get("start", 0.0))))
