"""``[alerts] statement_rows`` through the real PostgreSQL relay: psql and psycopg.

A statement returning more rows than the threshold is an ``alert.statement-rows``
row and a marker in the recording, once per statement; a small one is quiet.
The database is this test's own (not pg1/pg2, which other modules share).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bastion.store.models import Credset, TargetKind
from recorder import Marker, RecordingReader
from tests.peers.bastion_node import BastionHarness, make_harness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TARGET = "pgalerts"


@pytest.fixture
def node(tmp_path: Path, pg_server: PgServer) -> Iterator[tuple[BastionHarness, PgTargets]]:
    suffix = secrets.token_hex(3)
    role, password, db = f"alerts_rw_{suffix}", secrets.token_urlsafe(12), f"alerts_{suffix}"
    h = make_harness(tmp_path / "node", overrides={"statement_rows = 0": "statement_rows = 50"})
    try:
        pg_server.create_role(role, password)
        pg_server.execute(f'CREATE DATABASE {db} OWNER "{role}"')
        h.store.add_target(
            name=TARGET,
            kind=TargetKind.POSTGRES,
            host=pg_server.host,
            port=pg_server.port,
            logins=[],
            principal=TARGET,
            database=db,
            credsets=[Credset("readwrite", role, password)],
            now=time.time(),
        )
        yield h, PgTargets(h, pg_server, role, role)
    finally:
        h.close()
        pg_server.execute(f"DROP DATABASE IF EXISTS {db}")


def _markers(h: BastionHarness, session_id: str) -> list[str]:
    def sealed() -> Any:
        row = h.store.get_session(session_id)
        return row if row is not None and row.final_hash is not None else None

    row = wait_until(sealed, 15, f"session {session_id} sealed")
    with RecordingReader.open(str(h.config.recordings_dir / row.recording)) as reader:
        return [e.label for e in reader.events() if isinstance(e, Marker)]


def test_statement_rows_through_psql_and_psycopg(
    node: tuple[BastionHarness, PgTargets],
) -> None:
    h, pg = node
    who = h.contractor("db")
    pg.grant(who, TARGET)
    token = pg.token(who, TARGET)

    script = (
        "SELECT g FROM generate_series(1, 50) g;\n"  # at the threshold: quiet
        "SELECT g FROM generate_series(1, 120) g;\n"
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 500) g;\n"  # no rows returned
        "\\copy (SELECT g FROM generate_series(1, 70) g) TO STDOUT\n"
    )
    r = pg.psql(who, token, script, database=TARGET)
    assert r.returncode == 0, r.stderr
    psql_session = pg.session_of(who)
    rows = h.audit(who.name, "alert.statement-rows")
    assert sorted(a.details["rows"] for a in rows) == [70, 120]
    assert {a.details["session"] for a in rows} == {psql_session.id}
    labels = [m for m in _markers(h, psql_session.id) if m.startswith("alert statement-rows")]
    assert len(labels) == 2 and any("rows=120" in m for m in labels)

    with psycopg.connect(**pg.conninfo(who, TARGET, password=token)) as conn:
        got = conn.execute("SELECT g FROM t WHERE g > %s", [400]).fetchall()
        assert len(got) == 100
        assert conn.execute("SELECT %s::int", [1]).fetchone() == (1,)
    wait_until(lambda: len(h.audit(who.name, "alert.statement-rows")) == 3, 15, "the psycopg alert")
    last = h.audit(who.name, "alert.statement-rows")[-1]
    assert last.details["rows"] == 100 and last.details["sql"] == "SELECT g FROM t WHERE g > $1"
