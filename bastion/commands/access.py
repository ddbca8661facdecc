"""The argument parsers of ``bastion.cli_access``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy


def add_access_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion access USER`` and ``bastion access --target NAME``."""
    p = sub.add_parser(
        "access",
        help="what a user can reach now and why (or who can reach a target)",
        description=(
            "Effective access, answered by the same admission code the node runs at every "
            "connection: for each target the user holds a current grant for, whether they can "
            "connect now, as which login or credential set, under which grant (direct or via a "
            "profile, from which request) and until when; or why not (engagement ended, "
            "disabled, locked, grant not started, expired or revoked, target removed). With "
            "--target NAME: every user holding a current grant on that target."
        ),
    )
    p.add_argument("user", nargs="?", metavar="USER", help="the user to report on")
    p.add_argument("--target", metavar="NAME", help="report on this target's users instead")
    p.add_argument(
        "--all",
        action="store_true",
        help="also ended and revoked grants, and targets that were removed",
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_access:cmd_access"))
