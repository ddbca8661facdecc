"""The recording of a fixed workload holds exactly the events it held before the fast path.

Issue 17 made the relay faster without recording less. This test pins what
"less" means: a deterministic workload (pgbench with a fixed script in the
simple, extended and prepared modes, then a psycopg session with parameters,
prepared statements, a pipeline, an error, COPY both ways and a server-side
cursor) goes through the node, and every ``pg.query`` event of its recordings,
as a reader sees it (statement text resolved), is compared with
``recording_equivalence.json``. That file was written by the code *before*
the fast path (commit dd002be), so a dropped, reordered or changed event (its
statement, parameters, tags, row count, error, transaction status) fails here.
Timings are the only fields left out: they cannot repeat.

To rewrite the golden file after an intended change of the events:
``BASTION_WRITE_GOLDEN=1 python3 -m pytest tests/bastion/pg/test_recording_equivalence.py``
(and say why in the commit).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.peers.bastion_node import BastionHarness, Contractor
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GOLDEN = Path(__file__).with_name("recording_equivalence.json")
_TIMINGS = ("start", "duration_ms")

PGBENCH_SCRIPT = """\
\\set a 7
BEGIN;
SELECT :a::int + 1 AS x;
SELECT g FROM generate_series(1, :a) g;
SELECT 'text ' || :a AS t;
END;
"""
"""Fixed values (no random draws), so each mode sends the same statements every run."""


@pytest.fixture(scope="module")
def pg(bastion: BastionHarness, pg_server: PgServer) -> Iterator[PgTargets]:
    """pg1/pg2 behind the shared bastion."""
    yield PgTargets.create(bastion, pg_server)


def _pgbench(pg: PgTargets, who: Contractor, token: str, script: Path) -> None:
    exe = pg.server.bin_dir / "pgbench"
    env = pg.libpq_env(who, token)
    for mode in ("simple", "extended", "prepared"):
        run = subprocess.run(
            [str(exe) if exe.exists() else "pgbench", "-n", "-M", mode, "-c", "1", "-t", "3"]
            + ["-f", str(script), "pg1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "number of transactions actually processed: 3/3" in run.stdout, run.stdout


def _psycopg(pg: PgTargets, who: Contractor, token: str) -> None:
    info = pg.conninfo(who, password=token, application_name="equivalence")
    with psycopg.connect(**info) as conn:
        conn.execute("CREATE TEMP TABLE eq (id int PRIMARY KEY, name text, blob bytea)")
        conn.execute("INSERT INTO eq VALUES (%s, %s, %s)", [1, "one", b"\x00\x01"])
        conn.execute("INSERT INTO eq VALUES (%s, %s, %s)", [2, None, None])
        for i in range(3, 7):  # the same statement again and again: prepared from the 1st
            conn.execute("INSERT INTO eq VALUES (%s, %s, NULL)", [i, f"n{i}"], prepare=True)
        conn.commit()
        with conn.cursor() as cur:
            cur.executemany("UPDATE eq SET name = %s WHERE id = %s", [("u3", 3), ("u4", 4)])
            cur.execute("SELECT %b::int + 1", [41], binary=True)
            assert cur.fetchone() == (42,)
            for i in (1, 2, 3):
                cur.execute("SELECT name FROM eq WHERE id = %s", [i], prepare=True)
        conn.commit()
        with conn.pipeline():
            for i in range(7, 10):
                conn.execute("INSERT INTO eq VALUES (%s, %s, NULL)", [i, f"p{i}"])
        conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO eq VALUES (%s, 'dup', NULL)", [1])
        conn.rollback()
        with conn.cursor(name="eq_cursor") as named:
            named.itersize = 3
            named.execute("SELECT id FROM eq ORDER BY id")
            assert [r[0] for r in named] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
        conn.commit()
        with conn.cursor() as cur:
            with cur.copy("COPY eq (id, name) FROM STDIN") as copy:
                copy.write_row((20, "c20"))
                copy.write_row((21, "c21"))
            with cur.copy("COPY (SELECT id, name FROM eq ORDER BY id) TO STDOUT") as copy:
                assert len(list(copy.rows())) == 11
        conn.commit()
        conn.execute("SELECT 1; SELECT 2")  # one simple Query, two statements
        conn.execute("")  # EmptyQueryResponse
        conn.commit()


def _events(pg: PgTargets, who: Contractor, sessions: int) -> list[list[dict[str, Any]]]:
    def sealed() -> list[Any]:
        found = pg.harness.store.list_sessions(user=who.name, limit=20)
        return found if len(found) >= sessions and all(s.final_hash for s in found) else []

    found = wait_until(sealed, 60, f"{sessions} sessions recorded and sealed")
    ordered = sorted(found, key=lambda s: s.started_at)
    return [
        [{k: v for k, v in q.items() if k not in _TIMINGS} for q in pg.queries(s)] for s in ordered
    ]


def test_recording_of_a_fixed_workload_matches_the_golden_events(
    pg: PgTargets, tmp_path: Path
) -> None:
    who = pg.harness.contractor("db")
    pg.grant(who, "pg1", "readwrite")
    token = pg.token(who)
    script = tmp_path / "fixed.sql"
    script.write_text(PGBENCH_SCRIPT)
    _pgbench(pg, who, token, script)
    _psycopg(pg, who, token)
    got = _events(pg, who, 7)  # pgbench: a first connection of its own, then the client
    if os.environ.get("BASTION_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert len(got) == len(expected), "sessions recorded"
    for n, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert len(mine) == len(theirs), f"session {n}: number of pg.query events"
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            assert a == b, f"session {n}, event {i}"
