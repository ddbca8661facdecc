"""Searching the index on someone's behalf: the filters, and the audit row every search leaves.

Searching is itself sensitive ("who looked for customer 4711?"): the search is
audited (``session.search``: text, filters, hit count) before any hit is returned.
Shared by ``bastion sessions search`` and the control API's ``search``.
"""

from __future__ import annotations

from bastion import audit_actions as actions
from bastion.admin_actions import Origin
from bastion.errors import UsageError
from bastion.store import Store
from bastion.store.models import IndexHit
from bastion.store.search import KINDS, OutputLines


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """``--in commands,output``: the kinds named (all of them when not given)."""
    if not text:
        return KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise UsageError(f"--in takes some of {','.join(KINDS)} (comma-separated), not {text!r}")
    return kinds


def audited_search(
    store: Store,
    origin: Origin,
    text: str,
    *,
    kinds: tuple[str, ...] = KINDS,
    user: str | None = None,
    target: str | None = None,
    since: float | None = None,
    regex: bool = False,
    limit: int = 100,
    output_lines: OutputLines | None = None,
) -> list[IndexHit]:
    """Search the index and audit the search (text, filters, hit count) before returning.

    ``output_lines`` reads a candidate session's displayed lines back from its
    recording (``bastion.search_indexer.OutputLines``); without it terminal output
    is not searched.
    """
    if not text.strip():
        raise UsageError("give some text to search for, e.g. 'customer 4711'")
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    hits = store.search_index(
        text, kinds=kinds, user=user, target=target, since=since, regex=regex, limit=limit,
        output_lines=output_lines,
    )  # fmt: skip
    store.append_audit(
        origin.actor,
        actions.SESSION_SEARCH,
        None,
        {
            **origin.details,
            "text": text,
            "regex": regex,
            "kinds": ",".join(kinds),
            "user": user,
            "target": target,
            "since": since,
            "hits": len(hits),
        },
    )
    return hits
