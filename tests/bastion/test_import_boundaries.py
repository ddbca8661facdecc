"""bastion/ never imports the TUI (textual, replay/); recorder/ never imports bastion."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(out.split())


def test_bastion_does_not_import_the_tui() -> None:
    mods = _loaded_after(
        "import bastion.cli, bastion.cli_admin, bastion.cli_sessions, bastion.cli_recordings, "
        "bastion.ssh.server, bastion.ssh.session, bastion.recording, bastion.demo, "
        "bastion.pg.protocol"
    )
    assert "bastion.ssh.server" in mods  # the probe really imported something
    bad = {m for m in mods if m == "textual" or m.startswith(("textual.", "replay"))}
    assert not bad, f"bastion pulled in {sorted(bad)}"


def test_recorder_stands_alone() -> None:
    mods = _loaded_after("import recorder, recorder.repack, recorder.export, recorder.verify")
    bad = {m for m in mods if m.startswith(("bastion", "replay", "textual", "asyncssh", "psycopg"))}
    assert not bad, f"recorder pulled in {sorted(bad)}"
