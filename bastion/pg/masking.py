"""Which captured columns to mask: origins resolved against the target's catalog.

``TargetCatalog`` asks the target itself, over a side connection the node opens
with the session's credential set (never through the contractor's connection),
what a RowDescription's (table OID, attribute number) is, what a relation named
in a statement contains and how a view is defined. Facts are cached per target
for ``ttl`` seconds and dropped when the relay sees DDL; the side connection is
opened only when a fact is missing and closed after the lookups.

``TargetCatalog.plan`` turns one result description into a tuple of booleans
(mask this column?), cached by (statement text, statement index, description):
the catalog and the parse are paid once per distinct statement, the rows only
pay for replacing fields. Anything that cannot be established (the catalog
unreachable, an unknown relation, a function outside pg_catalog, an unparsable
text) masks the column: this fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from bastion.pg.origins import (
    DATA_READING_FUNCTIONS,
    Col,
    Func,
    Origin,
    Output,
    Ref,
    Row,
    Slot,
    Unknown,
    statement_outputs,
)
from bastion.pg.query_log import FieldKey, MaskRules, PlanKey
from bastion.store.models import Credset, Target

__all__ = ["FieldKey", "MaskPlanner", "Masking", "PlanKey", "SessionMasks", "TargetCatalog"]

log = logging.getLogger(__name__)

_MAX_DEPTH = 8  # views over views over views…
_MAX_PLANS = 4096
_VIEW_KINDS = ("v", "m")

_COLUMN_SQL = (
    "select n.nspname, c.relname, c.relkind::text, a.attname from pg_attribute a"
    " join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace"
    " where a.attrelid = %s and a.attnum = %s"
)
_RELATION_SQL = (
    "select c.oid::int8, c.relkind::text, array(select a.attname::text from pg_attribute a"
    " where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum),"
    " case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end"
    " from pg_class c where c.oid = {}"
)
_FUNCTION_SQL = (
    "select exists(select 1 from pg_proc where proname = %s"
    " and pronamespace = 'pg_catalog'::regnamespace)"
)


@dataclass(frozen=True)
class Relation:
    """What the catalog says of one relation."""

    oid: int
    kind: str
    columns: tuple[str, ...]
    viewdef: str | None


def _quoted(name: str) -> str:
    """``app.users`` as written (already case-folded by the parser) → ``"app"."users"``."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


