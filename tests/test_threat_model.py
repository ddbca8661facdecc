"""docs/threat-model.md cannot rot: every cited test exists, every row has a test or says open.

A threat model whose citations point at renamed or deleted tests claims proof that
is gone; this file makes such a change fail here instead of going unnoticed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "threat-model.md"

CITATION = re.compile(r"`(tests/[\w/]+\.py)::(\w+(?:::\w+)?)`")
ROW_ID = re.compile(r"[A-Z]\d+")
OPEN = "**open**"


@dataclass(frozen=True)
class Row:
    """One threat row of a table: its id and its last (test) cell."""

    line: int
    ident: str
    test_cell: str


def defined_tests(path: Path) -> set[str]:
    """Test functions a file defines: ``name`` at module level, ``Class::name`` in classes."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}::{item.name}")
    return {n for n in names if n.rsplit("::", 1)[-1].startswith("test_")}


def threat_rows(text: str) -> list[Row]:
    """Table rows whose first cell is an id such as ``C1``; the header and rule rows are not."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and ROW_ID.fullmatch(cells[0]):
            found.append(Row(number, cells[0], cells[-1]))
    return found


def problems(text: str, root: Path) -> list[str]:
    """Every wrong citation, duplicate id and row without a test or an open mark, in words."""
    out: list[str] = []
    cache: dict[str, set[str] | None] = {}
    for match in CITATION.finditer(text):
        rel, name = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        if rel not in cache:
            path = root / rel
            cache[rel] = defined_tests(path) if path.is_file() else None
        defined = cache[rel]
        if defined is None:
            out.append(f"line {line}: {rel} does not exist")
        elif name not in defined:
            out.append(f"line {line}: {rel} defines no test {name}")
    seen: set[str] = set()
    for row in threat_rows(text):
        if row.ident in seen:
            out.append(f"line {row.line}: row id {row.ident} is used twice")
        seen.add(row.ident)
        if not CITATION.search(row.test_cell) and OPEN not in row.test_cell:
            out.append(f"line {row.line}: row {row.ident} names no test and does not say open")
    return out


def test_every_cited_test_exists_and_every_row_has_a_test_or_says_open() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert problems(text, ROOT) == []


def test_the_document_covers_every_actor_with_cited_rows() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = threat_rows(text)
    prefixes = {row.ident[0] for row in rows}
    assert {"C", "L", "N", "D", "K", "F"} <= prefixes, prefixes
    cited = [row for row in rows if CITATION.search(row.test_cell)]
    assert len(cited) >= 40, f"only {len(cited)} rows cite a test"


def test_the_checker_catches_a_wrong_citation_and_a_bare_row(tmp_path: Path) -> None:
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    (tests_dir / "test_x.py").write_text(
        "def test_real() -> None: ...\n"
        "def helper() -> None: ...\n"
        "class TestGroup:\n    async def test_method(self) -> None: ...\n"
    )
    doc = "\n".join(
        [
            "| # | threat | control | test |",
            "|---|---|---|---|",
            "| X1 | a | b | `tests/test_x.py::test_real`, "
            "`tests/test_x.py::TestGroup::test_method` |",
            "| X2 | a | b | **open**: missing |",
            "| X3 | a | b | nothing here |",
            "| X1 | a | b | `tests/test_x.py::test_renamed` |",
            "| X4 | a | b | `tests/test_x.py::helper`, `tests/test_gone.py::test_real` |",
        ]
    )
    assert problems(doc, tmp_path) == [
        "line 6: tests/test_x.py defines no test test_renamed",
        "line 7: tests/test_x.py defines no test helper",
        "line 7: tests/test_gone.py does not exist",
        "line 5: row X3 names no test and does not say open",
        "line 6: row id X1 is used twice",
    ]


def test_the_readme_links_the_threat_model() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/threat-model.md)" in readme
