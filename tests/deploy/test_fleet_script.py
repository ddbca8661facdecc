"""``deploy/fleet.py``: the one-machine fleet an operator tries first, run for real.

Up: PostgreSQL state, moto's S3 server, two nodes sharing keys, HAProxy with
PROXY v2 and /healthz checks. A contractor's sessions go through HAProxy, land
on the nodes, are uploaded to S3 and verify from the other node; ``node drain``
takes node-b out (HAProxy then sends everyone to node-a); down stops it all.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.ca import CertificateAuthority
from bastion.config import load_config
from bastion.openssh_target import OpenSSHTarget, free_port
from bastion.secretbox import SecretBox
from bastion.store import open_store
from bastion.store.models import SessionRecord, TargetKind
from bastion.target_setup import default_principal
from tests.peers.bastion_node import LOGIN, BastionHarness
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "fleet-demo",
    "AWS_SECRET_ACCESS_KEY": "fleet-demo",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "fleet.py"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


def _bastion(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **S3_ENV, "BASTION_ACTOR": "test-admin"},
        cwd=ROOT,
    )


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.timeout(420)
def test_fleet_up_serve_drain_down(tmp_path: Path) -> None:
    base = tmp_path / "fleet"
    ssh_port, pg_port = free_port(), free_port()
    up = _fleet("up", "--dir", str(base), "--ssh-port", str(ssh_port), "--pg-port", str(pg_port))
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((base / "fleet.json").read_text())
    a, b = (Path(state["configs"][n]) for n in ("node-a", "node-b"))
    target: OpenSSHTarget | None = None
    try:
        assert "fleet up in" in up.stdout and f"ssh -p {ssh_port}" in up.stdout
        wait_until(
            lambda: (
                {n["name"] for n in json.loads(_bastion(a, "nodes", "list", "--json").stdout)}
                == {"node-a", "node-b"}
            ),
            30,
            "both nodes registered",
        )
        config = load_config(a)
        ca = CertificateAuthority.load(config.ca_key)
        store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
        target = OpenSSHTarget(
            tmp_path / "web1", ca.public_key_line(), default_principal("web1"), [LOGIN]
        )
        target.start()
        store.add_target(
            name="web1",
            kind=TargetKind.SSH,
            host=target.host,
            port=target.port,
            logins=[LOGIN],
            principal=default_principal("web1"),
            host_keys=[target.host_key_line],
            now=time.time(),
        )
        # the harness's client side, pointed at HAProxy (nothing of it is started)
        (tmp_path / "client").mkdir()
        h = BastionHarness(tmp_path / "client", config, store, ca, ssh_port, {"web1": target})
        c = h.contractor("fleet")
        h.grant(c, "web1")

        for i in range(4):
            r = c.ssh(f"echo via-fleet-{i}", target="web1")
            assert r.returncode == 0 and r.stdout == f"via-fleet-{i}\n".encode(), r.stderr

        def uploaded() -> list[SessionRecord]:
            found = store.list_sessions(user=c.name)
            done = [s for s in found if (s.recording or "").startswith("s3://")]
            return found if len(found) == 4 and len(done) == 4 else []

        rows = wait_until(uploaded, 60, "four sessions uploaded to S3")
        assert {s.node for s in rows} == {"node-a", "node-b"}  # leastconn over idle nodes
        on_a = next(s for s in rows if s.node == "node-a")
        verified = _bastion(b, "verify", on_a.id)  # node-b reads node-a's recording from S3
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # one live session on each node (leastconn), then node-b drains with 5 s to go
        # (two contractors: two logins in the same 30 s would share, and burn, one code)
        holders = [h.contractor("live") for _ in range(2)]
        live = []
        for who in holders:
            h.grant(who, "web1")
            live.append(who.ssh_stream("web1", "echo up; sleep 300"))
            assert live[-1].stdout is not None
            assert live[-1].stdout.readline() == b"up\n", live[-1].communicate()

        def live_rows() -> list[SessionRecord]:
            return [s for who in holders for s in store.list_sessions(user=who.name, live=True)]

        held = wait_until(
            lambda: (lambda s: s if {x.node for x in s} == {"node-a", "node-b"} else [])(
                live_rows()
            ),
            15,
            "a live session on each node",
        )
        on_b = next(s for s in held if s.node == "node-b")
        drained = _bastion(a, "node", "drain", "node-b", "--within", "5s")
        assert drained.returncode == 0, drained.stderr
        ended = wait_until(
            lambda: (lambda s: s if s is not None and s.ended_at else None)(
                store.get_session(on_b.id)
            ),
            40,
            "node-b's session ended by the drain",
        )
        assert getattr(ended, "end_reason", None) == "node-stop"
        assert [s.node for s in live_rows()] == ["node-a"]  # node-a's session runs on
        for p in live:
            p.kill()
            p.communicate()
        wait_until(
            lambda: any(
                n["name"] == "node-b" and n["stopped_at"]
                for n in json.loads(_bastion(a, "nodes", "list", "--all", "--json").stdout)
            ),
            40,
            "node-b drained and stopped",
        )
        for i in range(3):
            r = c.ssh(f"echo after-drain-{i}", target="web1")
            assert r.returncode == 0, r.stderr
        known = {x.id for x in rows}
        later = [s for s in store.list_sessions(user=c.name) if s.id not in known]
        assert len(later) == 3 and {s.node for s in later} == {"node-a"}
        store.close()
    finally:
        if target is not None:
            target.stop()
        down = _fleet("down", "--dir", str(base))
    assert down.returncode == 0, down.stderr
    assert not (base / "fleet.json").exists()
    for pid in state["pids"].values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not _listening(ssh_port) and not _listening(state["postgres"]["port"])
