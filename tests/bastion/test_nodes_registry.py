"""The node registry: a real node registers, beats, shows its live sessions and drains.

``bastion nodes list`` and ``bastion node drain`` are run as an admin would, against
the node's own state store, while a real ``ssh`` session runs through the node.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bastion.errors import NotFound
from bastion.store import Store
from bastion.store.models import NodeRecord, NodeState
from tests.bastion.test_store import box, db_url, store  # noqa: F401 - fixtures
from tests.peers.bastion_node import make_harness
from tests.waiting import wait_until


def _row(name: str, beat: float, **kw: object) -> NodeRecord:
    fields: dict[str, object] = dict(
        name=name,
        pid=42,
        version="0.1.0",
        ssh_addr="10.0.0.1:2222",
        pg_addr=None,
        control_addr="10.0.0.1:7443",
        control_cert="PEM",
        started_at=beat - 60,
        heartbeat_at=beat,
        stopped_at=None,
        draining_until=None,
    )
    fields.update(kw)
    return NodeRecord(**fields)  # type: ignore[arg-type]


def test_states_from_heartbeat_stop_and_drain(store: Store) -> None:  # noqa: F811
    now = time.time()
    store.register_node(_row("a", now))
    store.register_node(_row("b", now - 100))
    assert {n.name: n.state(now, 5.0) for n in store.list_nodes()} == {
        "a": NodeState.UP,
        "b": NodeState.SILENT,
    }
    assert store.node_heartbeat("a", now + 1) is None
    with store.audited_change("admin", "node.drain", "a", now) as c:
        c.drain_node("a", now + 30)
    assert store.node_heartbeat("a", now + 2) == now + 30
    assert store.get_node("a").state(now + 2, 5.0) is NodeState.DRAINING
    store.node_stopped("a", now + 3)
    (a,) = store.list_nodes(names=["a"])
    assert a.state(now + 3, 5.0) is NodeState.STOPPED and a.heartbeat_at == now + 3
    # a restart under the same name starts a fresh row: no stale stop or drain
    store.register_node(_row("a", now + 4))
    assert store.get_node("a").state(now + 4, 5.0) is NodeState.UP


def test_draining_a_stopped_or_unknown_node_is_refused(store: Store) -> None:  # noqa: F811
    now = time.time()
    store.register_node(_row("gone", now))
    store.node_stopped("gone", now)
    for name in ("gone", "never"):
        with pytest.raises(NotFound, match=f"no running node named '{name}'"):
            with store.audited_change("admin", "node.drain", name, now) as c:
                c.drain_node(name, now + 30)
    assert [e for e in store.list_audit() if e.action == "node.drain"] == []


def test_draining_a_node_by_name_drains_its_workers_only(store: Store) -> None:  # noqa: F811
    now = time.time()
    for name in ("edge_1/w1", "edge_1/w2", "edgex1/w1", "edge_1x/w1"):
        store.register_node(_row(name, now))
    with store.audited_change("admin", "node.drain", "edge_1", now) as c:
        c.drain_node("edge_1", now + 30)
    draining = {n.name for n in store.list_nodes() if n.draining_until is not None}
    assert draining == {"edge_1/w1", "edge_1/w2"}


def _health(b) -> int:  # type: ignore[no-untyped-def]
    listen = b.config.metrics_listen
    try:
        with urllib.request.urlopen(f"http://{listen[0]}:{listen[1]}/healthz", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.integration
def test_node_registers_shows_live_sessions_and_drains(tmp_path: Path) -> None:
    b = make_harness(tmp_path / "node")
    try:
        listed = json.loads(b.cli("nodes", "list", "--json").stdout)
        (me,) = listed
        assert me["name"] == "test-node" and me["live_sessions"] == 0
        assert me["ssh_addr"] == f"127.0.0.1:{b.port}"
        assert me["pg_addr"] == f"127.0.0.1:{b.pg_port}"
        assert me["control_addr"] == f"unix:{b.control_socket()}"
        assert b.proc is not None and me["pid"] == b.proc.pid
        text = b.cli("nodes", "list").stdout
        assert "test-node" in text and " up " in text

        c = b.contractor()
        b.grant(c, "web1")
        live = c.ssh_stream("web1", "echo started; sleep 60")
        assert live.stdout is not None and live.stdout.readline() == b"started\n"
        wait_until(
            lambda: json.loads(b.cli("nodes", "list", "--json").stdout)[0]["live_sessions"] == 1,
            15,
            "the live session counted on the node's row",
        )

        drained = b.cli("node", "drain", "test-node", "--within", "60s")
        assert drained.returncode == 0, drained.stderr
        assert "node test-node drains" in drained.stdout
        (row,) = [e for e in b.store.list_audit() if e.action == "node.drain"]
        assert row.subject == "test-node" and row.actor == "test-admin"
        # the node sees it on its next heartbeat: listeners closed, /healthz 503
        wait_until(lambda: not _accepts(b.port), 15, "the SSH listener closed by the drain")
        assert not _accepts(b.pg_port)
        assert _health(b) == 503
        assert "draining" in b.cli("nodes", "list").stdout
        # the live session goes on; when it ends, the node stops by itself
        assert b.proc is not None and b.proc.poll() is None
        live.kill()
        live.communicate()
        wait_until(lambda: b.proc is not None and b.proc.poll() is not None, 30, "node exit")
        assert b.proc is not None and b.proc.returncode == 0, b.log()
        assert b.cli("nodes", "list").stdout == ""
        (gone,) = json.loads(b.cli("nodes", "list", "--all", "--json").stdout)
        assert gone["stopped_at"] is not None
        assert "stopped" in b.cli("nodes", "list", "--all").stdout
    finally:
        if b.proc is not None and b.proc.poll() is None:
            b.proc.kill()
        b.close()


def test_a_wildcard_listen_address_registers_the_host_name() -> None:
    from bastion.node_registry import reachable

    assert reachable("10.0.0.11", 7443) == "10.0.0.11:7443"
    assert reachable("fd00::11", 6432) == "[fd00::11]:6432"
    for wildcard in ("0.0.0.0", "::"):  # noqa: S104  the value under test
        host = reachable(wildcard, 2222).rsplit(":", 1)[0]
        assert host not in ("0.0.0.0", "::", "[::]", "")  # noqa: S104
        assert host == socket.getfqdn() or host == f"[{socket.getfqdn()}]"
