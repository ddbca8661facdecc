"""SQL guardrails in the PostgreSQL relay: real node, real PostgreSQL 15, psql and psycopg.

Each case of issue 15 goes through psql (simple protocol), psycopg (extended
protocol, with parameters where the statement takes them) and psycopg's pipeline
mode. A denied statement gets SQLSTATE 42501 naming the rule; afterwards the
table is still there (checked on the target directly, not through the bastion)
and the same connection runs ``select 1``. ``bastion policy test --sql`` gives
the answer the node gave. The target role is a superuser, so a statement that
leaked through would really drop, copy to a program or alter the system.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, pq

from bastion.store.models import Credset, TargetKind
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.peers.pg_bastion import TOKEN_LINE
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RULES = [
    ("no-drop", "--sql", "drop", "--action", "deny"),
    ("no-bulk", "--sql", "delete-without-where,update-without-where", "--action", "deny"),
    ("no-program", "--sql", "copy-program", "--action", "deny"),
    ("no-alter-system", "--sql", "alter-system", "--action", "deny"),
    ("no-do", "--sql", "do-block", "--action", "deny"),
    ("warn-truncate", "--sql", "truncate", "--tables", "scratch", "--action", "warn"),
    ("end-on-grant", "--sql", "grant", "--action", "terminate"),
    ("lock-on-role", "--sql", "role", "--action", "lock"),
    ("no-set-role", "--sql", "set-role", "--action", "deny"),
    ("try-secret", "--sql", "select", "--tables", "secret_*", "--action", "deny", "--shadow"),
]

# The same path in every xdist worker (parameter ids must match); removed before use.
PROGRAM_FLAG = Path("/tmp/bastion-sqlguard-copy-program-ran")

#: (SQL text, the rule that denies it or None when it runs)
CASES: list[tuple[str, str | None]] = [
    ("DROP TABLE t", "no-drop"),
    ("delete from t", "no-bulk"),
    ("delete from t where id = -1", None),
    ("select 1; drop table t", "no-drop"),
    ("with d as (delete from t returning id) select count(*) from d", "no-bulk"),
    (f"COPY t TO PROGRAM 'touch {PROGRAM_FLAG}'", "no-program"),
    ("ALTER SYSTEM SET work_mem = '7MB'", "no-alter-system"),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", "no-do"),
    ("dRoP   TaBlE   t", "no-drop"),
    ("/* harmless? */ -- select\n DROP /* really */ TABLE t", "no-drop"),
    ("DO $body$ BEGIN PERFORM 1; END $body$", "no-do"),
    ("SELECT $x$ drop table t $x$ AS text", None),
    ("UPDATE t SET name = 'x'", "no-bulk"),
]


@dataclass
class Db:
    """The guarded node, its PostgreSQL target and one database with table ``t``."""

    h: BastionHarness
    server: PgServer
    database: str
    role: str
    password: str

    def table_exists(self, name: str = "t") -> bool:
        with psycopg.connect(self.server.dsn(self.database), autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
        return bool(row and row[0])

    def count(self, where: str = "true") -> int:
        with psycopg.connect(self.server.dsn(self.database), autocommit=True) as conn:
            row = conn.execute(f"SELECT count(*) FROM t WHERE {where}").fetchone()  # noqa: S608
        return int(row[0]) if row else -1

    def user(self) -> tuple[Contractor, str]:
        who = self.h.contractor("sql")
        now = time.time()
        self.h.store.add_grant(
            user_id=who.user.id,
            target_id=self.h.target("pgg").id,
            login=None,
            credset="rw",
            not_before=now,
            not_after=now + 3600,
            reason="test",
            requested_by="test",
            approved_by="test",
            options=(),
            now=now,
        )
        result = who.ssh("db-token", "pgg")
        found = TOKEN_LINE.search(result.stdout.decode(errors="replace"))
        assert result.returncode == 0 and found, (result.stdout, result.stderr)
        return who, found.group(1)

    def connect(self, who: Contractor, token: str, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.h.pg_port,
            user=who.name,
            password=token,
            dbname="pgg",
            sslmode="require",
            connect_timeout=10,
            **kw,
        )

    def psql(self, who: Contractor, token: str, script: str) -> subprocess.CompletedProcess[str]:
        dsn = f"host=127.0.0.1 port={self.h.pg_port} user={who.name} dbname=pgg sslmode=require"
        env = {**os.environ, "PGPASSWORD": token, "PGCONNECT_TIMEOUT": "10"}
        return subprocess.run(
            ["psql", "-X", "-v", "ON_ERROR_STOP=0", "-v", "VERBOSITY=verbose", dsn],
            input="\\set VERBOSITY verbose\n" + script,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    def policy_test(self, who: Contractor, sql: str) -> dict[str, Any]:
        args = ("--user", who.name, "--target", "pgg", "--sql", sql, "--json")
        r = self.h.cli("policy", "test", *args)
        assert r.returncode == 0, r.stderr
        out: dict[str, Any] = json.loads(r.stdout)
        return out


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[Db]:
    h = make_harness(tmp_path_factory.mktemp("sqlguard"))
    PROGRAM_FLAG.unlink(missing_ok=True)
    try:
        for args in RULES:
            r = h.cli("policy", "add", *args)
            assert r.returncode == 0, r.stderr
        role, password = f"guard_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
        pg_server.create_role(role, password, superuser=True)
        database = pg_server.create_database(owner=role)
        with psycopg.connect(pg_server.dsn(database), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id serial PRIMARY KEY, name text)")
            conn.execute("INSERT INTO t (name) VALUES ('one'), ('two')")
            conn.execute("CREATE TABLE scratch (x int)")
            conn.execute(f'ALTER TABLE t OWNER TO "{role}"')
            conn.execute(f'ALTER TABLE scratch OWNER TO "{role}"')
        h.store.add_target(
            name="pgg",
            kind=TargetKind.POSTGRES,
            host=pg_server.host,
            port=pg_server.port,
            logins=[],
            principal="pgg",
            database=database,
            credsets=[Credset("rw", role, password)],
            now=time.time(),
        )
        yield Db(h, pg_server, database, role, password)
        pg_server.drop_database(database)
    finally:
        h.close()


def _untouched(db: Db) -> None:
    assert db.table_exists("t") and db.count() == 2
    assert not PROGRAM_FLAG.exists()


def _node_agrees(db: Db, who: Contractor, sql: str, rule: str | None) -> None:
    answer = db.policy_test(who, sql)
    assert answer["rule"] == rule and answer["action"] == ("deny" if rule else "allow"), answer


@pytest.mark.parametrize(("sql", "rule"), CASES)
def test_psql_simple_protocol(db: Db, sql: str, rule: str | None) -> None:
    who, token = db.user()
    result = db.psql(who, token, f"{sql};\nSELECT 'still-here' AS alive;\n")
    assert "still-here" in result.stdout, result.stderr
    if rule is None:
        assert "42501" not in result.stderr, result.stderr
    else:
        assert f"ERROR:  42501: bastion: statement denied by rule '{rule}'" in result.stderr
    _untouched(db)
    _node_agrees(db, who, sql, rule)
    if rule is not None:
        rows = db.h.wait_audit(who.name, "policy.deny")
        assert rows and rows[0].details["rule"] == rule


# Several statements do not fit one Parse: psql (simple protocol) covers those.
ONE_STATEMENT = [c for c in CASES if ";" not in c[0]]


@pytest.mark.parametrize(("sql", "rule"), ONE_STATEMENT)
def test_psycopg_extended_protocol(db: Db, sql: str, rule: str | None) -> None:
    who, token = db.user()
    with db.connect(who, token, autocommit=True) as conn:
        if rule is None:
            conn.execute(sql)
        else:
            with pytest.raises(errors.InsufficientPrivilege, match=f"rule '{rule}'"):
                conn.execute(sql)
        assert conn.execute("select 1").fetchone() == (1,)
    _untouched(db)


def test_psycopg_parameters(db: Db) -> None:
    who, token = db.user()
    with db.connect(who, token, autocommit=True) as conn:
        conn.execute("delete from t where id = %s", [-1])
        with pytest.raises(errors.InsufficientPrivilege, match="rule 'no-bulk'"):
            conn.execute("with d as (delete from t returning id) select count(*) + %s from d", [0])
        assert conn.execute("select %s::int", [1]).fetchone() == (1,)
        for _ in range(3):  # a denial is never memoised: judged (and audited) each time
            with pytest.raises(errors.InsufficientPrivilege, match="rule 'no-bulk'"):
                conn.execute("update t set name = %s", ["x"])
        assert conn.execute("select 1").fetchone() == (1,)
    assert len(db.h.wait_audit(who.name, "policy.deny")) >= 1
    _untouched(db)


@pytest.mark.parametrize(("sql", "rule"), [c for c in ONE_STATEMENT if c[1]])
def test_psycopg_pipeline(db: Db, sql: str, rule: str) -> None:
    who, token = db.user()
    with db.connect(who, token, autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match=f"rule '{rule}'"):
            with conn.pipeline():
                before = conn.execute("select %s::int", [1])
                conn.execute(sql)
                conn.execute("insert into t (name) values (%s)", ["after-denied"])
        assert before.fetchone() == (1,)
        with conn.pipeline():
            a = conn.execute("select 1")
            b = conn.execute("select %s::int", [2])
        assert (a.fetchone(), b.fetchone()) == ((1,), (2,))
    assert db.count("name = 'after-denied'") == 0
    _untouched(db)


def test_a_remembered_shape_never_lets_another_class_through(db: Db) -> None:
    """Allows are remembered by shape (literals as $n) only when no literal decided a class."""
    who, token = db.user()
    with db.connect(who, token, autocommit=True) as conn:
        for i in (1, 2):  # same shape, new literal each time: one parse
            found = conn.execute(f"select count(*) from t where id = {i}")  # noqa: S608  a literal
            assert found.fetchone() == (1,)
        conn.execute("select set_config('search_path', 'public', false)")
        with pytest.raises(errors.InsufficientPrivilege, match="rule 'no-set-role'"):
            conn.execute("select set_config('role', 'postgres', false)")
        assert conn.execute("select 1").fetchone() == (1,)
    psql = db.psql(who, token, "select set_config('role', 'postgres', false);\n")
    assert "no-set-role" in psql.stderr, psql.stderr
    _untouched(db)


def test_transaction_state_simple(db: Db) -> None:
    """BEGIN; denied; COMMIT answers ROLLBACK, as PostgreSQL does after any error."""
    who, token = db.user()
    script = """
