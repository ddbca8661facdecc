"""Ports picked for test servers and the demo: outside the ephemeral range, one slice
per xdist worker, and really free."""

from __future__ import annotations

import socket

import pytest

from bastion.openssh_target import PICKED_PORTS, free_port


def test_a_picked_port_is_below_the_ephemeral_range_and_bindable() -> None:
    port = free_port()
    assert PICKED_PORTS[0] <= port < PICKED_PORTS[1] <= 32768
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_each_xdist_worker_draws_from_its_own_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    low, high = PICKED_PORTS
    span = (high - low) // 3
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    for n in range(3):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{n}")
        picked = {free_port() for _ in range(20)}
        assert all(low + n * span <= p < low + (n + 1) * span for p in picked), picked
