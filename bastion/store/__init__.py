"""Persistent state shared by bastion nodes: SQLite by default, PostgreSQL for several nodes.

``open_store(url, box)`` returns a migrated ``Store``; records are the frozen
dataclasses in ``bastion.store.models``.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.store.db import Store, open_store

__all__ = ["Store", "open_store"]


def __getattr__(name: str) -> object:
    """``Store`` and ``open_store``, imported on first use: ``bastion.store.models`` (the
    records, which the CLI's argument parsers name) must not load the whole store."""
    if name in __all__:
        from bastion.store import db

        return getattr(db, name)
    raise AttributeError(f"module 'bastion.store' has no attribute {name!r}")
