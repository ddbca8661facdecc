"""Record real programs in an 80x24 pty: the golden fixtures of the replay emulator tests.

Why a script and committed output: the emulator must be checked against what real
programs (vim, less, htop, ls, printf) really send, but the tests must not need those
programs, nor depend on their versions or on timing. So this script is run by hand, once,
and its output is committed under ``tests/replay/fixtures/``:

* ``NAME.bin`` - every byte the program wrote to the terminal, raw;
* ``NAME.json`` - the command, the terminal size and *marks*: named byte offsets into
  ``NAME.bin`` taken at chosen moments (e.g. ``inside`` = while vim shows the alternate
  screen), so a test can look at the screen at that point.

The ``*.expected.txt`` files next to them are *not* written here: they are produced with
``--expect`` from the emulator's output, then checked by eye and committed, so a
regression in the emulator shows up as a diff.

Each scenario starts ``bash --norc --noprofile -i`` with ``PS1='demo$ '``, ``TERM=
xterm-256color``, ``LANG=C.UTF-8``, a throw-away ``HOME`` and working directory, types
command lines into it like a user, waits for the output to settle between steps and ends
with ``exit``. Usage (from the project root)::

    python tests/replay/capture.py            # all scenarios
    python tests/replay/capture.py vim less   # some of them
    python tests/replay/capture.py --expect   # (re)write *.expected.txt from the emulator

Needs bash, vim, less, htop and GNU ls (``apt-get install -y vim less htop``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
COLS, ROWS = 80, 24


@dataclass
class Step:
    """One thing the "user" does: type ``send`` then wait until output is quiet."""

    send: bytes = b""
    settle: float = 0.4
    mark: str | None = None
    """If set, record the output offset under this name *before* sending."""


@dataclass
class Scenario:
    """A named sequence of steps typed into an interactive shell."""

    name: str
    description: str
    steps: list[Step]
    setup: Callable[[Path], None] = field(default=lambda _d: None)


def _line(text: str, settle: float = 0.4, mark: str | None = None) -> Step:
    return Step(text.encode() + b"\r", settle, mark)


def _setup_less(d: Path) -> None:
    lines = [f"line {n:03d}: the quick brown fox jumps over the lazy dog" for n in range(1, 121)]
    (d / "numbers.txt").write_text("\n".join(lines) + "\n")


def _setup_ls(d: Path) -> None:
    (d / "docs").mkdir()
    (d / "notes.txt").write_text("x\n")
    (d / "archive.tar.gz").write_bytes(b"\x1f\x8b")
    script = d / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (d / "link").symlink_to("notes.txt")


SCENARIOS = [
    Scenario(
        "vim",
        "vim on a new file: type a line in insert mode, then :q! back to the shell",
        [
            _line("seq 1 30"),
            _line("printf 'before vim\\n'"),
            _line("vim -u NONE -i NONE -N notes.txt", settle=1.0, mark="before"),
            Step(b"iHello, bastion!", 0.5),
            Step(b"\x1b", 0.5),
            Step(b":q!\r", 0.8, mark="inside"),
            _line("printf 'after vim\\n'", mark="after"),
            _line("exit", mark="before_exit"),
        ],
    ),
    Scenario(
        "less",
        "less on a 120-line file: one page down (space), then q",
        [
            _line("seq 1 30"),
            _line("printf 'before less\\n'"),
            _line("less numbers.txt", settle=0.8, mark="before"),
            Step(b" ", 0.6, mark="first_page"),
            Step(b"q", 0.6, mark="second_page"),
            _line("printf 'after less\\n'", mark="after"),
            _line("exit", mark="before_exit"),
        ],
        _setup_less,
    ),
    Scenario(
        "htop",
        "htop showing only the shell's process for about 1.5 s, then q",
        [
            _line("printf 'before htop\\n'"),
            _line("htop -d 10 -p $$", settle=1.5, mark="before"),
            Step(b"q", 0.8, mark="inside"),
            _line("printf 'after htop\\n'", mark="after"),
            _line("exit", mark="before_exit"),
        ],
    ),
    Scenario(
        "ls_color",
        "ls --color=always (built-in colours) and SGR 256/truecolor samples",
        [
            _line("ls --color=always"),
            _line("ls --color=always -F"),
            _line(
                "printf '\\e[38;5;208morange\\e[0m \\e[48;5;22mgreen-bg\\e[0m "
                "\\e[38;2;255;105;180mhotpink\\e[0m \\e[1;3;4;7mbiur\\e[0m\\n'"
            ),
            _line("exit", mark="before_exit"),
        ],
        _setup_ls,
    ),
    Scenario(
        "emoji",
        "printf with emoji, ZWJ sequences, combining marks and CJK",
        [
            _line("printf 'heart: \\u2764\\ufe0f end\\n'"),
            _line("printf 'coder: \\U0001f469\\u200d\\U0001f4bb end\\n'"),
            _line("printf 'accent: cafe\\u0301 end\\n'"),
            _line("printf 'cjk: \\u65e5\\u672c\\u8a9e end\\n'"),
            _line("exit", mark="before_exit"),
        ],
    ),
]


def _child_setup() -> None:
    """In the child: new session with the pty as controlling terminal (job control works)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _read_quiet(fd: int, out: bytearray, settle: float, limit: float = 10.0) -> bool:
    """Read into ``out`` until nothing arrived for ``settle`` seconds; False on EOF."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], settle)
        if not ready:
            return True
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the slave side is closed
            return False
        if not chunk:
            return False
        out += chunk
    return True


def run(scenario: Scenario) -> tuple[bytes, dict[str, int]]:
    """Run one scenario; return the raw output and its marks."""
    with tempfile.TemporaryDirectory(prefix="bastion-capture-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        cwd = work / "work"
        cwd.mkdir()
        scenario.setup(cwd)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PS1": "demo$ ",
            "COLUMNS": str(COLS),
            "LINES": str(ROWS),
        }
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "-i"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            preexec_fn=_child_setup,  # a new session with the pty as controlling tty
            close_fds=True,
        )
        os.close(slave)
        out = bytearray()
        marks: dict[str, int] = {}
        try:
            _read_quiet(master, out, 0.8)
            for step in scenario.steps:
                if step.mark:
                    marks[step.mark] = len(out)
                if step.send:
                    os.write(master, step.send)
                if not _read_quiet(master, out, step.settle):
                    break
            while _read_quiet(master, out, 0.3):  # drain until EOF after `exit`
                if proc.poll() is not None:
                    break
            proc.wait(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        return bytes(out), marks


def program_versions() -> dict[str, str]:
    """First line of ``--version`` of each program, recorded next to the captures."""
    versions = {}
    for program in ("bash", "vim", "less", "htop", "ls"):
        try:
            out = subprocess.run([program, "--version"], capture_output=True, text=True)
            versions[program] = (out.stdout or out.stderr).splitlines()[0].strip()
        except (OSError, IndexError):
            versions[program] = "unknown"
    return versions


def write_expected(name: str) -> None:
    """Write NAME.expected.txt (final screen) and NAME.MARK.expected.txt for each mark."""
    sys.path.insert(0, str(FIXTURES.parents[2]))
    from replay.terminal import TerminalEmulator

    data = (FIXTURES / f"{name}.bin").read_bytes()
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    points = dict(meta["marks"])
    points["final"] = len(data)
    for mark, offset in points.items():
        emu = TerminalEmulator(meta["cols"], meta["rows"])
        emu.feed(data[:offset])
        suffix = "" if mark == "final" else f".{mark}"
        path = FIXTURES / f"{name}{suffix}.expected.txt"
        path.write_text("\n".join(emu.text()) + "\n")
        print(f"wrote {path.name}")


def main() -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--expect", action="store_true", help="write *.expected.txt instead")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.names or s.name in args.names]
    FIXTURES.mkdir(exist_ok=True)
    for scenario in chosen:
        if args.expect:
            write_expected(scenario.name)
            continue
        data, marks = run(scenario)
        (FIXTURES / f"{scenario.name}.bin").write_bytes(data)
        meta = {
            "description": scenario.description,
            "cols": COLS,
            "rows": ROWS,
            "term": "xterm-256color",
            "versions": program_versions(),
            "steps": [s.send.decode("utf-8", "replace") for s in scenario.steps],
            "marks": marks,
        }
        (FIXTURES / f"{scenario.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(f"{scenario.name}: {len(data)} bytes, marks {marks}")


if __name__ == "__main__":
    main()
