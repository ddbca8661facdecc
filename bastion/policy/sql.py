"""What a SQL text would do, statement by statement, for SQL guardrails.

The text goes through ``pglast`` (libpg_query: PostgreSQL's own parser), so odd
casing, comments, dollar quoting, ``$1`` parameters and multi-statement strings
mean what they mean to the server. Each statement gets its *classes* (``delete``,
``delete-without-where``, ``drop``, ``copy-program``…) and the tables it reads and
writes. Classes are collected from every statement nested inside it, so a DELETE in
a CTE, an ``EXPLAIN ANALYZE DELETE``, a ``PREPARE … AS DELETE``, the actions of a
``CREATE RULE`` and a SQL-standard function body all count as deletes. A plain
``EXPLAIN`` (which runs nothing) is class ``explain`` only.

``facets`` pairs each class with each table it touches (``("delete", "t")``,
``("select", "secret")``, or ``(cls, None)`` for a class without tables): the rule
matcher judges every facet on its own, so one allowed part cannot carry a denied
part through.

A text that does not parse is one statement of class ``unparsable``: the server's
parser is the same, and a simple-protocol string with a syntax error anywhere runs
nothing at all.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ObjectType, OnConflictAction, VariableSetKind
from pglast.parser import normalize

from bastion.policy.cache import TextCache

CLASSES = frozenset(
    {
        "select",
        "insert",
        "update",
        "delete",
        "merge",
        "delete-without-where",
        "update-without-where",
        "truncate",
        "drop",
        "ddl",
        "role",
        "grant",
        "copy",
        "copy-program",
        "copy-file",
        "alter-system",
        "set-role",
        "set",
        "do-block",
        "call",
        "explain",
        "prepare",
        "execute",
        "lock",
        "transaction",
        "maintenance",
        "other",
        "unparsable",
    }
)
"""Every class a statement can have; ``Rule`` refuses others."""

_WRITES = frozenset(
    {"insert", "update", "delete", "merge", "truncate", "drop", "ddl", "grant"}
    | {"delete-without-where", "update-without-where"}
)

_READS = frozenset({"select", "explain", "lock"})


@dataclass(frozen=True)
class Statement:
    """One statement: its text, classes, tables and the (class, table) facets rules judge."""

    text: str
    classes: frozenset[str]
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    """Functions called, as written (``pg_read_file``, ``myschema.f``): ``select f()``
    may do anything ``f`` does, which the text cannot show."""
    facets: tuple[tuple[str, str | None], ...] = ()
    error: str | None = None
    """Why the text is unparsable (the parser's message)."""
    reads_constants: bool = True
    """A class came from a literal's value (``set_config('role', …)``, ``EXPLAIN (ANALYZE
    off)``): texts of the same ``shape_of`` may then be classed differently."""


@dataclass(frozen=True)
class ParsedSQL:
    """Every statement of a text, in order (none for an empty or comment-only text)."""

    text: str
    statements: tuple[Statement, ...]

    @property
    def classes(self) -> frozenset[str]:
        """The union of the statements' classes."""
        return frozenset().union(*(s.classes for s in self.statements))

    @property
    def shape_decides(self) -> bool:
        """Every text of this one's ``shape_of`` has the same statements' classes and tables.

        True when the text parsed and no class depended on the value of a literal.
        """
        return bool(self.statements) and not any(s.reads_constants for s in self.statements)


def shape_of(text: str) -> str | None:
    """The text with its literals replaced by ``$n`` (libpg_query's normalize), or None.

    ``select … where aid = 1`` and ``… = 2`` share a shape: the guardrails remember a
    plain allow by shape when ``ParsedSQL.shape_decides``, so pgbench-style traffic
    with a new literal in every statement is parsed once, not once per statement.
    """
    try:
        return str(normalize(text))
    except Exception:  # does not parse: judged by its exact text only
        return None


_STRING = re.compile(r"'[^']*'(?:'[^']*')*")  # one literal: '' inside is a quote
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all but tab, newline, CR
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")
# What a trusted key may not hold: a quote left (unterminated string), quoted identifiers,
# dollar quotes and parameters, backslashes, comments, a prefixed string (E'', B'', X'',
# N'', U&'', int4'5'), and numbers that are not a whole token of at most 9 digits.
_UNTRUSTED = re.compile(r"""['"$\\]|--|/\*|[\w&]\x01|[A-Za-z_.]0|0[A-Za-z_.]|0{10}""")
_BLANK = re.compile(r"0+|\x01")
_PARAM = re.compile(r"(?:-\s*)?\$\d*")  # normalize takes a sign into its $n
_ALIGNED_MAX = 4096  # longer texts whose key keeps a constant normalize replaced: no key


def literal_key(text: str) -> str | None:
    """``text`` with string literals blanked and every digit made 0, or None.

    The cheap stand-in for ``shape_of`` (C-speed string operations against
    libpg_query's parse and normalize): two texts with the same key differ at most in
    the contents of their string literals and in which digits they have. None for
    non-ASCII texts and control characters. A key says nothing alone (``t1`` and ``t2``
    share one): the memo only uses a key that ``trusts_key`` accepted with the shape of
    a text of that key.
    """
    if not text.isascii() or (not text.isprintable() and _CONTROL.search(text) is not None):
        return None
    if "'" in text:
        text = _STRING.sub("\x01", text)
    return text.encode().translate(_ZERO_DIGITS).decode()


def trusts_key(key: str, shape: str) -> bool:
    """Whether every text with literal key ``key`` is a text of the same statements as
    the one of that key whose ``shape_of`` is ``shape``.

    Checked on the key, so it holds for every text with the key: it has no comment,
    quoted identifier, dollar quote, backslash or prefixed string outside its plain
    string literals, so those are where the key's blanks are; each run of digits is a
    whole integer token of at most 9 digits (an int4 whatever its digits, not part of
    a name); and each blank stands where normalize put a constant, which no class or
    table comes from when the shape decides (``ParsedSQL.shape_decides``). Constants the
    key keeps as written (``1.5``, ``true``) are fine: a text with the same key has the
    same text there.
    """
    if _UNTRUSTED.search(key) is not None:
        return False
    blanked = _PARAM.sub("$", _BLANK.sub("$", key))
    normalized = _PARAM.sub("$", shape)
    if blanked == normalized:
        return True
    if len(normalized) > _ALIGNED_MAX:
        return False
    # Each of the key's blanks must stand where normalize put a constant; normalize's
    # other constants are text the key kept as it was (never a "$": the key has none).
    pattern = r"(?:\$|[^$]+?)".join(re.escape(part) for part in normalized.split("$"))
    return re.fullmatch(pattern, blanked) is not None


def escape_string_reading(text: str) -> str:
    """``text`` as a server with ``standard_conforming_strings = off`` tokenises it,
    written for a parser that has it on (pglast always has).

    With the setting off every plain string literal is an escape string: ``\'`` is a
    quote inside it, not its end, and ``\\`` a backslash. Writing each ``\'`` as
    ``''`` (and keeping each ``\\`` pair whole) gives the same tokens with the setting
    on. Applied outside literals too: there a backslash only occurs where it is
    literal text (comments, dollar quotes, quoted identifiers, ``E''`` strings, which
    read the same either way), so the token boundaries stay the same.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("\\", i)
        if j < 0 or j + 1 >= n:
            out.append(text[i:])
            break
        out.append(text[i:j])
        out.append("''" if text[j + 1] == "'" else text[j : j + 2])
        i = j + 2
    return "".join(out)


_CACHE: TextCache[ParsedSQL] = TextCache()
_UNPARSABLE: tuple[tuple[str, str | None], ...] = (("unparsable", None),)


def parse_statements(text: str) -> ParsedSQL:
    """The statements of ``text``; cached by exact text. Never raises."""
    return _CACHE.get_or_compute(text, _parse_uncached)


def sql_cache() -> TextCache[ParsedSQL]:
    """The module's cache (benchmarks read its counters; tests clear it)."""
    return _CACHE


def _parse_uncached(text: str) -> ParsedSQL:
    try:
        raws = parse_sql(text)
    except Exception as e:  # pglast.parser.ParseError, and anything odd: the text cannot be judged
        msg = str(e) or type(e).__name__
        bad = Statement(text, frozenset({"unparsable"}), facets=_UNPARSABLE, error=msg)
        return ParsedSQL(text, (bad,))
    out = []
    for raw in raws:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        part = text[start:end].strip()
        try:
            out.append(_statement(part, raw.stmt))
        except Exception as e:  # a tree this module does not understand is not judged harmless
            msg = f"not analysed: {type(e).__name__}: {e}"
            out.append(Statement(part, frozenset({"unparsable"}), facets=_UNPARSABLE, error=msg))
    return ParsedSQL(text, tuple(out))


def _statement(text: str, node: ast.Node | None) -> Statement:
    c = _Collect()
    c.value(node)
    if isinstance(node, ast.SelectStmt):
        c.add("select")
    if not c.tables:
        c.add("other")
    for name in c.ctes:  # a CTE's name read in the same statement is not a table
        for tables in c.tables.values():
            tables.discard(name)
    facets: list[tuple[str, str | None]] = []
    for cls in sorted(c.tables):
        names: list[str | None] = [*sorted(c.tables[cls])] or [None]
        facets.extend((cls, t) for t in names)
    reads = {t for cls, ts in c.tables.items() if cls in _READS for t in ts if t}
    writes = {t for cls, ts in c.tables.items() if cls in _WRITES for t in ts if t}
    return Statement(
        text=text,
        classes=frozenset(c.tables),
        reads=frozenset(reads),
        writes=frozenset(writes),
        functions=frozenset(c.functions),
        facets=tuple(facets),
        reads_constants=c.reads_constants,
    )


def _name(parts: Iterable[Any]) -> str:
    return ".".join(p for p in parts if p)


def _rangevar(rv: ast.RangeVar) -> str:
    return _name((rv.catalogname, rv.schemaname, rv.relname))


def _dotted(items: Any) -> str:
    """A qualified name given as a tuple of String nodes (DROP TABLE s.t)."""
    if isinstance(items, ast.String):
        return str(items.sval)
    if isinstance(items, (tuple, list)):
        return _name(str(getattr(i, "sval", "") or "") for i in items)
    return ""


_DROP_TABLE_TYPES = frozenset(
    {
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_VIEW,
        ObjectType.OBJECT_MATVIEW,
        ObjectType.OBJECT_FOREIGN_TABLE,
        ObjectType.OBJECT_SEQUENCE,
        ObjectType.OBJECT_INDEX,
    }
)
_DDL_PREFIXES = ("Create", "Alter", "Drop", "Define")
_DDL_NAMES = frozenset(
    {
        "CommentStmt",
        "RenameStmt",
        "IndexStmt",
        "ViewStmt",
        "RuleStmt",
        "CompositeTypeStmt",
        "SecLabelStmt",
        "ReassignOwnedStmt",
        "ImportForeignSchemaStmt",
        "RefreshMatViewStmt",
    }
)
_DDL_TARGETS = ("relation", "view", "sequence", "into")
_ROLE_NAMES = frozenset({"CreateRoleStmt", "AlterRoleStmt", "AlterRoleSetStmt", "DropRoleStmt"})
_SIMPLE = {
    "DoStmt": "do-block",
    "GrantRoleStmt": "grant",
    "AlterDefaultPrivilegesStmt": "grant",
    "ExecuteStmt": "execute",
    "TransactionStmt": "transaction",
    "VariableShowStmt": "set",
    "VacuumStmt": "maintenance",
    "ClusterStmt": "maintenance",
    "ReindexStmt": "maintenance",
    "CheckPointStmt": "maintenance",
    "CallStmt": "call",
}
_SET_ROLE_NAMES = frozenset({"role", "session_authorization"})


class _Collect:
    """Walks one statement's tree and gathers classes with their tables."""

    def __init__(self) -> None:
        self.tables: defaultdict[str, set[str]] = defaultdict(set)
        self.functions: set[str] = set()
        self.ctes: set[str] = set()
        self.reads_constants = False

    def add(self, cls: str, *tables: str) -> None:
        self.tables[cls].update(t for t in tables if t)

    def children(self, node: ast.Node, skip: tuple[str, ...] = ()) -> None:
        for attr in node:
            if attr not in skip:
                self.value(getattr(node, attr, None))

    def value(self, v: object) -> None:
        if isinstance(v, ast.Node):
            self.visit(v)
        elif isinstance(v, (tuple, list)):
            for item in v:
                self.value(item)

    def visit(self, node: ast.Node) -> None:
        kind = type(node).__name__
        handler = getattr(self, "on_" + kind, None)
        if handler is not None:
            handler(node)
            return
        if kind in _SIMPLE and _SIMPLE[kind] == "maintenance":
            inner = _Collect()  # VACUUM t: t is the object maintained, not read
            inner.children(node)
            self.add("maintenance", *(t for ts in inner.tables.values() for t in ts))
            return
        if kind in _SIMPLE:
            self.add(_SIMPLE[kind])
        elif kind.startswith("Drop"):
            self.add("drop")
            self.add("ddl")
        elif kind in _ROLE_NAMES:
            self.add("role")
            self.add("ddl")
        elif kind.startswith(_DDL_PREFIXES) or kind in _DDL_NAMES:
            for attr in _DDL_TARGETS:  # the object created or changed is written, not read
                target = getattr(node, attr, None)
                if isinstance(target, ast.IntoClause):
                    target = target.rel
                if isinstance(target, ast.RangeVar):
                    self.add("ddl", _rangevar(target))
            self.add("ddl")
            self.children(node, skip=_DDL_TARGETS)
            return
        self.children(node)

    # reads and names ------------------------------------------------------

    # handlers are named after pglast's node classes

    def on_RangeVar(self, node: ast.RangeVar) -> None:
        self.add("select", _rangevar(node))

    def on_CommonTableExpr(self, node: ast.CommonTableExpr) -> None:
        if node.ctename:
            self.ctes.add(str(node.ctename))
        self.children(node)

    def on_FuncCall(self, node: ast.FuncCall) -> None:
        name = _dotted(node.funcname)
        self.functions.add(name)
        if name.rsplit(".", 1)[-1] == "set_config":
            self.reads_constants = True
            first = node.args[0] if node.args else None
            setting = getattr(getattr(first, "val", None), "sval", None)
            if not isinstance(setting, str) or setting.lower() in _SET_ROLE_NAMES:
                self.add("set-role")  # a computed setting name may be the role: assume it is
        self.children(node)

    def on_SelectStmt(self, node: ast.SelectStmt) -> None:
        into = node.intoClause
        if into is not None and into.rel is not None:
            self.add("ddl", _rangevar(into.rel))
        self.children(node, skip=("intoClause",))

    # data changes ---------------------------------------------------------

    def _dml(self, cls: str, node: Any) -> str:
        table = _rangevar(node.relation) if node.relation is not None else ""
        self.add(cls, table)
        return table

    def _where(self, cls: str, table: str, where: object) -> None:
        if where is None or (
            not isinstance(where, ast.CurrentOfExpr) and not _mentions_column(where)
        ):
            self.add(f"{cls}-without-where", table)

    def on_InsertStmt(self, node: ast.InsertStmt) -> None:
        table = self._dml("insert", node)
        conflict = node.onConflictClause
        if conflict is not None and conflict.action == OnConflictAction.ONCONFLICT_UPDATE:
            self.add("update", table)
        self.children(node, skip=("relation",))

    def on_UpdateStmt(self, node: ast.UpdateStmt) -> None:
        self._where("update", self._dml("update", node), node.whereClause)
        self.children(node, skip=("relation",))

    def on_DeleteStmt(self, node: ast.DeleteStmt) -> None:
        self._where("delete", self._dml("delete", node), node.whereClause)
        self.children(node, skip=("relation",))

    def on_MergeStmt(self, node: ast.MergeStmt) -> None:
        table = self._dml("merge", node)
        for when in node.mergeWhenClauses or ():
            kind = getattr(when.commandType, "name", str(when.commandType))
            for cls in ("insert", "update", "delete"):
                if kind.endswith(cls.upper()):
                    self.add(cls, table)
        self.children(node, skip=("relation",))

    def on_TruncateStmt(self, node: ast.TruncateStmt) -> None:
        self.add("truncate", *(_rangevar(r) for r in node.relations or ()))

    def on_CopyStmt(self, node: ast.CopyStmt) -> None:
        table = _rangevar(node.relation) if node.relation is not None else ""
        self.add("copy", table)
        if node.is_program:
            self.add("copy-program")
        elif node.filename:
            self.add("copy-file")
        if table:
            self.add("insert" if node.is_from else "select", table)
        self.children(node, skip=("relation",))

    # schema and privileges -----------------------------------------------

    def on_DropStmt(self, node: ast.DropStmt) -> None:
        tables: tuple[str, ...] = ()
        if node.removeType in _DROP_TABLE_TYPES:
            tables = tuple(_dotted(o) for o in node.objects or ())
        self.add("drop", *tables)
        self.add("ddl", *tables)

    def on_AlterTableStmt(self, node: ast.AlterTableStmt) -> None:
        table = _rangevar(node.relation) if node.relation is not None else ""
        self.add("ddl", table)
        for cmd in node.cmds or ():
            if getattr(cmd, "subtype", None) in (
                AlterTableType.AT_DropColumn,
                AlterTableType.AT_DropConstraint,
            ):
                self.add("drop", table)
        self.children(node, skip=("relation",))

    def on_GrantStmt(self, node: ast.GrantStmt) -> None:
        objects = node.objects or ()
        self.add("grant", *(_rangevar(o) for o in objects if isinstance(o, ast.RangeVar)))

    def on_AlterSystemStmt(self, node: ast.AlterSystemStmt) -> None:
        self.add("alter-system")

    def on_VariableSetStmt(self, node: ast.VariableSetStmt) -> None:
        name = str(node.name or "").lower()
        if name in _SET_ROLE_NAMES:
            self.add("set-role")
        elif node.kind == VariableSetKind.VAR_RESET_ALL:
            self.add("set-role")  # RESET ALL resets the role too
        else:
            self.add("set")

    def on_LockStmt(self, node: ast.LockStmt) -> None:
        self.add("lock", *(_rangevar(r) for r in node.relations or ()))

    # wrappers -------------------------------------------------------------

    def on_ExplainStmt(self, node: ast.ExplainStmt) -> None:
        self.add("explain")
        self.reads_constants = self.reads_constants or bool(node.options)
        if any(_analyze(o) for o in node.options or ()):
            self.value(node.query)
            return
        inner = _Collect()  # only planned, never run: its tables, not its classes
        inner.value(node.query)
        self.add("explain", *(t for ts in inner.tables.values() for t in ts))
        self.functions |= inner.functions
        self.reads_constants = self.reads_constants or inner.reads_constants

    def on_PrepareStmt(self, node: ast.PrepareStmt) -> None:
        self.add("prepare")
        self.value(node.query)

    def on_DeclareCursorStmt(self, node: ast.DeclareCursorStmt) -> None:
        self.value(node.query)
        self.add("select")


def _analyze(opt: object) -> bool:
    if not isinstance(opt, ast.DefElem) or opt.defname != "analyze":
        return False
    arg = opt.arg
    if arg is None:
        return True
    value = getattr(arg, "boolval", getattr(arg, "sval", getattr(arg, "ival", True)))
    return str(value).lower() not in ("false", "off", "0", "no")


def _mentions_column(node: object) -> bool:
    """Whether a WHERE clause reads any column; one that does not keeps all rows or none."""
    if isinstance(node, ast.ColumnRef):
        return True
    if isinstance(node, ast.Node):
        return any(_mentions_column(getattr(node, a, None)) for a in node)
    if isinstance(node, (tuple, list)):
        return any(_mentions_column(i) for i in node)
    return False
