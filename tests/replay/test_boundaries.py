"""Import boundaries: the emulator stays UI-free, and the server never imports replay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", ["replay.terminal", "replay.vtparser", "replay"])
def test_emulator_does_not_import_textual(module: str) -> None:
    loaded = modules_after_import(module)
    assert not any(m == "textual" or m.startswith("textual.") for m in loaded)


@pytest.mark.parametrize("module", ["recorder", "bastion"])
def test_server_side_does_not_import_replay(module: str) -> None:
    loaded = modules_after_import(module)
    assert not any(m == "replay" or m.startswith("replay.") for m in loaded)
