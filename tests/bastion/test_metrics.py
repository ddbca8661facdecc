"""/healthz and /metrics of a running node, including hostile requests."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from tests.peers.bastion_node import BastionHarness

pytestmark = pytest.mark.integration


def _get(bastion: BastionHarness, path: str) -> tuple[int, str]:
    assert bastion.config.metrics_listen is not None
    host, port = bastion.config.metrics_listen
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        e.close()
        return e.code, body


def test_health_and_metrics(bastion: BastionHarness) -> None:
    assert _get(bastion, "/healthz") == (200, "ok\n")
    c = bastion.contractor()
    bastion.grant(c, "web1")
    assert c.ssh("true", target="web1").returncode == 0
    status, text = _get(bastion, "/metrics")
    assert status == 200
    counts = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert counts['bastion_events_total{action="login.ok"}'] >= 1
    assert counts['bastion_events_total{action="session.start"}'] >= 1
    assert "bastion_live_sessions" in counts and "bastion_unauthenticated_connections" in counts
    assert _get(bastion, "/nope")[0] == 404


def test_hostile_requests_do_not_hurt(bastion: BastionHarness) -> None:
    assert bastion.config.metrics_listen is not None
    host, port = bastion.config.metrics_listen
    for payload in (b"\x00" * 20000, b"POST /metrics HTTP/1.1\r\n\r\n", b"GET /" + b"a" * 9000):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(payload)
            s.settimeout(10)
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            assert b"200 OK" not in data
    assert _get(bastion, "/healthz")[0] == 200


def test_process_gauges_describe_the_node_process(bastion: BastionHarness) -> None:
    assert bastion.proc is not None
    pid = bastion.proc.pid
    open_now = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    assert 0 < bastion.gauge("open_fds") <= open_now + 20
    rss_kib = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    assert abs(bastion.gauge("resident_memory_bytes") / 1024 - rss_kib) < rss_kib / 2
    assert bastion.gauge("asyncio_tasks") >= 3  # time box, ticker, the probe itself
    lag = bastion.gauge("event_loop_lag_seconds")
    assert 0 <= lag < 30  # a probe has run (the node is up) and reports seconds, not ns
