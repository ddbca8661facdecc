"""Database targets behind the test bastion, and contractors' ways to reach them.

``PgTargets`` puts a real PostgreSQL 15 (the ``pg_server`` fixture) behind the
running test bastion as two targets: ``pg1`` (database ``app``, credential sets
``readwrite`` and ``readonly`` mapped to real roles with those privileges) and
``pg2`` (another database). Contractors get tokens the real way, with
``ssh ... db-token TARGET`` through the bastion (public key + TOTP), and connect
with psql or psycopg over TLS to the bastion's PostgreSQL listener.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from bastion.pg.query_event import QueryEvent, resolve_queries
from bastion.store.models import Credset, Grant, SessionRecord, TargetKind
from recorder import RecordingReader
from tests.peers.bastion_node import BastionHarness, Contractor
from tests.peers.postgres import PgServer

TOKEN_LINE = re.compile(r"token:\s*(\S+)")


@dataclass
class PgTargets:
    """pg1 and pg2 registered on ``harness``, backed by ``server``."""

    harness: BastionHarness
    server: PgServer
    rw_role: str
    ro_role: str

    @classmethod
    def create(cls, harness: BastionHarness, server: PgServer) -> PgTargets:
        """Roles, databases and targets (idempotent per harness: reuses existing targets)."""
        if harness.store.get_target("pg1") is not None:
            rw = next(c.user for c in harness.target("pg1").credsets if c.name == "readwrite")
            ro = next(c.user for c in harness.target("pg1").credsets if c.name == "readonly")
            return cls(harness, server, rw, ro)
        suffix = secrets.token_hex(3)
        rw, ro = f"app_rw_{suffix}", f"app_ro_{suffix}"
        rw_pw, ro_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        server.create_role(rw, rw_pw)
        server.create_role(ro, ro_pw)
        server.execute("DROP DATABASE IF EXISTS app")
        server.execute(f'CREATE DATABASE app OWNER "{rw}"')
        server.execute("DROP DATABASE IF EXISTS other")
        server.execute(f'CREATE DATABASE other OWNER "{rw}"')
        with psycopg.connect(server.dsn("app", rw, rw_pw), autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text, secret text)")
            conn.execute("INSERT INTO items (name, secret) VALUES ('one', 's1'), ('two', 's2')")
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{ro}"')
        now = time.time()
        for name, db in (("pg1", "app"), ("pg2", "other")):
            harness.store.add_target(
                name=name,
                kind=TargetKind.POSTGRES,
                host=server.host,
                port=server.port,
                logins=[],
                principal=name,
                database=db,
                credsets=[Credset("readwrite", rw, rw_pw), Credset("readonly", ro, ro_pw)],
                now=now,
            )
        return cls(harness, server, rw, ro)

    def grant(
        self,
        who: Contractor,
        target: str = "pg1",
        credset: str = "readwrite",
        seconds: float = 3600,
    ) -> Grant:
        """A database grant for ``who`` from now."""
        now = time.time()
        return self.harness.store.add_grant(
            user_id=who.user.id,
            target_id=self.harness.target(target).id,
            login=None,
            credset=credset,
            not_before=now,
            not_after=now + seconds,
            reason="test",
            requested_by="test",
            approved_by="test",
            options=(),
            now=now,
        )

    def token(self, who: Contractor, target: str = "pg1", credset: str | None = None) -> str:
        """A database token, fetched the contractor's way: ``ssh bastion db-token TARGET``."""
        args = ["db-token", target] + ([credset] if credset else [])
        result = who.ssh(*args)
        out = result.stdout.decode(errors="replace")
        found = TOKEN_LINE.search(out)
        assert result.returncode == 0 and found, (result.returncode, out, result.stderr)
        return found.group(1)

    def conninfo(self, who: Contractor, database: str = "pg1", **extra: str) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect (TLS, the bastion's listener)."""
        return {
            "host": "127.0.0.1",
            "port": self.harness.pg_port,
            "user": who.name,
            "dbname": database,
            "sslmode": "require",
            "connect_timeout": 10,
            **extra,
        }

    def libpq_env(self, who: Contractor, token: str) -> dict[str, str]:
        """The environment that points libpq clients (pgbench, psql) at the bastion."""
        return {
            **os.environ,
            "PGPASSWORD": token,
            "PGSSLMODE": "require",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.harness.pg_port),
            "PGUSER": who.name,
        }

    def psql(
        self,
        who: Contractor,
        token: str,
        script: str,
        database: str = "pg1",
        args: Sequence[str] = (),
        sslmode: str = "require",
    ) -> subprocess.CompletedProcess[str]:
        """Run real ``psql`` through the bastion with ``script`` on stdin."""
        dsn = (
            f"host=127.0.0.1 port={self.harness.pg_port} user={who.name} "
            f"dbname={database} sslmode={sslmode}"
        )
        env = {**os.environ, "PGPASSWORD": token, "PGCONNECT_TIMEOUT": "10"}
        env.pop("PGSERVICEFILE", None)
        return subprocess.run(
            ["psql", "-X", "-v", "ON_ERROR_STOP=0", *args, dsn],
            input=script,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    def session_of(self, who: Contractor, timeout: float = 15) -> SessionRecord:
        """The contractor's newest database session, once it has ended and been audited."""
        self.harness.wait_audit(who.name, "session.end", timeout)
        sessions = self.harness.store.list_sessions(user=who.name)
        assert sessions, f"no session for {who.name}"
        return sessions[0]

    def queries(self, session: SessionRecord) -> list[dict[str, Any]]:
        """The ``pg.query`` payloads of a finished session's recording, in order, as
        readers see them (prepared statements' text resolved; ``raw``: as recorded)."""
        return self.raw_queries(session, resolved=True)

    def raw_queries(self, session: SessionRecord, resolved: bool = False) -> list[dict[str, Any]]:
        """The ``pg.query`` payloads as recorded (``sql_ref`` references kept)."""
        assert session.recording is not None
        path = str(self.harness.config.recordings_dir / session.recording)
        with RecordingReader.open(path) as reader:
            events = resolve_queries(reader.events()) if resolved else reader.events()
            return [q.to_payload() for e in events if (q := QueryEvent.from_event(e))]
