"""``bastion audit --follow``: the audit log as a feed a SIEM shipper can resume.

Every printed row carries its cursor (the row id). ``--after CURSOR`` resumes
after the last row a shipper stored, with no gap and no duplicate: rows are read
in id order and ids are assigned in commit order (``History.audit_after``).
Polling, not pushing: PostgreSQL LISTEN/NOTIFY would cut the delay and is left
for later; the poll is one indexed query on the primary key.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from bastion.grants import format_time
from bastion.store import Store
from bastion.store.models import AuditEvent

BATCH = 500
"""Rows per query; a backlog is drained without sleeping between batches."""


def feed_line(event: AuditEvent, as_json: bool) -> str:
    """One row of the feed: a JSON object with ``cursor`` first, or a text line."""
    if as_json:
        body = {
            "cursor": event.id,
            "id": event.id,
            "at": event.at,
            "actor": event.actor,
            "action": event.action,
            "subject": event.subject,
            "details": event.details,
            "prev_hash": event.prev_hash,
            "hash": event.hash,
        }
        return json.dumps(body, default=str, separators=(",", ":"))
    details = " ".join(f"{k}={v}" for k, v in event.details.items() if v is not None)
    return (
        f"{event.id:>8} {format_time(event.at)} {event.actor:<16} {event.action:<22} "
        f"{event.subject or '-':<16} {details}"
    )


def follow(
    args: argparse.Namespace,
    store: Store,
    cursor: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print every row after ``cursor`` as it is written, until interrupted."""
    as_json = bool(getattr(args, "json", False))
    try:
        while True:
            batch = store.audit_after(
                cursor, actor=args.user, action_prefix=args.action, limit=BATCH
            )
            for event in batch:
                sys.stdout.write(feed_line(event, as_json) + "\n")
                cursor = event.id
            sys.stdout.flush()
            if len(batch) < BATCH:
                sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader went away (e.g. `| head`)
        return 0


def start_cursor(args: argparse.Namespace, store: Store) -> int:
    """``--after`` as given, else the newest row now (the feed starts with what comes next)."""
    if args.after is not None:
        if args.after < 0:
            raise ValueError("--after must be a cursor printed by the feed (0: from the start)")
        return int(args.after)
    return store.last_audit_id()
