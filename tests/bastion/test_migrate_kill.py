"""SIGKILL a node's start-up migration mid-way, on SQLite and on a real PostgreSQL (F6).

All pending migrations run in one transaction, so a kill anywhere inside it leaves the
schema at the version it had before; the next start (``open_store``) applies them all.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from bastion.secretbox import SecretBox
from bastion.store import open_store
from bastion.store.backends import connect
from bastion.store.migrations import LATEST_VERSION, MIGRATIONS, migrate, schema_version

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
BEFORE = 5  # the database starts at this version: an upgrade, not a fresh install
STOPS = ("6:recorded", "8:first", "9:first", f"{LATEST_VERSION}:recorded")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("pg_url")
    return url


def _child(url: str, stop: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bastion.migrate_kill_child", url, stop],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_at(url: str, stop: str) -> None:
    child = _child(url, stop)
    try:
        assert child.stdout is not None and child.stderr is not None
        line = child.stdout.readline()
        assert line == f"at {stop}\n", (line, child.stderr.read())
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def _version(url: str) -> int:
    with closing(connect(url)) as backend:
        return schema_version(backend)


def _has_table(url: str, table: str) -> bool:
    with closing(connect(url)) as backend:
        return backend.table_exists(table)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", STOPS)
def test_a_migration_killed_mid_way_changes_nothing_and_the_next_start_completes(
    db_url: str, stop: str
) -> None:
    upto = tuple(m for m in MIGRATIONS if m.version <= BEFORE)
    with closing(connect(db_url)) as backend:
        assert migrate(backend, T0, upto) == BEFORE
    _kill_at(db_url, stop)
    assert _version(db_url) == BEFORE
    assert not _has_table(db_url, "policy_rules")  # migration 6's table: rolled back
    assert _has_table(db_url, "access_requests")  # migration 5's: kept
    # the next start takes the migration lock at once (the dead one's is gone) and completes
    with open_store(db_url, SecretBox(SecretBox.generate_key())) as store:
        assert store.schema_version() == LATEST_VERSION
        store.list_users()
    assert _has_table(db_url, "policy_rules")


def test_the_child_migrates_to_the_end_when_not_stopped(tmp_path: Path) -> None:
    """The harness itself: with no stop, the child's start-up migration completes."""
    url = f"sqlite:///{tmp_path}/state.db"
    r = subprocess.run(
        [sys.executable, "-m", "tests.bastion.migrate_kill_child", url, "none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stdout == f"done {LATEST_VERSION}\n", r.stderr
