"""The argument parsers of ``bastion.cli_admin``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy
from bastion.store.models import Role


def add_user_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion user ...``"""
    user = sub.add_parser("user", help="manage users (contractors, admins, auditors)")
    us = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = us.add_parser("add", help="add a user and print their TOTP enrolment")
    p.add_argument("name")
    p.add_argument(
        "--key", action="append", metavar="PUBKEY_FILE", help="OpenSSH public key file (repeatable)"
    )
    p.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default="contractor",
        help="contractor (default) connects; approver decides others' access requests; "
        "admin administers (and approves); auditor reads",
    )
    p.add_argument(
        "--group",
        action="append",
        metavar="GROUP",
        help="put the user in this group (repeatable): targets name approvers as @GROUP, "
        "auto-approve rules match groups",
    )
    p.add_argument(
        "--sponsor", metavar="NAME",
        help="who vouches for a contractor (an admin or approver): reminded before the "
        "end, may extend it",
    )  # fmt: skip
    p.add_argument(
        "--until", metavar="DATE",
        help="when the engagement ends, e.g. 2027-01-31 (00:00 UTC) or 2027-01-31T18:00; "
        "required for contractors unless [users] require_end_date = false",
    )  # fmt: skip
    p.add_argument("--org", metavar="ORG", help="the contractor's organisation")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_admin:cmd_user_add"))
    p = us.add_parser(
        "set",
        help="change a user's groups or engagement (end date, sponsor, organisation)",
        description="Groups decide who may approve a target's requests (@GROUP in "
        "'bastion target set --approvers') and which auto-approve rules match. "
        "--until moves an engagement's end: its sponsor or an admin, named by --as. Audited.",
    )
    p.add_argument("name")
    replace = p.add_mutually_exclusive_group()
    replace.add_argument(
        "--group", action="append", metavar="GROUP", help="replace the groups (repeatable)"
    )
    replace.add_argument(
        "--no-groups", action="store_true", help="remove the user from every group"
    )
    p.add_argument("--add-group", action="append", metavar="GROUP", help="add to this group")
    p.add_argument(
        "--remove-group", action="append", metavar="GROUP", help="remove from this group"
    )
    p.add_argument(
        "--until", metavar="DATE",
        help="move the engagement's end (the sponsor or an admin, named by --as)",
    )  # fmt: skip
    p.add_argument("--sponsor", metavar="NAME", help="change the sponsor (an admin)")
    p.add_argument("--org", metavar="ORG", help="change the organisation (an admin)")
    p.add_argument(
        "--as", dest="acting", metavar="NAME",
        help="who changes the engagement: its sponsor or an admin (audited with your uid)",
    )  # fmt: skip
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_admin:cmd_user_set"))
    p = us.add_parser(
        "list",
        help="list every user (disabled and ended ones too) with role, groups, state, end date",
    )
    add_config(p)
    add_json(p)
    p.add_argument(
        "--all", action="store_true", help="every user, as by default (said for scripts)"
    )
    p.set_defaults(func=lazy("bastion.cli_admin:cmd_user_list"))
    for action, text in [
        ("disable", "refuse all logins of a user and end their live sessions"),
        ("enable", "allow a disabled user again"),
        ("unlock", "lift an MFA lockout"),
        ("reset-mfa", "issue a new TOTP secret (prints the enrolment)"),
    ]:
        p = us.add_parser(action, help=text)
        p.add_argument("name")
        add_config(p)
        p.set_defaults(func=lazy("bastion.cli_admin:cmd_user_change"))
    p = us.add_parser("lock", help="refuse a user's logins and end their live sessions")
    p.add_argument("name")
    p.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="how long (e.g. 1h); default: until 'bastion user unlock'",
    )
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_admin:cmd_user_change"))
    p = us.add_parser("add-key", help="add an SSH public key to a user")
    p.add_argument("name")
    p.add_argument("--key", action="append", required=True, metavar="PUBKEY_FILE")
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_admin:cmd_user_change"))


def add_audit_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion audit``"""
    p = sub.add_parser("audit", help="show the audit log")
    p.add_argument("--since", help="ISO time, or a duration back from now (e.g. 1h)")
    p.add_argument("--user", help="only rows by this actor")
    p.add_argument("--action", help="only actions starting with this (e.g. login.)")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--verify", action="store_true", help="also check the hash chain")
    p.add_argument(
        "--follow",
        action="store_true",
        help="stream rows as they are written, each with its cursor (JSON lines with --json)",
    )
    p.add_argument(
        "--after",
        type=int,
        metavar="CURSOR",
        help="only rows after this cursor (resume a feed; 0: from the first row)",
    )
    p.add_argument("--interval", type=float, default=0.5, help="--follow: seconds between polls")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_admin:cmd_audit"))
