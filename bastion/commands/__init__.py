"""The ``bastion`` command tree: argument parsers only, handlers named as "module:function".

Building the parser must stay cheap (``--help`` and a quick ``bastion sessions search``
should not pay for asyncssh, pglast, psycopg or boto3), so these modules import argparse
and small constant-only modules; a command's handler module, with whatever it needs, is
imported when that command runs (see docs/decisions.md, "A CLI that starts fast").
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Sub = Any  # argparse's private _SubParsersAction
AddOpt = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Lazy:
    """A command handler named ``"package.module:function"``, imported on first call."""

    target: str

    def resolve(self) -> Handler:
        """The handler itself; a wrong name fails here (tests resolve every command)."""
        module_name, _, name = self.target.partition(":")
        func = getattr(importlib.import_module(module_name), name)
        if not callable(func):
            raise TypeError(f"{self.target} is not a function")
        handler: Handler = func
        return handler

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)


def lazy(target: str) -> Lazy:
    """The handler ``target`` ("module:function"), imported only when its command runs."""
    return Lazy(target)
