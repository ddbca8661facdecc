"""The bastion node as the benchmarks run it: the test harness's node with the
production config values, so that no test-only shortcut shapes a figure."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from tests.peers.bastion_node import (
        LOGIN,
        TEST_CONFIG_OVERRIDES,
        BastionHarness,
        Contractor,
        make_harness,
    )
except ModuleNotFoundError as exc:  # pragma: no cover - run from the wrong place
    raise SystemExit(
        f"{exc}: run from the repository root as "
        f"'PYTHONPATH=. python bench/{Path(sys.argv[0]).name}'"
    ) from exc

__all__ = ["LOGIN", "BastionHarness", "Contractor", "make_harness", "production_config"]


def production_config(h: BastionHarness) -> None:
    """Undo the harness's test-only config values (faster time-box polling, short
    warnings, short lockout and login timeout); takes effect at the next start.

    One deliberate difference from production: every bench client connects from
    127.0.0.1, as many contractors behind one NAT would, so the per-source cap on
    logins in progress (``per_source_max_startups``, 10) is lifted; the global
    ``max_startups`` still applies.
    """
    text = h.config.path.read_text()
    for default, test_value in TEST_CONFIG_OVERRIDES.items():
        text = text.replace(test_value, default)
    text = text.replace("per_source_max_startups = 10", "per_source_max_startups = 0")
    h.config.path.write_text(text)
