"""What every admin command shares: the config and store it opens, the actor it audits
as, and its ``--json`` output.

Apart from ``bastion.cli_admin`` so that a command which needs only these (``sessions
search`` must answer within a second, process start included) does not import the user
commands' dependencies (engagements, notifications, asyncio).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from typing import Any

from bastion import admin_actions
from bastion.config import Config, load_config
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store


def actor() -> str:
    """Who is running the CLI, for audit rows ($BASTION_ACTOR overrides the login name)."""
    return admin_actions.cli_actor()


@contextmanager
def opened(args: argparse.Namespace) -> Iterator[tuple[Config, Store]]:
    """Config and store for one command; the store is closed afterwards."""
    config = load_config(args.config)
    store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
    try:
        yield config, store
    finally:
        store.close()


#: Fields never printed, not even with --json: secrets and what derives from them.
HIDDEN_FIELDS = frozenset({"totp_secret", "password", "token_hash"})


def jsonable(obj: Any) -> Any:
    """A record as plain JSON-ready data, without the fields in HIDDEN_FIELDS."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items() if k not in HIDDEN_FIELDS}
    if isinstance(obj, list | tuple | frozenset | set):
        items = [jsonable(v) for v in obj]
        return sorted(items) if isinstance(obj, frozenset | set) else items
    return obj


def emit(args: argparse.Namespace, rows: Sequence[Any], table: Callable[[Any], str]) -> None:
    """Print ``rows`` as JSON (--json) or one formatted line each."""
    if getattr(args, "json", False):
        print(json.dumps([jsonable(r) for r in rows], indent=2, default=str))
        return
    for r in rows:
        print(table(r))
