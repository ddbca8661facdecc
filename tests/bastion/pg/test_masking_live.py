"""Row capture masks by where a value comes from: real node, PostgreSQL 15, psql, psycopg.

A contractor sees everything the credential set can read; the recording must not
keep a masked column's values however the query spells them: an alias, an
expression, a whole row, a view, a COPY. A value whose origin cannot be
established is masked; a value matching ``mask_patterns`` is masked in any column;
plain columns of ordinary tables stay visible (or capture would be useless).
The checks grep the ``bastion export --format jsonl`` of the recording.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bastion.store.models import Credset, TargetKind
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PASSWORD = "PW-SECRET-1f3a77"
TOKEN = "TOK-SECRET-9c2e41"
AWS_KEY = "AKIAQWERTYUIOPASDFGH"  # matches the mask_patterns entry, in column "note"
SECRETS = (PASSWORD, TOKEN, AWS_KEY, PASSWORD.lower(), TOKEN.lower())
SETUP = f"""
CREATE TABLE accounts (id int PRIMARY KEY, login text, password text, api_token text, note text);
INSERT INTO accounts VALUES (1, 'alice', '{PASSWORD}', '{TOKEN}', '{AWS_KEY}');
CREATE VIEW people AS SELECT id, login AS who, upper(password) AS pw FROM accounts;
CREATE VIEW people2 AS SELECT who, pw AS shout FROM people;
CREATE FUNCTION leak() RETURNS text LANGUAGE sql AS $$ SELECT password FROM accounts $$;
"""  # noqa: S608  fixed test data


class Node:
    """A node with capture_rows and mask_patterns on, and target ``pgm``."""

    def __init__(self, harness: BastionHarness, targets: PgTargets) -> None:
        self.harness, self.targets = harness, targets

    def contractor(self) -> tuple[Contractor, str]:
        who = self.harness.contractor("mask")
        self.targets.grant(who, "pgm", "rw")
        return who, self.targets.token(who, "pgm")

    def exported(self, who: Contractor) -> tuple[str, list[dict[str, Any]]]:
        """The session's jsonl export (text) and its ``pg.rows`` payloads."""
        session = self.targets.session_of(who)
        out = self.harness.cli("export", "--format", "jsonl", session.id)
        assert out.returncode == 0, out.stderr
        rows = []
        for line in out.stdout.splitlines()[1:]:
            event = json.loads(line)
            if event.get("name") == "pg.rows":
                rows.append(event["payload"])
        return out.stdout, rows


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[Node]:
    overrides = {
        "capture_rows = 0": "capture_rows = 20",
        "mask_patterns = []": "mask_patterns = ['\\bAKIA[0-9A-Z]{16}\\b']",
    }
    harness = make_harness(tmp_path_factory.mktemp("masking"), overrides=overrides)
    try:
        role, password = f"mask_{secrets.token_hex(3)}", secrets.token_urlsafe(9)
        pg_server.create_role(role, password)
        db = pg_server.create_database(owner=role)
        with psycopg.connect(pg_server.dsn(db, role, password), autocommit=True) as conn:
            conn.execute(SETUP)
        harness.store.add_target(
            name="pgm",
            kind=TargetKind.POSTGRES,
            host=pg_server.host,
            port=pg_server.port,
            logins=[],
            principal="pgm",
            database=db,
            credsets=[Credset("rw", role, password)],
            now=time.time(),
        )
        yield Node(harness, PgTargets(harness, pg_server, role, role))
    finally:
        harness.close()


