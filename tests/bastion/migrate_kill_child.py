"""A node's start-up migration in its own process, stopped mid-way to be killed.

``python -m tests.bastion.migrate_kill_child URL STOP`` opens the state store the way
``bastion serve`` does (``open_store``: migrate to the latest schema). STOP is
``V:first`` (after the first statement of migration V ran; V not the first pending
one) or ``V:recorded`` (after V's row in ``schema_migrations``, before the transaction
commits): there it prints ``at STOP`` and blocks on stdin, where the test SIGKILLs it.
``none`` runs to the end. Used by tests/bastion/test_migrate_kill.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bastion.secretbox import SecretBox
from bastion.store import backends, open_store, pg_backend
from bastion.store.migrations import MIGRATIONS

RECORD = "INSERT INTO schema_migrations"


def _previous(version: int) -> int:
    return max(m.version for m in MIGRATIONS if m.version < version)


def install(stop: str) -> None:
    """Wrap both backends' ``Tx.run`` so the process pauses at ``stop``."""
    version_text, _, where = stop.partition(":")
    version = int(version_text)
    assert where in ("first", "recorded") and any(m.version == version for m in MIGRATIONS)
    state = {"recorded": -1}

    def wrap(run: Callable[..., int]) -> Callable[..., int]:
        def wrapped(self: Any, sql: str, params: Any = ()) -> int:
            changed = run(self, sql, params)
            if sql.startswith(RECORD):
                state["recorded"] = int(params[0])
                if where == "recorded" and state["recorded"] == version:
                    _pause(stop)
            elif where == "first" and state["recorded"] == _previous(version):
                state["recorded"] = -1
                _pause(stop)
            return changed

        return wrapped

    for tx_class in (backends._SqliteTx, pg_backend._PgTx):
        tx_class.run = wrap(tx_class.run)  # type: ignore[method-assign]


def _pause(stop: str) -> None:
    print(f"at {stop}", flush=True)
    sys.stdin.read()  # the test kills us here
    raise SystemExit(f"{stop}: stdin closed without a kill")


def main() -> None:
    url, stop = sys.argv[1:3]
    if stop != "none":
        install(stop)
    with open_store(url, SecretBox(SecretBox.generate_key())) as store:
        print(f"done {store.schema_version()}", flush=True)


if __name__ == "__main__":
    main()
