"""RowCapture with origin masking: held sets, stream order, patterns, COPY rows (pure).

``Deferred`` is a ``MaskSource`` that answers when the test says so, the way the
catalog answers later than the rows arrive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.config import CONFIG_TEMPLATE, load_config, render_config
from bastion.errors import ConfigError
from bastion.pg import messages as m
from bastion.pg.messages import (
    CommandComplete,
    CopyData,
    CopyOutResponse,
    DataRow,
    FieldDescription,
    RowDescription,
)
from bastion.pg.protocol import encode
from bastion.pg.query_log import MaskRules, PlanKey, RowCapture
from bastion.pg.relay_scan import ClientScanner, ServerScanner
from bastion.pg.tracker import QueryTracker
from recorder.events import JSONValue

Flags = tuple[bool, ...]


class Deferred:
    """Answers each request only when ``answer`` is called."""

    def __init__(self) -> None:
        self.waiting: list[tuple[PlanKey, int | None, Callable[[Flags], None]]] = []

    def request(
        self, key: PlanKey, copy_columns: int | None, done: Callable[[Flags], None]
    ) -> Flags | None:
        self.waiting.append((key, copy_columns, done))
        return None

    def answer(self, index: int, flags: Flags) -> None:
        self.waiting[index][2](flags)


def _capture(
    source: Deferred, patterns: tuple[str, ...] = ()
) -> tuple[RowCapture, list[dict[str, JSONValue]]]:
    out: list[dict[str, JSONValue]] = []
    compiled = tuple(re.compile(p) for p in patterns)
    return RowCapture(5, MaskRules(), compiled, source, out.append), out


def _result(capture: RowCapture, sql: str, names: tuple[str, ...], *rows: list[bytes]) -> None:
    capture.source = (sql, 0)
    capture.backend(RowDescription([FieldDescription(n, 0, 0) for n in names]))
    for row in rows:
        capture.backend(DataRow(list(row)))
    capture.backend(CommandComplete(f"SELECT {len(rows)}"))


def test_sets_wait_for_their_plan_and_leave_in_stream_order() -> None:
    source = Deferred()
    capture, out = _capture(source)
    _result(capture, "select upper(password) as a, id from t", ("a", "id"), [b"SECRET", b"1"])
    _result(capture, "select login from t", ("login",), [b"alice"])
    assert out == [] and capture.pending == 2
    assert source.waiting[0][0] == (
        "select upper(password) as a, id from t",
        0,
        (("a", 0, 0), ("id", 0, 0)),
    )
    source.answer(1, (False,))
    assert out == []  # the second set may not overtake the first
    source.answer(0, (True, False))
    assert [p["rows"] for p in out] == [[["***", "1"]], [["alice"]]]
    assert out[0]["masked"] == ["a"] and [p["set"] for p in out] == [1, 2]


def test_session_end_masks_what_is_still_unknown() -> None:
    source = Deferred()
    capture, out = _capture(source)
    _result(capture, "select f(x) from t", ("f",), [b"SECRET"])
    capture.fail_closed()
    assert out[0]["rows"] == [["***"]] and "SECRET" not in repr(out)


def test_patterns_mask_values_in_any_column() -> None:
    source = Deferred()
    capture, out = _capture(source, (r"\bAKIA[0-9A-Z]{16}\b", r"\b(?:\d[ -]?){13,16}\b"))
    _result(
        capture,
        "select note, id from t",
        ("note", "id"),
        [b"key AKIAQWERTYUIOPASDFGH here", b"1"],
        [b"card 4111 1111 1111 1111", b"2"],
        [b"nothing", b"3"],
    )
    source.answer(0, (False, False))
    assert out[0]["rows"] == [["***", "1"], ["***", "2"], ["nothing", "3"]]


def test_copy_text_and_csv_rows_are_split_and_masked() -> None:
    source = Deferred()
    capture, out = _capture(source)
    capture.source = ("copy t to stdout", 0)
    capture.backend(CopyOutResponse(0, (0, 0, 0)))
    capture.backend(CopyData(b"1\talice\tSECRET\n"))
    capture.backend(CopyData(b"2\t\\N\tSECRET\n"))
    capture.backend(CopyData(b"odd line\n"))
    capture.backend(CommandComplete("COPY 3"))
    capture.source = ("copy (select a, b from t) to stdout with (format csv)", 0)
    capture.backend(CopyOutResponse(0, (0, 0)))
    capture.backend(CopyData(b'"x,y",SECRET\n'))
    capture.backend(CommandComplete("COPY 1"))
    assert source.waiting[0][1] == 3 and source.waiting[1][1] == 2
    source.answer(0, (False, False, True))
    source.answer(1, (False, True))
    assert out[0]["columns"] == ["#1", "#2", "#3"]
    assert out[0]["rows"] == [["1", "alice", "***"], ["2", None, "***"], ["***", "***", "***"]]
    assert out[1]["rows"] == [["x,y", "***"]]
    assert "SECRET" not in repr(out)


def test_binary_copy_is_masked_whole() -> None:
    source = Deferred()
    capture, out = _capture(source)
    capture.source = ("copy t to stdout with (format binary)", 0)
    capture.backend(CopyOutResponse(1, (1, 1)))
    capture.backend(CopyData(b"PGCOPY\n\xff\r\n\x00SECRET"))
    capture.backend(CommandComplete("COPY 1"))
    assert source.waiting == [] and out[0]["rows"] == [["***", "***"]]


def test_mask_patterns_are_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text("[postgres]\nmask_patterns = ['\\bAKIA[0-9A-Z]{16}\\b', 'ok']\n")
    assert load_config(path).postgres.mask_patterns == (r"\bAKIA[0-9A-Z]{16}\b", "ok")
    path.write_text("[postgres]\nmask_patterns = ['ok', '(unclosed']\n")
    with pytest.raises(ConfigError, match=r"postgres.mask_patterns\[1\] is not a valid regular"):
        load_config(path)
    path.write_text("[postgres]\n")
    assert load_config(path).postgres.mask_patterns == ()  # none unless configured


def test_the_templates_pattern_examples_compile() -> None:
    start = CONFIG_TEMPLATE.index("# mask_patterns = [")
    block = render_config("n", "127.0.0.1:22")
    block = block[block.index("# mask_patterns = [") :].split("# ]")[0]
    found = [line.split("'")[1] for line in block.splitlines() if line.startswith("#   '")]
    assert start and len(found) == 5
    for pattern in found:
        re.compile(pattern)
    assert re.search(found[0], "id AKIAQWERTYUIOPASDFGH") and not re.search(found[3], "42")


def test_rows_of_another_statement_than_the_described_one_are_masked() -> None:
    """Describe S1 (harmless), then rows of S2 without a Describe: S1's plan must not
    be applied to S2's values."""
    source = Deferred()
    capture, out = _capture(source)
    capture.source = ("select 1 as x", 0)
    capture.backend(RowDescription([FieldDescription("x", 0, 0)]))
    assert capture.checking
    capture.first_row(("select password from accounts", 0))
    capture.backend(DataRow([b"SECRET"]))
    capture.backend(CommandComplete("SELECT 1"))
    source.answer(0, (False,))
    assert out[0]["rows"] == [["***"]]
    capture.source = ("select 1 as x", 0)
    capture.backend(RowDescription([FieldDescription("x", 0, 0)]))
    capture.first_row(("select 1 as x", 0))
    capture.backend(DataRow([b"1"]))
    capture.backend(CommandComplete("SELECT 1"))
    source.answer(1, (False,))
    assert out[1]["rows"] == [["1"]] and not capture.checking


