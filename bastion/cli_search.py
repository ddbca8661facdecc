"""``bastion sessions search`` (the search index) and ``bastion reindex``.

Searching is itself sensitive ("who looked for customer 4711?"), so every search is
audited with its text and the number of hits, before the hits are shown. The CLI
needs the node's config and keys (root or the node's account, like every admin
command); through the control API only admins and auditors may search.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from bastion.admin_actions import Origin
from bastion.cli_shared import opened
from bastion.cli_text import parse_since, printable
from bastion.config import Config
from bastion.search_query import audited_search, parse_kinds
from bastion.store import Store
from bastion.store.search import OutputLines
from bastion.timeparse import format_duration

_CONTEXT = 100  # characters of context around a hit


def _output_lines(store: Store, config: Config) -> OutputLines:
    """``bastion.search_indexer.OutputLines``, imported on its first call: it loads the
    recorder (and asyncio), which a search with no output candidate never needs."""
    reader: Any = None

    def read(
        session_id: str, must_show: str | None = None, in_stream: bool = False
    ) -> Mapping[str, float] | None:
        nonlocal reader
        if reader is None:
            from bastion.search_indexer import OutputLines as Reader

            reader = Reader(store, config)
        found: Mapping[str, float] | None = reader(session_id, must_show, in_stream)
        return found

    return read


def context(text: str, needle: str, regex: bool, width: int = _CONTEXT) -> str:
    """The part of ``text`` around the first match of ``needle``, on one line."""
    match = re.search(needle if regex else re.escape(needle), text, 0 if regex else re.I)
    if match is None or len(text) <= width:
        return printable(text)
    start = max(0, match.start() - width // 3)
    end = min(len(text), start + width)
    return ("…" if start else "") + printable(text[start:end]) + ("…" if end < len(text) else "")


def cmd_sessions_search(args: argparse.Namespace) -> int:
    """Find sessions whose commands, output, queries, results or files contain TEXT."""
    kinds = parse_kinds(args.kinds)
    since = parse_since(args.since, time.time())
    with opened(args) as (config, store):
        hits = audited_search(
            store, Origin.cli(), args.text, kinds=kinds, user=args.user, target=args.target,
            since=since, regex=args.regex, limit=args.limit,
            output_lines=_output_lines(store, config),
        )  # fmt: skip
        indexed = store.index_totals()[0]
    if args.json:
        print(json.dumps([asdict(h) for h in hits], indent=2))
        return 0
    for h in hits:
        print(
            f"{h.session_id:<26} {h.user_name:<14} {h.target_name:<14} "
            f"{format_duration(h.offset):>8} {h.kind:<8} {context(h.text, args.text, args.regex)}"
        )
    sessions = len({h.session_id for h in hits})
    print(f"{len(hits)} hit(s) in {sessions} session(s)", file=sys.stderr)
    if not hits and indexed == 0:
        print("the search index is empty; run 'bastion reindex'", file=sys.stderr)
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Index ended sessions not yet in the search index (``--again``: all of them)."""
    from bastion.search_indexer import reindex  # reads recordings: only this command needs it

    since = parse_since(args.since, time.time())

    def progress(session_id: str, entries: int | None, error: str | None) -> None:
        if error is not None:
            print(f"{session_id}: not indexed: {error}", file=sys.stderr)
        elif args.verbose:
            print(f"{session_id}: {entries} entries")

    with opened(args) as (config, store):
        done, failed = reindex(store, config, since=since, again=args.again, progress=progress)
    print(f"indexed {done} session(s), {failed} failed", file=sys.stderr)
    return 1 if failed else 0
