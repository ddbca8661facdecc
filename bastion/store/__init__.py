"""Persistent state shared by bastion nodes: SQLite by default, PostgreSQL for several nodes.

``open_store(url, box)`` returns a migrated ``Store``; records are the frozen
dataclasses in ``bastion.store.models``.
"""

from bastion.store.db import Store, open_store

__all__ = ["Store", "open_store"]
