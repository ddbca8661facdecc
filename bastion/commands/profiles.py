"""The argument parsers of ``bastion.cli_profiles``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy


def add_profile_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion profile ...``"""
    profile = sub.add_parser("profile", help="manage access profiles (targets chosen by label)")
    ps = profile.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    p = ps.add_parser(
        "add",
        help="define a profile: a label selector and what grants under it allow",
        description="SEL is comma-separated terms that must all hold: key=value, "
        "key!=value, key (label present), !key (absent). The selector is evaluated when a "
        "contractor connects. Audited.",
    )
    p.add_argument("name")
    p.add_argument("--select", required=True, metavar="SEL", help="e.g. 'env=staging,role=web'")
    p.add_argument(
        "--login",
        action="append",
        help="login allowed on SSH targets (repeatable; default: each target's default)",
    )
    p.add_argument("--credset", metavar="NAME", help="credential set on database targets")
    p.add_argument(
        "--allow", metavar="OPTIONS", help="comma list of scp, sftp, port-forward, agent"
    )
    p.add_argument("--max", metavar="DURATION", help="longest grant or request (e.g. 4h)")
    p.add_argument("--approvals", type=int, metavar="N", help="approvals a request needs")
    p.add_argument(
        "--approvers",
        nargs="+",
        action="extend",
        metavar="NAME|@GROUP",
        help="who may approve requests for it (default: any approver or admin)",
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_profiles:cmd_profile_add"))
    p = ps.add_parser("list", help="list profiles and what each reaches now")
    p.add_argument("--all", action="store_true", help="include removed profiles")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_profiles:cmd_profile_list"))
    p = ps.add_parser("show", help="one profile and the targets it reaches now")
    p.add_argument("name")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_profiles:cmd_profile_show"))
    p = ps.add_parser("remove", help="retire a profile (its grants reach nothing; history kept)")
    p.add_argument("name")
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_profiles:cmd_profile_remove"))
