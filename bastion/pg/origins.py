"""Where each output column of a statement takes its value from, read off the parse tree.

Row capture masks a value when it comes from a masked column, whatever the output
is called. RowDescription names the table column behind a plain output column;
for everything else (``upper(api_token)``, ``row_to_json(t)``, ``t.*`` inside a
function, a scalar subquery, a UNION, ``COPY (…) TO STDOUT``) this module walks
the ``pglast`` tree and returns, per output slot, the set of *references* the
value may carry: a column of a named relation (``Col``), every column of one
(``Row``), a function call (``Func``: a function can read anything) or
``Unknown`` (the tree says nothing reliable). Names are resolved against the
statement's own scopes (aliases, subqueries in FROM, CTEs, outer queries); the
catalog side (``bastion.pg.masking``) turns relation names into columns and views
into their definitions.

The walk only over-approximates: WHERE clauses and joins are ignored (they filter,
they do not carry values), every column an expression mentions counts. Anything
not understood becomes ``Unknown`` and is masked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import SetOperation

from bastion.policy.cache import TextCache

__all__ = [
    "Col",
    "Func",
    "Origin",
    "Output",
    "Ref",
    "Row",
    "Slot",
    "Unknown",
    "statement_outputs",
]


@dataclass(frozen=True)
class Col:
    """Column ``name`` of relation ``rel`` (as written: ``users`` or ``app.users``)."""

    rel: str
    name: str


@dataclass(frozen=True)
class Row:
    """Every column of relation ``rel`` (``row_to_json(t)``, ``select t from t``)."""

    rel: str


@dataclass(frozen=True)
class Func:
    """A call of function ``name`` (as written): what it reads is not in the text."""

    name: str


@dataclass(frozen=True)
class Unknown:
    """An origin the text does not establish; ``why`` says what was not understood."""

    why: str


Ref = Col | Row | Func | Unknown
Origin = frozenset[Ref]
_NONE: Origin = frozenset()


@dataclass(frozen=True)
class Slot:
    """One entry of a target list.

    A plain slot is one output column with ``origin``. A star slot (``*``, ``t.*``)
    stands for several columns: ``parts`` are, in order, base relations to expand
    from the catalog (``str``) or the known column origins of a subquery (a tuple);
    ``origin`` is the union, used when the expansion cannot be counted.
    """

    origin: Origin
    star: bool = False
    parts: tuple[str | tuple[Origin, ...], ...] = ()
    name: str | None = None
    """The output name PostgreSQL gives a plain slot, when the walk can tell."""


@dataclass(frozen=True)
class Output:
    """The result columns of one statement: ``slots``, or None when not known."""

    slots: tuple[Slot, ...] | None
    why: str | None = None
    copy: bool = False
    """A ``COPY … TO STDOUT``: the rows come as CopyData, not DataRows."""
    copy_format: str = "text"
    """``text``, ``csv`` or ``binary`` (the COPY option)."""
    copy_delimiter: str | None = None


_CACHE: TextCache[tuple[Output, ...]] = TextCache(max_entries=2048)

# Functions in pg_catalog that run SQL given as text or read files: their result is
# not explained by their arguments.
DATA_READING_FUNCTIONS = frozenset(
    {
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        "pg_read_file",
        "pg_read_binary_file",
        "lo_get",
        "loread",
    }
)


def statement_outputs(text: str) -> tuple[Output, ...]:
    """The outputs of each statement of ``text``, in order; cached by exact text.

    An unparsable text gives one unknown output (the server runs none of it anyway).
    """
    return _CACHE.get_or_compute(text, _outputs_uncached)


def _outputs_uncached(text: str) -> tuple[Output, ...]:
    try:
        raws = parse_sql(text)
    except Exception as e:  # pglast.parser.ParseError and anything odd: fail closed
        return (Output(None, f"unparsable: {e}"),)
    out: list[Output] = []
    for raw in raws:
        try:
            out.append(_output(raw.stmt))
        except Exception as e:  # a tree this walk does not understand: fail closed
            out.append(Output(None, f"not analysed: {type(e).__name__}: {e}"))
    return tuple(out)


def _output(node: object) -> Output:
    if isinstance(node, ast.SelectStmt):
        return Output(_Walk(()).select(node))
    if isinstance(node, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
        returning = getattr(node, "returningList", None)
        if not returning:
            return Output(())
        walk = _Walk(())
        scope = _Scope([], walk.with_ctes(node.withClause))
        if node.relation is None:
            return Output(None, "RETURNING without a relation")
        scope.entries.append(_Entry.relation(node.relation))
        for attr in ("fromClause", "usingClause"):
            for item in getattr(node, attr, None) or ():
                scope.entries.extend(walk.from_item(item, scope))
        return Output(walk.targets(returning, scope))
    if isinstance(node, ast.CopyStmt):
        return _copy(node)
    if isinstance(node, ast.ExplainStmt | ast.VariableShowStmt):
        return _text_only()
    return Output(None, f"a {type(node).__name__} statement: its columns are not known")


def _text_only() -> Output:
    """EXPLAIN and SHOW print plans and settings, never table data."""
    return Output((Slot(_NONE, star=True, parts=()),))


def _copy(node: ast.CopyStmt) -> Output:
    out = _copy_columns(node)
    fmt, delimiter = "text", None
    for opt in node.options or ():
        value = getattr(getattr(opt, "arg", None), "sval", None)
        if opt.defname == "format" and isinstance(value, str):
            fmt = value.lower()
        elif opt.defname == "delimiter" and isinstance(value, str):
            delimiter = value
    return Output(out.slots, out.why, True, fmt, delimiter)


def _copy_columns(node: ast.CopyStmt) -> Output:
    if node.is_from or node.is_program or node.filename:
        return Output((), copy=True)  # nothing comes back to the client
    if node.query is not None:
        walk = _Walk(())
        inner = node.query
        if isinstance(inner, ast.SelectStmt):
            return Output(walk.select(inner), copy=True)
        return Output(_output(inner).slots, "COPY of a data-changing statement", copy=True)
    if node.relation is None:
        return Output(None, "COPY without a relation", copy=True)
    rel = _rangevar(node.relation)
    if node.attlist:
        names = [str(getattr(a, "sval", "")) for a in node.attlist]
        return Output(tuple(Slot(frozenset({Col(rel, n)})) for n in names), copy=True)
    return Output((Slot(frozenset({Row(rel)}), star=True, parts=(rel,)),), copy=True)


def _rangevar(rv: ast.RangeVar) -> str:
    return ".".join(p for p in (rv.schemaname, rv.relname) if p)


def _strings(parts: Iterable[Any] | None) -> list[str]:
    return [str(p.sval) if isinstance(p, ast.String) else "*" for p in parts or ()]


@dataclass
class _Entry:
    """One FROM item: a base relation, or columns known from a subquery or CTE."""

    name: str
    rel: str | None = None
    columns: dict[str, Origin] = field(default_factory=dict)
    slots: tuple[Slot, ...] = ()
    opaque: Origin | None = None

    @staticmethod
    def relation(rv: ast.RangeVar, name: str | None = None) -> _Entry:
        alias = rv.alias.aliasname if rv.alias is not None else None
        return _Entry(str(alias or name or rv.relname), rel=_rangevar(rv))

    def column(self, name: str) -> Origin:
        if self.rel is not None:
            return frozenset({Col(self.rel, name)})
        if self.opaque is not None:
            return self.opaque
        if name in self.columns:
            return self.columns[name]
        return self.row()  # a name this walk did not derive: any column may be it

    def row(self) -> Origin:
        if self.rel is not None:
            return frozenset({Row(self.rel)})
        if self.opaque is not None:
            return self.opaque
        return frozenset().union(*(s.origin for s in self.slots))

    def star(self) -> Slot:
        if self.rel is not None:
            return Slot(self.row(), star=True, parts=(self.rel,))
        if self.opaque is not None:
            return Slot(self.opaque, star=True, parts=())
        parts: list[str | tuple[Origin, ...]] = []
        for s in self.slots:
            parts.extend(s.parts if s.star else ((s.origin,),))
        expandable = all(not s.star or s.parts for s in self.slots)
        return Slot(self.row(), star=True, parts=tuple(parts) if expandable else ())


@dataclass
class _Scope:
    entries: list[_Entry]
    ctes: dict[str, _Entry]
    outer: _Scope | None = None

    def find(self, name: str) -> _Entry | None:
        scope: _Scope | None = self
        while scope is not None:
            for e in scope.entries:
                if e.name == name:
                    return e
            scope = scope.outer
        return None

    def all_entries(self) -> Iterator[_Entry]:
        scope: _Scope | None = self
        while scope is not None:
            yield from scope.entries
            scope = scope.outer


class _Walk:
    """Walks one statement; ``outer`` are the enclosing scopes (for correlated refs)."""

    def __init__(self, outer: tuple[_Scope, ...]) -> None:
        self.outer = outer[-1] if outer else None

    # statements ---------------------------------------------------------

    def with_ctes(
        self, with_clause: ast.WithClause | None, base: dict[str, _Entry] | None = None
    ) -> dict[str, _Entry]:
        ctes = dict(base or (self.outer.ctes if self.outer else {}))
        for cte in (with_clause.ctes if with_clause is not None else ()) or ():
            name = str(cte.ctename)
            if with_clause is not None and with_clause.recursive:
                ctes[name] = _Entry(name, opaque=frozenset({Unknown("a recursive CTE")}))
                continue
            query = cte.ctequery
            if isinstance(query, ast.SelectStmt):
                slots = _Walk(self._outer_chain()).select(query, ctes)
            else:
                slots = _output(query).slots or (Slot(frozenset({Unknown("CTE")}), True),)
            ctes[name] = _entry_of(name, slots, cte.aliascolnames)
        return ctes

    def _outer_chain(self) -> tuple[_Scope, ...]:
        return (self.outer,) if self.outer is not None else ()

    def select(
        self, node: ast.SelectStmt, ctes: dict[str, _Entry] | None = None
    ) -> tuple[Slot, ...]:
        scope_ctes = self.with_ctes(node.withClause, ctes)
        if node.op is not None and node.op != SetOperation.SETOP_NONE:
            if node.larg is None or node.rarg is None:
                return (Slot(frozenset({Unknown("a set operation without sides")}), star=True),)
            left = _Walk(self._outer_chain()).select(node.larg, scope_ctes)
            right = _Walk(self._outer_chain()).select(node.rarg, scope_ctes)
            if len(left) != len(right) or any(s.star for s in (*left, *right)):
                return (Slot(_union(s.origin for s in (*left, *right)), star=True),)
            return tuple(Slot(a.origin | b.origin) for a, b in zip(left, right, strict=True))
        if node.valuesLists:
            scope = _Scope([], scope_ctes, self.outer)
            rows = [[self.expr(v, scope) for v in row] for row in node.valuesLists]
            width = max(len(r) for r in rows)
            return tuple(Slot(_union(r[i] for r in rows if i < len(r))) for i in range(width))
        scope = _Scope([], scope_ctes, self.outer)
        for item in node.fromClause or ():
            scope.entries.extend(self.from_item(item, scope))
        return self.targets(node.targetList or (), scope)

    def targets(self, targets: Iterable[Any], scope: _Scope) -> tuple[Slot, ...]:
        out: list[Slot] = []
        for target in targets:
            val = target.val if isinstance(target, ast.ResTarget) else target
            if isinstance(val, ast.ColumnRef) and _strings(val.fields)[-1:] == ["*"]:
                out.append(self.star(val, scope))
            else:
                out.append(Slot(self.expr(val, scope), name=_output_name(target, val)))
        return tuple(out)

    def star(self, ref: ast.ColumnRef, scope: _Scope) -> Slot:
        names = _strings(ref.fields)[:-1]
        if not names:
            stars = [e.star() for e in scope.entries]
            parts: list[str | tuple[Origin, ...]] = []
            for s in stars:
                parts.extend(s.parts)
            expandable = all(s.parts or not s.origin for s in stars)
            origin = _union(s.origin for s in stars)
            return Slot(origin, star=True, parts=tuple(parts) if expandable else ())
        entry = scope.find(names[-1])
        if entry is None:
            return Slot(frozenset({Unknown(f"{'.'.join(names)}.* not in scope")}), star=True)
        return entry.star()

    # FROM ---------------------------------------------------------------

    def from_item(self, item: object, scope: _Scope) -> list[_Entry]:
        if isinstance(item, ast.RangeVar):
            name = str(item.relname)
            if item.schemaname is None and name in scope.ctes:
                cte = scope.ctes[name]
                alias = item.alias.aliasname if item.alias is not None else name
                return [_Entry(str(alias), None, cte.columns, cte.slots, cte.opaque)]
            return [_Entry.relation(item)]
        if isinstance(item, ast.JoinExpr):
            return self.from_item(item.larg, scope) + self.from_item(item.rarg, scope)
        if isinstance(item, ast.RangeSubselect):
            sub_alias = item.alias
            name = str(sub_alias.aliasname) if sub_alias is not None else "?subquery?"
            inner_scope = scope if item.lateral else _Scope([], scope.ctes, scope.outer)
            query = item.subquery
            if isinstance(query, ast.SelectStmt):
                slots = _Walk((inner_scope,)).select(query, scope.ctes)
            else:
                slots = (Slot(frozenset({Unknown("subquery")}), star=True),)
            colnames = sub_alias.colnames if sub_alias is not None else None
            return [_entry_of(name, slots, colnames)]
        if isinstance(item, ast.RangeFunction):
            fn_alias = item.alias
            name = str(fn_alias.aliasname) if fn_alias is not None else _function_alias(item)
            origin = _union(self.expr(f[0], scope) for f in item.functions or ())
            return [_Entry(name, opaque=origin)]
        if isinstance(item, ast.RangeTableSample):
            return self.from_item(item.relation, scope)
        return [_Entry("?", opaque=frozenset({Unknown(f"FROM {type(item).__name__}")}))]

    # expressions --------------------------------------------------------

    def expr(self, node: object, scope: _Scope) -> Origin:
        if node is None or isinstance(node, ast.A_Const | ast.ParamRef | ast.SQLValueFunction):
            return _NONE
        if isinstance(node, ast.ColumnRef):
            return self.column(node, scope)
        if isinstance(node, ast.FuncCall):
            name = ".".join(_strings(node.funcname))
            own: Origin = frozenset({Func(name)})
            return own | self.children(node, scope)
        if isinstance(node, ast.SubLink):
            inner = (
                _Walk((scope,)).select(node.subselect, scope.ctes)
                if isinstance(node.subselect, ast.SelectStmt)
                else (Slot(frozenset({Unknown("sublink")})),)
            )
            return self.expr(node.testexpr, scope) | _union(s.origin for s in inner)
        if isinstance(node, ast.SelectStmt):
            return _union(s.origin for s in _Walk((scope,)).select(node, scope.ctes))
        if isinstance(node, (tuple, list)):
            return _union(self.expr(v, scope) for v in node)
        if isinstance(node, ast.Node):
            return self.children(node, scope)
        return _NONE

    def children(self, node: ast.Node, scope: _Scope) -> Origin:
        return _union(self.expr(getattr(node, attr, None), scope) for attr in node)

    def column(self, ref: ast.ColumnRef, scope: _Scope) -> Origin:
        names = _strings(ref.fields)
        if names[-1] == "*":  # t.* inside an expression: the whole row
            if len(names) == 1:
                return _union(e.row() for e in scope.entries)
            entry = scope.find(names[-2])
            return entry.row() if entry is not None else frozenset({Unknown(".*")})
        if len(names) == 1:
            name = names[0]
            # Unqualified: a column of any entry in scope, or a whole-row reference.
            found: set[Ref] = set()
            for e in scope.all_entries():
                found |= e.column(name)
                if e.name == name:
                    found |= e.row()
            if not found:
                return frozenset({Unknown(f"column {name} with nothing in scope")})
            return frozenset(found)
        qualifier, name = names[-2], names[-1]
        entry = scope.find(qualifier)
        if entry is None:
            # schema.table.column, or a qualifier this walk cannot place: fail closed
            return frozenset({Unknown(f"{'.'.join(names)} not in scope")})
        return entry.column(name)


def _entry_of(name: str, slots: tuple[Slot, ...], colnames: Any) -> _Entry:
    entry = _Entry(name, slots=slots)
    if any(s.star for s in slots):
        return entry  # names cannot be matched to positions: column() falls back to row()
    names = [s.name for s in slots]
    for i, c in enumerate(colnames or ()):
        if i < len(names):
            names[i] = str(getattr(c, "sval", ""))
    columns: dict[str, set[Ref]] = {}
    for n, s in zip(names, slots, strict=True):
        if n is None:
            return entry  # an unnamed column: column() falls back to row()
        columns.setdefault(n, set()).update(s.origin)
    entry.columns = {n: frozenset(o) for n, o in columns.items()}
    return entry


def _output_name(target: object, val: object) -> str | None:
    if isinstance(target, ast.ResTarget) and target.name:
        return str(target.name)
    if isinstance(val, ast.ColumnRef):
        return _strings(val.fields)[-1]
    if isinstance(val, ast.FuncCall):
        return _strings(val.funcname)[-1]
    return None


def _function_alias(item: ast.RangeFunction) -> str:
    funcs = item.functions or ()
    call = funcs[0][0] if funcs else None
    if isinstance(call, ast.FuncCall):
        return _strings(call.funcname)[-1]
    return "?function?"


def _union(origins: Iterable[Origin]) -> Origin:
    out: set[Ref] = set()
    for o in origins:
        out |= o
    return frozenset(out)
