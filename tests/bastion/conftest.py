"""Shared fixtures of tests/bastion: the session-core kit (a real node on SQLite, no listeners)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.bastion.session.kit import Kit, build_kit


@pytest.fixture()
async def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Kit]:
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    k = build_kit(tmp_path / "node")
    try:
        yield k
    finally:
        await k.settle()
        await k.node.close()
