"""bastion/ never imports the TUI (textual, replay/); recorder/ never imports bastion."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


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


PG_SANS_IO = (
    "protocol",
    "messages",
    "encoding",
    "decoding",
    "front_door",
    "relay_scan",
    "tracker",
    "params",
    "query_log",
    "query_event",
    "errors",
    "upstream_login",
    "origins",
)


def _direct_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_postgres_sans_io_modules_have_no_io() -> None:
    """The wire protocol, scanners and tracker are bytes in, events out: fuzzable alone.

    They import no event loop, socket or TLS, and of the bastion only each other
    (plus the recorder's event types): the asyncio adapters (``front_end``,
    ``listener``, ``connection``, ``login``, ``upstream``, ``cancel``) sit on top.
    """
    pg = Path(__file__).resolve().parents[2] / "bastion" / "pg"
    allowed_bastion = {f"bastion.pg.{m}" for m in PG_SANS_IO} | {"bastion.policy.cache"}
    for name in PG_SANS_IO:
        imports = _direct_imports(pg / f"{name}.py")
        io = {m for m in imports if m.split(".")[0] in ("asyncio", "socket", "ssl", "asyncssh")}
        assert not io, f"bastion/pg/{name}.py imports {sorted(io)}"
        ours = {m for m in imports if m.startswith("bastion")} - allowed_bastion
        assert not ours, f"bastion/pg/{name}.py imports adapters or services: {sorted(ours)}"


def test_session_lifecycle_is_pure() -> None:
    mods = _loaded_after("import bastion.session.lifecycle, bastion.session.reasons")
    assert "bastion.session.lifecycle" in mods
    io = ("asyncio", "socket", "asyncssh")
    bad = {m for m in mods if m in io or m.startswith("bastion.store")}
    assert not bad, f"the lifecycle pulled in {sorted(bad)}"
