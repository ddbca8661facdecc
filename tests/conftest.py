"""Shared fixtures: real PostgreSQL, real OpenSSH targets and a real bastion node."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.peers import lane
from tests.peers.bastion_node import BastionHarness, make_harness
from tests.peers.postgres import pg_server, pg_tls_server, pg_url
from tests.peers.s3 import s3_server

__all__ = ["bastion", "pg_server", "pg_tls_server", "pg_url", "s3_server"]


@pytest.fixture(scope="session")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    """One bastion node with targets web1 and web2 for the whole run (tests use fresh users)."""
    harness = make_harness(Path(tmp_path_factory.mktemp("bastion")))
    try:
        yield harness
    finally:
        harness.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    """Let the peer launchers see which test starts them (see tests/peers/lane.py)."""
    lane.running(item)
    try:
        yield
    finally:
        lane.running(None)
