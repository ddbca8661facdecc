"""``[node] workers = 2``: two real worker processes on one node's ports.

Sessions spread over both workers (SO_REUSEPORT), each worker registers as a node,
SIGKILL of one worker leaves the other's sessions running, the supervisor starts
a replacement which closes the dead worker's sessions as ``node-crash``, and a
SIGTERM to the supervisor is the routine stop of every worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bastion.config import load_config
from bastion.workers import worker_config, worker_name
from tests.peers.bastion_node import BastionHarness, make_harness
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _nodes(b: BastionHarness) -> dict[str, dict[str, Any]]:
    out = b.cli("nodes", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {n["name"]: n for n in json.loads(out.stdout)}


def test_worker_config_names_sockets_and_ports(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(
        '[node]\nname = "edge"\nworkers = 3\n[metrics]\nlisten = "127.0.0.1:9100"\n'
        '[control]\nsocket = "run/control.sock"\nlisten = "127.0.0.1:7443"\n'
    )
    config = load_config(path)
    assert config.workers == 3 and config.worker == 0
    one, three = worker_config(config, 1), worker_config(config, 3)
    assert (
        (one.node, three.node)
        == ("edge/w1", "edge/w3")
        == (
            worker_name("edge", 1),
            worker_name("edge", 3),
        )
    )
    assert one.control.socket == tmp_path / "run/control.sock"
    assert three.control.socket == tmp_path / "run/control.w3.sock"
    assert one.metrics_listen == ("127.0.0.1", 9100)
    assert three.metrics_listen == ("127.0.0.1", 9102)
    assert three.control.listen == ("127.0.0.1", 7445)
    assert three.ssh == config.ssh and three.worker == 3
    assert one.outbox_path == tmp_path / "state-outbox.db"
    assert three.outbox_path == tmp_path / "state-outbox.w3.db"


@pytest.mark.parametrize(
    ("value", "state", "expected"),
    [
        ('"auto"', "state.db", 1),
        ('"auto"', "postgresql://u@h/db", os.cpu_count() or 1),
        ("4", "state.db", 4),
    ],
    ids=["auto-sqlite", "auto-postgresql", "explicit"],
)
def test_workers_setting(tmp_path: Path, value: str, state: str, expected: int) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(f'[node]\nworkers = {value}\n[state]\nurl = "{state}"\n')
    assert load_config(path).workers == expected


@pytest.mark.parametrize("value", ["0", "-1", '"many"', "true", "1.5"])
def test_bad_workers_setting_names_the_fix(tmp_path: Path, value: str) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(f"[node]\nworkers = {value}\n")
    with pytest.raises(Exception, match='node.workers must be "auto" or a whole number'):
        load_config(path)


@pytest.mark.timeout(360)
def test_two_workers_share_the_ports_and_survive_each_other(tmp_path: Path, pg_url: str) -> None:
    b = make_harness(tmp_path / "node", state_url=pg_url, overrides={"workers = 1": "workers = 2"})
    streams: list[subprocess.Popen[bytes]] = []
    try:
        names = (worker_name("test-node", 1), worker_name("test-node", 2))
        wait_until(lambda: set(_nodes(b)) == set(names), 30, "both workers registered")
        first = _nodes(b)
        assert b.proc is not None
        pids = {first[n]["pid"] for n in names}
        assert len(pids) == 2 and b.proc.pid not in pids

        c = b.contractor()
        b.grant(c, "web1")

        def live_on(rows: dict[str, dict[str, Any]]) -> dict[str, int]:
            return {n: rows[n]["live_sessions"] for n in names if n in rows}

        # open sessions until the kernel has handed some to each worker
        counts: dict[str, int] = {}

        def all_counted() -> bool:
            counts.update(live_on(_nodes(b)))
            return sum(counts.values()) == len(streams)

        for _ in range(16):
            s = c.ssh_stream("web1", "echo up; sleep 120")
            assert s.stdout is not None and s.stdout.readline() == b"up\n"
            streams.append(s)
            wait_until(all_counted, 15, "every open session counted on a worker")
            if all(counts.get(n) for n in names) and len(streams) >= 4:
                break
        assert all(counts.get(n) for n in names), f"SO_REUSEPORT never used one worker: {counts}"

        victim = names[1]
        victim_pid = first[victim]["pid"]
        on_victim = {s.id for s in b.store.list_sessions(live=True) if s.node == victim}
        os.kill(victim_pid, signal.SIGKILL)
        # the supervisor starts a replacement under the same name
        wait_until(
            lambda: _nodes(b).get(victim, {}).get("pid") not in (None, victim_pid),
            30,
            "the killed worker replaced",
        )
        assert b.proc.poll() is None
        # the dead worker's sessions are closed by its replacement, the others still run
        wait_until(
            lambda: all(
                getattr(b.store.get_session(sid), "end_reason", None) == "node-crash"
                for sid in on_victim
            ),
            30,
            "the dead worker's sessions closed as node-crash",
        )
        survivors = [s for s in b.store.list_sessions(live=True) if s.node == names[0]]
        assert len(survivors) == counts[names[0]]
        running = [s for s in streams if s.poll() is None]
        assert len(running) == len(survivors)
        # new logins keep working on the shared port
        for _ in range(4):
            r = c.ssh("echo again", target="web1")
            assert r.returncode == 0 and r.stdout == b"again\n", r.stderr

        b.stop()  # SIGTERM to the supervisor: a routine stop of every worker
        assert b.proc is None
        ended = [b.store.get_session(s.id) for s in survivors]
        assert {getattr(s, "end_reason", None) for s in ended} == {"node-stop"}
        rows = json.loads(b.cli("nodes", "list", "--all", "--json").stdout)
        assert {r["name"] for r in rows if r["stopped_at"] is not None} == set(names)
    finally:
        for s in streams:
            s.kill()
            s.communicate()
        b.close()