class _Facts:
    """A TTL map of catalog answers; a miss is a KeyError."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_items: int = 50_000) -> None:
        self.ttl, self.clock, self.max_items = ttl, clock, max_items
        self._items: dict[object, tuple[float, object]] = {}

    def get(self, key: object) -> object:
        at, value = self._items[key]
        if self.clock() - at > self.ttl:
            del self._items[key]
            raise KeyError(key)
        return value

    def put(self, key: object, value: object) -> None:
        if len(self._items) >= self.max_items:
            self._items.clear()  # rare: start afresh rather than track ages
        self._items[key] = (self.clock(), value)

    def clear(self) -> None:
        self._items.clear()


class TargetCatalog:
    """Catalog facts and masking plans of one target database, shared by its sessions."""

    def __init__(
        self,
        target: Target,
        credset: Credset,
        rules: MaskRules,
        *,
        ttl: float = 300.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target, self.credset, self.rules = target, credset, rules
        self.timeout = timeout
        self._facts = _Facts(ttl, clock)
        self._plans = _Facts(ttl, clock, _MAX_PLANS)
        self._lock = asyncio.Lock()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.lookups = 0
        """Queries sent to the catalog (tests and benchmarks read it)."""

    def invalidate(self) -> None:
        """Forget every fact and plan (DDL was seen)."""
        self._facts.clear()
        self._plans.clear()

    def cached_plan(self, key: PlanKey) -> tuple[bool, ...] | None:
        """The plan for ``key`` if known and fresh."""
        try:
            return self._plans.get(key)  # type: ignore[return-value]
        except KeyError:
            return None

    async def plan(self, key: PlanKey, copy_columns: int | None = None) -> tuple[bool, ...]:
        """Mask flags for the fields of ``key`` (or ``copy_columns`` COPY columns); never raises."""
        found = self.cached_plan(key)
        if found is not None:
            return found
        width = copy_columns if copy_columns is not None else len(key[2])
        async with self._lock:
            found = self.cached_plan(key)  # another session may have just planned it
            if found is not None:
                return found
            try:
                async with asyncio.timeout(self.timeout):
                    flags = await MaskPlanner(self, self.rules).plan(key, copy_columns)
            except Exception as e:  # the catalog is unreachable or a bug: fail closed
                log.warning(
                    "masking every captured column of a result on %s: origins not resolved: %s",
                    self.target.name,
                    e,
                )
                return (True,) * width
            finally:
                await self._close()
        self._plans.put(key, flags)
        return flags

    # catalog facts -------------------------------------------------------

    async def column(self, oid: int, attnum: int) -> tuple[str, str, str] | None:
        """(qualified relation, relkind, column name) of a table OID and attribute number."""
        key = ("col", oid, attnum)
        try:
            return self._facts.get(key)  # type: ignore[return-value]
        except KeyError:
            pass
        rows = await self._query(_COLUMN_SQL, (oid, attnum))
        value = None
        if rows:
            nsp, rel, kind, att = rows[0]
            value = (f"{nsp}.{rel}", str(kind), str(att))
        self._facts.put(key, value)
        return value

    async def relation(self, name: str | int) -> Relation | None:
        """A relation by name as written (resolved on the side connection's search_path) or OID."""
        key = ("rel", name)
        try:
            return self._facts.get(key)  # type: ignore[return-value]
        except KeyError:
            pass
        if isinstance(name, int):
            rows = await self._query(_RELATION_SQL.format("%s"), (name,))
        else:
            rows = await self._query(_RELATION_SQL.format("to_regclass(%s)"), (_quoted(name),))
        value = None
        if rows:
            oid, kind, columns, viewdef = rows[0]
            value = Relation(int(oid), str(kind), tuple(columns), viewdef)
        self._facts.put(key, value)
        return value

    async def builtin(self, name: str) -> bool:
        """Whether ``name`` (as called) is a pg_catalog function that reads only its arguments."""
        parts = name.split(".")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog"):
            return False
        if parts[-1] in DATA_READING_FUNCTIONS:
            return False
        key = ("fn", parts[-1])
        try:
            return bool(self._facts.get(key))
        except KeyError:
            pass
        rows = await self._query(_FUNCTION_SQL, (parts[-1],))
        value = bool(rows and rows[0][0])
        self._facts.put(key, value)
        return value

    async def _query(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        self.lookups += 1
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = await self._connect()
        async with conn.cursor() as cur:
            await cur.execute(sql, params)
            return list(await cur.fetchall())

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        t = self.target
        extra: dict[str, Any] = {"sslmode": t.tls_mode}
        if t.tls_ca:
            extra["sslrootcert"] = t.tls_ca
        return await psycopg.AsyncConnection.connect(
            host=t.host,
            port=t.port,
            dbname=t.database or t.name,
            user=self.credset.user,
            password=self.credset.password or "",
            application_name="bastion-masking",
            connect_timeout=max(1, int(self.timeout)),
            autocommit=True,
            **extra,
        )

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as e:  # closing a dead connection: nothing to do
                log.debug("closing the masking catalog connection: %s", e)


class MaskPlanner:
    """One planning pass: decides each column, memoising refs within the pass."""

    def __init__(self, catalog: TargetCatalog, rules: MaskRules) -> None:
        self.catalog, self.rules = catalog, rules
        self._memo: dict[tuple[Ref, int], bool] = {}

    async def plan(self, key: PlanKey, copy_columns: int | None) -> tuple[bool, ...]:
        sql, index, fields = key
        output = _statement(sql, index)
        if copy_columns is not None:
            origins = await self.slot_origins(output, copy_columns)
            return tuple([await self.origin_masked(o, 0) for o in origins])
        origins = await self.slot_origins(output, len(fields))
        flags: list[bool] = []
        for (name, oid, attnum), origin in zip(fields, origins, strict=True):
            if self.rules.masks(name):
                flags.append(True)
            elif oid:
                flags.append(await self.table_column_masked(oid, attnum, 0))
            else:
                flags.append(await self.origin_masked(origin, 0))
        return tuple(flags)

    async def slot_origins(self, output: Output, width: int) -> list[Origin]:
        """One origin per output column; ``Unknown`` where slots and columns do not line up."""
        unknown: Origin = frozenset({Unknown(output.why or "columns not matched")})
        slots = output.slots
        if slots is None:
            return [unknown] * width
        stars = [s for s in slots if s.star]
        if not stars:
            return [s.origin for s in slots] if len(slots) == width else [unknown] * width
        expanded: list[Origin] = []
        for s in slots:
            more = await self._expand(s) if s.star else [s.origin]
            if more is None:
                break
            expanded.extend(more)
        else:
            if len(expanded) == width:
                return expanded
        if len(stars) == 1:  # the one star covers what the plain slots leave
            star_width = width - (len(slots) - 1)
            if star_width >= 0:
                out: list[Origin] = []
                for s in slots:
                    out.extend([s.origin] * star_width if s.star else [s.origin])
                return out
        return [unknown] * width

    async def _expand(self, slot: Slot) -> list[Origin] | None:
        if not slot.parts:
            return None
        out: list[Origin] = []
        for part in slot.parts:
            if isinstance(part, tuple):
                out.extend(part)
                continue
            rel = await self.catalog.relation(part)
            if rel is None:
                return None
            out.extend(frozenset({Col(part, c)}) for c in rel.columns)
        return out

    async def origin_masked(self, origin: Origin, depth: int) -> bool:
        for ref in origin:
            if await self.ref_masked(ref, depth):
                return True
        return False

    async def ref_masked(self, ref: Ref, depth: int) -> bool:
        key = (ref, depth)
        if key not in self._memo:
            self._memo[key] = await self._ref_masked(ref, depth)
        return self._memo[key]

    async def _ref_masked(self, ref: Ref, depth: int) -> bool:
        if depth > _MAX_DEPTH or isinstance(ref, Unknown):
            return True
        if isinstance(ref, Func):
            return not await self.catalog.builtin(ref.name)
        if isinstance(ref, Col) and self.rules.masks(ref.name):
            return True
        rel = await self.catalog.relation(ref.rel)
        if rel is None:
            return True  # not visible to the side connection (a temp table, a search_path)
        if isinstance(ref, Col):
            if ref.name not in rel.columns:
                return False  # another relation in scope has it
            if rel.kind in _VIEW_KINDS:
                return await self.view_column_masked(rel, rel.columns.index(ref.name), depth)
            return False
        assert isinstance(ref, Row)  # noqa: S101  the last kind
        for i, name in enumerate(rel.columns):
            if self.rules.masks(name):
                return True
            if rel.kind in _VIEW_KINDS and await self.view_column_masked(rel, i, depth):
                return True
        return False

    async def table_column_masked(self, oid: int, attnum: int, depth: int) -> bool:
        found = await self.catalog.column(oid, attnum)
        if found is None:
            return True
        _rel, kind, name = found
        if self.rules.masks(name):
            return True
        if kind in _VIEW_KINDS:
            rel = await self.catalog.relation(oid)
            if rel is None or name not in rel.columns:
                return True
            return await self.view_column_masked(rel, rel.columns.index(name), depth)
        return False

    async def view_column_masked(self, view: Relation, position: int, depth: int) -> bool:
        """A view's column through its definition (``pg_get_viewdef``, parsed)."""
        if view.viewdef is None:
            return True
        output = statement_outputs(view.viewdef)[0]
        origins = await self.slot_origins(output, len(view.columns))
        return await self.origin_masked(origins[position], depth + 1)


def _statement(sql: str | None, index: int) -> Output:
    if sql is None:
        return Output(None, "statement text unknown")
    outputs = statement_outputs(sql)
    if index >= len(outputs):
        return Output(None, "statement index beyond the parsed text")
    return outputs[index]


class SessionMasks:
    """A session's ``MaskSource``: cached plans at once, misses resolved in the background."""

    def __init__(self, catalog: TargetCatalog, spawn: Callable[[Any], asyncio.Task[Any]]) -> None:
        self.catalog = catalog
        self._spawn = spawn
        self._tasks: set[asyncio.Task[Any]] = set()

    def request(
        self, key: PlanKey, copy_columns: int | None, done: Callable[[tuple[bool, ...]], None]
    ) -> tuple[bool, ...] | None:
        """The flags now if cached, else None and ``done(flags)`` once resolved."""
        found = self.catalog.cached_plan(key)
        if found is not None:
            return found

        async def resolve() -> None:
            done(await self.catalog.plan(key, copy_columns))

        task = self._spawn(resolve())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def settle(self, timeout: float) -> None:  # noqa: ASYNC109  a bound, not a deadline API
        """Wait (at most ``timeout`` s) for the plans still being resolved."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


class Masking:
    """The node's masking state: rules, value patterns and one catalog per target database."""

    def __init__(self, rules: MaskRules, ttl: float = 300.0, timeout: float = 10.0) -> None:
        self.rules, self.ttl, self.timeout = rules, ttl, timeout
        self._catalogs: dict[tuple[int, str | None], TargetCatalog] = {}

    def catalog(self, target: Target, credset: Credset) -> TargetCatalog:
        """The shared catalog of ``target`` (opened with the first session's credential set)."""
        key = (target.id, target.database)
        found = self._catalogs.get(key)
        if found is None or found.target != target:  # an edited target starts afresh
            found = self._catalogs[key] = TargetCatalog(
                target, credset, self.rules, ttl=self.ttl, timeout=self.timeout
            )
        return found
