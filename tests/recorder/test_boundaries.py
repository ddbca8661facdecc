"""recorder imports nothing from bastion, SSH, PostgreSQL or the TUI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("bastion", "replay", "textual", "asyncssh", "psycopg", "paramiko", "pyte")


def test_recorder_imports_stay_inside() -> None:
    code = (
        "import json, sys, recorder, recorder.export, recorder.keys, recorder.recover;"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert bad == []
