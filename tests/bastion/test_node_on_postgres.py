"""The same node code on PostgreSQL state: login, session, recording, revoke, audit chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.bastion_node import make_harness

pytestmark = pytest.mark.integration


def test_node_runs_on_postgresql_state(tmp_path: Path, pg_url: str) -> None:
    b = make_harness(tmp_path / "node", state_url=pg_url)
    try:
        assert b.store.backend == "postgresql"
        c = b.contractor()
        g = b.grant(c, "web1", options=("scp",))
        r = c.ssh("echo on-postgres", target="web1")
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"on-postgres\n"
        b.wait_audit(c.name, "session.end")
        (s,) = b.store.list_sessions(user=c.name)
        assert s.final_hash and s.recording and s.end_reason == "exit"
        assert b.cli("grant", "revoke", str(g.id)).returncode == 0
        r = c.ssh("true", target="web1")
        assert r.returncode == 1 and f"grant #{g.id} was revoked".encode() in r.stderr
        assert b.store.verify_audit_chain() is None
        verify = b.cli("verify", s.id)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        b.close()
