"""Masking plans against a real PostgreSQL 15 catalog (no node): origins, caching, failure.

The RowDescriptions come from the real server (psycopg's cursor description carries
the table OID and attribute number), the plans from ``TargetCatalog``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from bastion.pg.masking import TargetCatalog
from bastion.pg.query_log import MaskRules, PlanKey
from bastion.store.models import Credset, Target, TargetKind
from tests.peers.postgres import PgServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RULES = MaskRules(("*password*", "*token*"))
SETUP = """
CREATE TABLE accounts (id int PRIMARY KEY, login text, password text, api_token text);
CREATE TABLE plain (id int, label text);
CREATE VIEW people AS SELECT id, login AS who, password AS pw FROM accounts;
CREATE FUNCTION mine(text) RETURNS text LANGUAGE sql AS $$ SELECT $1 $$;
"""


@dataclass
class Db:
    dsn: str
    target: Target
    credset: Credset

    def catalog(self, **kw: Any) -> TargetCatalog:
        return TargetCatalog(self.target, self.credset, RULES, **kw)

    def key(self, sql: str) -> PlanKey:
        """The PlanKey of ``sql`` as the relay would build it from the real RowDescription."""
        with psycopg.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(sql)
            assert cur.pgresult is not None
            res = cur.pgresult
            fields = tuple(
                (res.fname(i).decode(), res.ftable(i), res.ftablecol(i))  # type: ignore[union-attr]
                for i in range(res.nfields)
            )
        return (sql, 0, fields)


@pytest.fixture(scope="module")
def db(pg_server: PgServer) -> Iterator[Db]:
    role, password = f"mcat_{secrets.token_hex(3)}", secrets.token_urlsafe(9)
    pg_server.create_role(role, password)
    name = pg_server.create_database(owner=role)
    dsn = pg_server.dsn(name, role, password)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SETUP)
    credset = Credset("rw", role, password)
    target = Target(
        id=1,
        name="cat",
        kind=TargetKind.POSTGRES,
        host=pg_server.host,
        port=pg_server.port,
        logins=(),
        principal="cat",
        host_keys=(),
        host_ca_keys=(),
        database=name,
        credsets=(credset,),
        created_at=time.time(),
        tls_mode="disable",
    )
    yield Db(dsn, target, credset)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT password AS p, login AS l FROM accounts", (True, False)),
        ("SELECT upper(api_token), lower(login) FROM accounts", (True, False)),
        ("SELECT row_to_json(a), a.id FROM accounts a", (True, False)),
        ("SELECT a FROM accounts a", (True,)),
        ("SELECT row_to_json(p) FROM plain p", (False,)),
        ("SELECT * FROM people", (False, False, True)),
        ("SELECT upper(who), pw || '' FROM people", (False, True)),
        ("SELECT mine(label) FROM plain", (True,)),  # outside pg_catalog: unknown
        ("SELECT x FROM (SELECT login || api_token AS x FROM accounts) s", (True,)),
        ("SELECT 1 AS one UNION SELECT length(password) FROM accounts", (True,)),
        ("SELECT count(*), max(label) FROM plain", (False, False)),
        ("SELECT query_to_xml('select 1', true, false, '')", (True,)),
    ],
)
async def test_plans_follow_origins(db: Db, sql: str, expected: tuple[bool, ...]) -> None:
    assert await db.catalog().plan(db.key(sql)) == expected


async def test_unknown_texts_fail_closed(db: Db) -> None:
    catalog = db.catalog()
    fields = (("x", 0, 0), ("login", 0, 0))
    assert await catalog.plan(("selec nonsense", 0, fields)) == (True, True)
    assert await catalog.plan((None, 0, fields)) == (True, True)
    assert await catalog.plan(("EXECUTE q", 0, fields)) == (True, True)


async def test_plan_is_cached_and_ddl_invalidates(db: Db) -> None:
    catalog = db.catalog()
    key = db.key("SELECT upper(login), id FROM accounts")
    assert await catalog.plan(key) == (False, False)
    asked = catalog.lookups
    assert await catalog.plan(key) == (False, False)
    assert catalog.cached_plan(key) == (False, False) and catalog.lookups == asked
    catalog.invalidate()
    assert catalog.cached_plan(key) is None


async def test_unreachable_catalog_masks_everything(db: Db) -> None:
    dead = Target(**{**db.target.__dict__, "port": 1})
    catalog = TargetCatalog(dead, db.credset, RULES, timeout=2)
    key: PlanKey = ("SELECT upper(login) FROM accounts", 0, (("upper", 0, 0),))
    assert await catalog.plan(key) == (True,)


async def test_temporary_view_of_another_session(db: Db) -> None:
    """The contractor's temp view is seen by OID from the side connection."""
    with psycopg.connect(db.dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP VIEW tv AS SELECT upper(password) AS up, login FROM accounts")
        cur.execute("SELECT up, login FROM tv")
        res = cur.pgresult
        assert res is not None
        fields = tuple(
            (res.fname(i).decode(), res.ftable(i), res.ftablecol(i))  # type: ignore[union-attr]
            for i in range(2)
        )
        plan = await db.catalog().plan(("SELECT up, login FROM tv", 0, fields))
        assert plan == (True, False)
    # Once that session is gone its view is too: the same description is now unknown.
    assert await db.catalog().plan(("SELECT up, login FROM tv", 0, fields)) == (True, True)