def test_scanner_matches_rows_to_the_described_statement() -> None:
    """Through the relay scanners: Parse S1, S2; Describe S1; Bind and Execute S2."""
    source = Deferred()
    capture, out = _capture(source)
    tracker = QueryTracker(lambda: 0.0)
    client = ClientScanner(tracker, 1 << 20)
    server = ServerScanner(tracker, 1 << 20, lambda _records: None, capture, None)
    client.feed(
        b"".join(
            encode(x)
            for x in (
                m.Parse("s1", "select 1 as x"),
                m.Parse("s2", "select password from accounts"),
                m.Describe("S", "s1"),
                m.Bind("", "s2"),
                m.Execute(""),
                m.Sync(),
            )
        )
    )
    server.feed(
        b"".join(
            encode(x)
            for x in (
                m.ParseComplete(),
                m.ParseComplete(),
                m.ParameterDescription([]),
                m.RowDescription([FieldDescription("x", 0, 0)]),
                m.BindComplete(),
                m.DataRow([b"SECRET"]),
                m.CommandComplete("SELECT 1"),
                m.ReadyForQuery(m.TransactionStatus.IDLE),
            )
        )
    )
    assert source.waiting[0][0][0] == "select 1 as x"
    source.answer(0, (False,))
    assert out[0]["rows"] == [["***"]]
