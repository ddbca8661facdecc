"""The argument parsers of ``bastion.cli_search``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy
from bastion.store.search import KINDS


def add_search_parser(ss: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion sessions search``."""
    p = ss.add_parser(
        "search",
        help="which sessions typed, showed, queried, returned or moved TEXT",
        description=(
            "Find TEXT (case-insensitive substring; --regex for a Python pattern) in the "
            "search index: typed and exec command lines (commands), terminal lines as "
            "they were displayed (output), SQL statements (queries), captured PostgreSQL "
            "rows (results) and scp/sftp paths (files). Each hit: session, user, target, "
            "offset into the session, kind and the line. Masked values were never indexed. "
            "Every search is audited (session.search) with its text and hit count. "
            "Sessions are indexed in the background once they end; 'bastion reindex' "
            "indexes older recordings."
        ),
    )
    p.add_argument("text", help="text to find, e.g. 'customer 4711'")
    p.add_argument(
        "--in", dest="kinds", metavar="KINDS",
        help=f"only these kinds, comma-separated: {','.join(KINDS)} (default: all)",
    )  # fmt: skip
    p.add_argument("--user", help="only this user's sessions")
    p.add_argument("--target", help="only sessions to this target")
    p.add_argument(
        "--since", metavar="TIME|DURATION", help="seen after an ISO time, or e.g. 1d ago"
    )
    p.add_argument("--regex", action="store_true", help="TEXT is a Python regular expression")
    p.add_argument("--limit", type=int, default=100, help="at most this many hits (default 100)")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_search:cmd_sessions_search"))


def add_reindex_command(sub: Sub, add_config: AddOpt) -> None:
    """``bastion reindex``."""
    p = sub.add_parser(
        "reindex",
        help="put ended sessions into the search index (recordings made before it)",
        description=(
            "Index every ended session that is not yet in the search index, oldest first, "
            "one transaction per session: safe to interrupt and run again (a session cut "
            "off half-way is redone whole). Exit status 1 if a recording could not be read."
        ),
    )
    p.add_argument("--since", metavar="TIME|DURATION", help="only sessions started after this")
    p.add_argument(
        "--again",
        action="store_true",
        help="also redo sessions already indexed (without --since: rebuild the whole index "
        "from empty, which also drops what re-indexed sessions left behind)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="one line per session")
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_search:cmd_reindex"))
