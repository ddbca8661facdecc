"""The CLI starts without loading what its command does not use (issue 19).

``bastion --help`` and ``bastion sessions search`` on a SQLite store must not import
the SSH stack, the SQL parser, the console, S3 or the PostgreSQL driver: each costs
a large part of the one second a search may take end to end. The config names SSH
algorithms, which only ``bastion serve`` (and ``doctor``, a reload, the listener)
checks against asyncssh: a bad name is still refused there. Measured in a fresh
interpreter with ``-X importtime``, which names every module the process imports.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bastion
from bastion.cli import build_parser
from bastion.cli_node import init_dir
from bastion.commands import Lazy

HEAVY = frozenset({"asyncssh", "pglast", "textual", "boto3", "botocore", "psycopg", "replay"})
ROOT = Path(bastion.__file__).resolve().parents[1]


def imported(*argv: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -m bastion ARGV`` and return it with the top-level packages it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bastion", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "bastion" in names, done.stderr[-2000:]  # the probe itself works
    return done, names


def test_help_imports_no_command_dependencies(tmp_path: Path) -> None:
    done, names = imported("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sessions" in done.stdout
    assert names & HEAVY == set()


def test_sessions_search_on_sqlite_imports_no_ssh_sql_parser_or_driver(tmp_path: Path) -> None:
    init_dir(tmp_path, "127.0.0.1:0", None, "n1")
    done, names = imported(
        "sessions", "search", "rm", "--config", str(tmp_path / "bastion.toml"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "0 hit(s) in 0 session(s)" in done.stderr  # the summary goes to stderr
    assert names & HEAVY == set()
    # nor the node's side of the config (asyncio, notification delivery over HTTP)
    assert names & {"asyncio", "http"} == set()


@pytest.mark.parametrize(
    "argv",
    [
        ("target", "list"),
        ("target", "show", "db1"),
        ("profile", "list"),
        ("grant", "list"),
        ("token", "list"),
        ("lockouts",),
        ("nodes", "list"),
    ],
    ids=" ".join,
)
def test_read_only_commands_do_not_load_the_ssh_stack(tmp_path: Path, argv: list[str]) -> None:
    init_dir(tmp_path, "127.0.0.1:0", None, "n1")
    done, names = imported(*argv, "--config", str(tmp_path / "bastion.toml"), cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr[-2000:]  # 1: 'target show' of no target
    assert "asyncssh" not in names


def _bad_cipher(directory: Path) -> Path:
    init_dir(directory, "127.0.0.1:0", None, "n1")
    path = directory / "bastion.toml"
    text = path.read_text()
    assert text.count('    "aes256-ctr",\n') == 1
    path.write_text(
        text.replace('    "aes256-ctr",\n', '    "aes256-ctr",\n    "no-such-cipher",\n')
    )
    return path


def test_an_unknown_ssh_algorithm_is_refused_by_serve_and_doctor_not_by_search(
    tmp_path: Path,
) -> None:
    """The check moved out of ``load_config``; it must still stop the node from starting."""
    config = str(_bad_cipher(tmp_path))
    refusal = "ssh.ciphers: 'no-such-cipher' is not supported by this node's asyncssh; "
    for argv in (("serve",), ("doctor",)):
        done, _ = imported(*argv, "--config", config, cwd=tmp_path)
        assert done.returncode == 1, (argv, done.stderr[-2000:])
        assert f"bastion: {refusal}choose from: " in done.stderr, argv
        assert "aes128-gcm@openssh.com" in done.stderr.split("choose from: ")[1]
    done, names = imported("sessions", "search", "rm", "--config", config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "asyncssh" not in names


def _handlers(parser: argparse.ArgumentParser) -> list[object]:
    found = [parser.get_default("func")]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _handlers(child)
    return [f for f in found if f is not None]


def test_every_command_names_a_handler_that_exists() -> None:
    """Handlers are named as strings (imported when run): mypy cannot check them, this does."""
    handlers = _handlers(build_parser())
    assert len(handlers) > 60
    for handler in handlers:
        assert isinstance(handler, Lazy), handler
        assert callable(handler.resolve()), handler.target