BEGIN;
INSERT INTO t (name) VALUES ('in-tx');
DROP TABLE t;
SELECT 'ignored' AS never;
COMMIT;
SELECT count(*) AS n_in_tx FROM t WHERE name = 'in-tx';
BEGIN;
DROP TABLE t;
ROLLBACK;
SELECT 'alive' AS state;
"""
    result = db.psql(who, token, script)
    assert "42501" in result.stderr and "25P02" in result.stderr, result.stderr
    out = result.stdout
    assert "ROLLBACK" in out and "never" not in out and "alive" in out, out
    assert " 0\n" in out  # the insert before the denial was rolled back
    _untouched(db)


def test_transaction_state_extended(db: Db) -> None:
    who, token = db.user()
    with db.connect(who, token) as conn:  # not autocommit: psycopg opens a transaction
        conn.execute("insert into t (name) values (%s)", ["in-tx"])
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("drop table t")
        status = psycopg.pq.TransactionStatus
        assert conn.info.transaction_status is status.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        after: object = conn.info.transaction_status
        assert after is status.IDLE
        assert conn.execute("select 1").fetchone() == (1,)
        conn.commit()
    _untouched(db)


def test_warn_runs_with_a_notice_and_an_alert(db: Db) -> None:
    who, token = db.user()
    notices: list[str] = []
    with db.connect(who, token, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        conn.execute("TRUNCATE scratch")
        conn.execute("select 1")
    assert any("warn-truncate" in n for n in notices), notices
    rows = db.h.wait_audit(who.name, "policy.warn")
    assert rows and rows[0].details["rule"] == "warn-truncate"


def test_shadow_rule_only_reports(db: Db) -> None:
    who, token = db.user()
    with db.connect(who, token, autocommit=True) as conn:
        conn.execute("create temp table secret_x (a int)")
        conn.execute("select * from secret_x")
    rows = db.h.wait_audit(who.name, "policy.shadow")
    assert rows and rows[0].details["rule"] == "try-secret"


def test_terminate_ends_the_session(db: Db) -> None:
    who, token = db.user()
    with db.connect(who, token, autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError, match="end-on-grant"):
            conn.execute("GRANT SELECT ON t TO PUBLIC")
        assert conn.closed or conn.broken
    with psycopg.connect(db.server.dsn(db.database), autocommit=True) as direct:
        row = direct.execute("SELECT has_table_privilege('public', 't', 'SELECT')").fetchone()
    assert row == (False,)
    wait_until(lambda: bool(db.h.audit(who.name, "session.end")), 15, "the session's end")
    assert db.h.audit(who.name, "policy.terminate")


def test_lock_ends_the_session_and_locks_the_user(db: Db) -> None:
    who, token = db.user()
    with db.connect(who, token, autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("CREATE ROLE intruder")
    user = db.h.store.get_user(who.name)
    assert user is not None and user.locked_until is not None and user.locked_until > time.time()
    with psycopg.connect(db.server.dsn(db.database), autocommit=True) as direct:
        row = direct.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'intruder'").fetchone()
    assert row == (0,)


def test_other_connections_run_while_one_is_judged(db: Db) -> None:
    """Judging is a task per connection: a fresh text on one never stalls another."""
    who, token = db.user()
    with db.connect(who, token, autocommit=True) as a, db.connect(who, token, autocommit=True) as b:
        for i in range(20):
            a.execute(f"select {i} as fresh_{i}")
            assert b.execute(f"select {i} + 1 as other_{i}").fetchone() == (i + 1,)
    _untouched(db)


def test_a_label_rule_follows_the_targets_labels(db: Db) -> None:
    """``--target env=prod``: judged with the labels the target had when the session began
    (the per-session memo never answers for a target whose labels now match a rule)."""
    query = "select count(*) from t"

    def denied(conn: psycopg.Connection[Any]) -> bool:
        try:
            conn.execute(query).fetchone()
        except errors.InsufficientPrivilege as e:
            assert "rule 'prod-no-count'" in str(e)
            return True
        return False

    def fresh_denied() -> bool:
        with db.connect(who, token, autocommit=True) as conn:
            return denied(conn)

    who, token = db.user()
    for args in (
        ("target", "label", "pgg", "env=prod"),
        ("policy", "add", "prod-no-count", "--sql", "select", "--tables", "t",
         "--target", "env=prod", "--action", "deny"),
    ):  # fmt: skip
        r = db.h.cli(*args)
        assert r.returncode == 0, r.stderr
    try:
        wait_until(fresh_denied, 10, "the node applies the new rule to env=prod")
        assert db.h.cli("target", "label", "pgg", "env=dev").returncode == 0
        with db.connect(who, token, autocommit=True) as dev:
            assert not denied(dev) and not denied(dev)  # the second answer is remembered
            assert db.h.cli("target", "label", "pgg", "env=prod").returncode == 0
            assert fresh_denied()  # a new session sees the new label
            assert not denied(dev)  # this one began on env=dev
        assert db.policy_test(who, query)["rule"] == "prod-no-count"
    finally:
        db.h.cli("policy", "remove", "prod-no-count")
        db.h.cli("target", "label", "pgg", "--remove", "env")
    _untouched(db)


@pytest.mark.parametrize(
    "how",
    [
        "SET standard_conforming_strings = off",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
    ],
)
def test_a_statement_hidden_in_a_string_with_standard_conforming_strings_off(
    db: Db, how: str
) -> None:
    """With the setting off, ``'\\'`` does not end a string: what the parser (setting on)
    reads as two harmless strings is a select and a bulk delete on the server. The text
    is also judged as the server reads it then, so the delete is denied and ``t`` stays."""
    who, token = db.user()
    hidden = "select '\\' , '; delete from t -- '"
    with db.connect(who, token, autocommit=True) as conn:
        conn.execute(how)
        # one Query message, as an attacker would send it (psql would split it itself)
        result = conn.pgconn.exec_(hidden.encode())
        assert result.status == pq.ExecStatus.FATAL_ERROR, result.status
        assert b"statement denied by rule 'no-bulk'" in (result.error_message or b"")
        assert conn.execute("SELECT 'still-here'").fetchone() == ("still-here",)
    _untouched(db)
    # With the setting on (the default) the same kind of text is two strings, and runs.
    with db.connect(who, token, autocommit=True) as conn:
        plain = conn.pgconn.exec_(b"select 'C:\\' AS path, 'x' AS other")
        assert plain.status == pq.ExecStatus.TUPLES_OK, plain.error_message
        assert plain.get_value(0, 0) == b"C:\\"
