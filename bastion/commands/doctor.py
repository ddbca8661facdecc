"""The argument parsers of ``bastion.doctor``'s commands (their handlers load lazily)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bastion.commands import lazy


def add_doctor_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config: Callable[[argparse.ArgumentParser], None],
    add_json: Callable[[argparse.ArgumentParser], None],
) -> None:
    """``bastion doctor``"""
    p = sub.add_parser(
        "doctor",
        help="check this node's set-up and say what is unsafe (exit 1 if anything is)",
        description=(
            "Checks the files and settings the config names, without starting the node: "
            "key files (CA, SSH host, TLS, secret-box, recording signing key, config, SQLite "
            "state) readable or writable by group or others, key folders others may write, "
            "a recordings directory others may read, TCP listeners without TLS. Each finding "
            "that needs action carries its fix; the exit status is 1 when anything is unsafe."
        ),
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.doctor:cmd_doctor"))
