"""Keeps the fast lane, ``pytest -m "not integration"``, free of real peers.

The conftest tells this module which test is running; each launcher of a real
peer (``make_harness``: OpenSSH targets and ``bastion serve``; ``start_pg_server``:
PostgreSQL) calls ``require_integration`` first, so a test that starts one
without the ``integration`` mark fails at once instead of slowing the fast lane.
Outside pytest (bench scripts) nothing is checked.
"""

from __future__ import annotations

import pytest

_running: list[pytest.Item] = []


def running(item: pytest.Item | None) -> None:
    """Record the test being set up, run and torn down (None: between tests)."""
    _running[:] = [] if item is None else [item]


def require_integration(what: str) -> None:
    """Fail the running test if it starts ``what`` without the ``integration`` mark."""
    for item in _running:
        if item.get_closest_marker("integration") is None:
            pytest.fail(
                f"{item.nodeid} starts {what} but is not marked integration"
                " (add pytestmark = pytest.mark.integration)",
                pytrace=False,
            )