def _set(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    found = [r for r in rows if r["columns"] == columns]
    assert found, f"no captured result with columns {columns}: {[r['columns'] for r in rows]}"
    return found[0]


def _no_secret(text: str) -> None:
    for s in SECRETS:
        assert s not in text, f"{s!r} reached the recording"


def test_psql_aliases_expressions_whole_rows_views_and_copy_are_masked(node: Node) -> None:
    who, token = node.contractor()
    script = """
SELECT password AS p FROM accounts;
SELECT upper(api_token) FROM accounts;
SELECT row_to_json(t) AS j FROM accounts t;
SELECT t FROM accounts t;
SELECT concat(login, ':', password) AS c, (SELECT api_token FROM accounts) AS sub FROM accounts;
SELECT x FROM (SELECT lower(password) AS x FROM accounts) s;
WITH w AS (SELECT api_token AS k FROM accounts) SELECT k || '!' AS bang FROM w;
SELECT who, pw FROM people;
SELECT shout FROM people2;
SELECT leak() AS l;
SELECT note FROM accounts;
SELECT id, login, length(login) AS n FROM accounts;
COPY accounts TO STDOUT;
COPY (SELECT login, upper(password) FROM accounts) TO STDOUT WITH (FORMAT csv);
SELECT 'visible-' || login AS tagged FROM accounts;
"""
    result = node.targets.psql(who, token, script, database="pgm")
    assert result.returncode == 0, result.stderr
    assert PASSWORD in result.stdout and TOKEN in result.stdout  # the contractor sees them

    text, rows = node.exported(who)
    _no_secret(text)
    assert _set(rows, ["p"])["rows"] == [["***"]]
    assert _set(rows, ["upper"])["rows"] == [["***"]]
    assert _set(rows, ["j"])["rows"] == [["***"]]
    assert _set(rows, ["t"])["rows"] == [["***"]]
    assert _set(rows, ["c", "sub"])["rows"] == [["***", "***"]]
    assert _set(rows, ["x"])["rows"] == [["***"]]
    assert _set(rows, ["bang"])["rows"] == [["***"]]
    assert _set(rows, ["who", "pw"])["rows"] == [["alice", "***"]]  # the view's plain column
    assert _set(rows, ["shout"])["rows"] == [["***"]]  # a view over a view
    assert _set(rows, ["l"])["rows"] == [["***"]]  # a function outside pg_catalog: unknown
    assert _set(rows, ["note"])["rows"] == [["***"]]  # mask_patterns, innocuous column
    assert _set(rows, ["id", "login", "n"])["rows"] == [["1", "alice", "5"]]
    assert _set(rows, ["tagged"])["rows"] == [["visible-alice"]]
    copies = [r for r in rows if r["columns"] and r["columns"][0] == "#1"]
    assert [r["rows"] for r in copies] == [
        [["1", "alice", "***", "***", "***"]],
        [["alice", "***"]],
    ]
    found = node.harness.cli("sessions", "search", PASSWORD)
    assert found.returncode == 0 and PASSWORD not in found.stdout.replace(f"'{PASSWORD}'", "")


def test_psycopg_extended_prepared_and_unknown_origins(node: Node) -> None:
    who, token = node.contractor()
    info = node.targets.conninfo(who, database="pgm", password=token)
    with psycopg.connect(**info, autocommit=True) as conn:
        seen = conn.execute("SELECT password AS p, login FROM accounts WHERE id = %s", (1,))
        assert seen.fetchall() == [(PASSWORD, "alice")]
        for _ in range(3):  # prepared server-side after the first run
            conn.execute("SELECT upper(api_token) AS u FROM accounts", prepare=True).fetchall()
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT row_to_json(a) AS j, a.id FROM accounts a")
            assert cur.fetchall()
        conn.execute("PREPARE q AS SELECT lower(password) AS hidden, login FROM accounts")
        assert conn.execute("EXECUTE q").fetchall() == [(PASSWORD.lower(), "alice")]
        conn.execute("SELECT pw FROM people").fetchall()
        conn.execute("SELECT note, id FROM accounts").fetchall()
    text, rows = node.exported(who)
    _no_secret(text)
    assert _set(rows, ["p", "login"])["rows"] == [["***", "alice"]]
    assert all(r["rows"] == [["***"]] for r in rows if r["columns"] == ["u"])
    assert len([r for r in rows if r["columns"] == ["u"]]) == 3
    j = _set(rows, ["j", "id"])
    assert j["rows"][0][0] == "***" and j["rows"][0][1] != "***"  # binary id stays
    # EXECUTE: the text behind it is not known; the computed column is masked, the
    # plain one still resolves through the catalog.
    assert _set(rows, ["hidden", "login"])["rows"] == [["***", "alice"]]
    assert _set(rows, ["pw"])["rows"] == [["***"]]
    assert _set(rows, ["note", "id"])["rows"] == [["***", "1"]]


def test_qualified_user_function_is_unknown(node: Node) -> None:
    """A schema-qualified function outside pg_catalog may read anything: masked."""
    who, token = node.contractor()
    script = "SELECT public.leak() AS qualified, 'shown' AS plain;\n"
    result = node.targets.psql(who, token, script, database="pgm")
    assert result.returncode == 0 and PASSWORD in result.stdout, result.stderr
    text, rows = node.exported(who)
    _no_secret(text)
    assert _set(rows, ["qualified", "plain"])["rows"] == [["***", "shown"]]
