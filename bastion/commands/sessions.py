"""The argument parsers of ``bastion.cli_sessions``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy
from bastion.commands.recordings import add_recording_commands
from bastion.commands.search import add_reindex_command, add_search_parser


def add_session_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion sessions ...``, ``bastion verify`` and ``bastion export``."""
    sessions = sub.add_parser(
        "sessions",
        help="list, show and search sessions",
        description="Session history from the state store.",
    )
    ss = sessions.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)

    p = ss.add_parser(
        "list",
        help="list sessions, newest first",
        description=(
            "One line per session of every node sharing this state store: id, user, "
            "target, protocol, login, node, start (UTC), duration (or 'live'), bytes "
            "in/out, recorded events and why it ended."
        ),
    )
    p.add_argument("--live", action="store_true", help="only sessions running now")
    p.add_argument("--node", help="only sessions of this node (see 'bastion nodes list')")
    p.add_argument("--user", help="only this user's sessions")
    p.add_argument("--target", help="only sessions to this target")
    p.add_argument(
        "--since", metavar="TIME|DURATION", help="started after an ISO time, or e.g. 2h ago"
    )
    p.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_sessions:cmd_sessions_list"))

    p = ss.add_parser(
        "show",
        help="one session: details, certificates, audit rows, recording verdict",
        description=(
            "Everything known about one session: its row in the state store, the upstream "
            "certificates issued for it (serial, key id, validity), the audit rows that "
            "name it, and where its recording is with a 'bastion verify' verdict."
        ),
    )
    p.add_argument("id", help="session id (see 'bastion sessions list')")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_sessions:cmd_sessions_show"))

    add_search_parser(ss, add_config, add_json)

    p = ss.add_parser(
        "terminate",
        help="end a live session now; the contractor sees who and why",
        description=(
            "Ask the node running a live session to end it. The request goes through the "
            "state store, so it reaches the right node within one time-box pass (0.5 s)."
        ),
    )
    p.add_argument("id", help="session id (see 'bastion sessions list --live')")
    p.add_argument("--reason", required=True, help="shown to the contractor and audited")
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_sessions:cmd_sessions_terminate"))

    add_recording_commands(sub, add_config, add_json)
    add_reindex_command(sub, add_config)
