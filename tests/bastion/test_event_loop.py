"""The node's event loop choice: uvloop by default when installed, asyncio on request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bastion import event_loop
from bastion.cli_node import init_dir
from bastion.config import load_config
from bastion.errors import ConfigError


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_when_installed() -> None:
    assert event_loop.resolve("auto") == "uvloop"
    assert event_loop.run(_loop_module(), "auto").startswith("uvloop")


def test_asyncio_choice_runs_the_standard_loop() -> None:
    assert event_loop.run(_loop_module(), "asyncio").startswith("asyncio")


def test_uvloop_demanded_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(event_loop.EventLoopUnavailable, match="pip install uvloop"):
        event_loop.resolve("uvloop")
    assert event_loop.resolve("auto") == "asyncio"


def test_config_reads_and_checks_the_choice(tmp_path: Path) -> None:
    config = init_dir(tmp_path, "127.0.0.1:0", None, "n1")
    assert load_config(config.path).event_loop == "auto"  # the template's default
    text = config.path.read_text()
    config.path.write_text(text.replace('event_loop = "auto"', 'event_loop = "asyncio"'))
    assert load_config(config.path).event_loop == "asyncio"
    config.path.write_text(text.replace('event_loop = "auto"', 'event_loop = "tokio"'))
    with pytest.raises(ConfigError, match="node.event_loop must be one of auto, uvloop, asyncio"):
        load_config(config.path)
