"""The audit hash chain, independent of any database.

Every audit row carries ``prev_hash`` (the previous row's hash; 64 zeros for the
first row) and ``hash = sha256_hex(prev_hash + canonical_json(row))`` over the
row's id, time, actor, action, subject and details. Editing a row breaks its
own hash; deleting or reordering rows breaks the next row's link. Appending is
serialised by the store so the chain never forks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8; unknown types as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def normalize_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """Details exactly as they will read back from storage (tuples become lists, etc.)."""
    loaded: dict[str, Any] = json.loads(canonical_json(dict(details or {})))  # a dict's JSON
    return loaded


def event_hash(
    prev_hash: str,
    *,
    id: int,  # noqa: A002 - the column's name
    at: float,
    actor: str,
    action: str,
    subject: str | None,
    details: Mapping[str, Any],
) -> str:
    """The hash a row with these fields must carry, chained onto ``prev_hash``."""
    body = canonical_json(
        {
            "id": id,
            "at": at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
        }
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def first_broken(rows: Iterable[Mapping[str, Any]], prev_hash: str = GENESIS_HASH) -> int | None:
    """The id of the first row whose link or hash is wrong, or None if all are intact.

    ``rows`` are in id order with keys id, at, actor, action, subject, details
    (a dict or its stored JSON text), prev_hash and hash; ``prev_hash`` is the
    hash expected before the first of them.
    """
    for row in rows:
        details = row["details"]
        if isinstance(details, str):
            try:
                details = json.loads(details)
            except ValueError:
                return int(row["id"])
        expected = event_hash(
            prev_hash,
            id=int(row["id"]),
            at=float(row["at"]),
            actor=row["actor"],
            action=row["action"],
            subject=row["subject"],
            details=details,
        )
        if row["prev_hash"] != prev_hash or row["hash"] != expected:
            return int(row["id"])
        prev_hash = row["hash"]
    return None
