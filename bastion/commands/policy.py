"""The argument parsers of ``bastion.cli_policy``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy
from bastion.session.hooks import Verdict

ACTIONS = [v.value for v in Verdict]


def add_policy_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion policy add|list|remove|test``."""
    top = sub.add_parser(
        "policy",
        help="guardrail rules for commands, SQL statements and file paths",
        description="Ordered rules, first match wins; [policy] default decides the rest. "
        "Every node applies the stored rules within a poll interval.",
    )
    psub = top.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    p = psub.add_parser("add", help="add a rule (at the end, or --before another)")
    add_config(p)
    p.add_argument("name")
    p.add_argument(
        "--command", action="append", metavar="PROG", help="program base names or globs (rm,mkfs*)"
    )
    p.add_argument("--args", metavar="REGEX", help="searched in the command's arguments")
    p.add_argument("--sql", action="append", metavar="CLASS[,CLASS...]", help="statement classes")
    p.add_argument("--tables", action="append", metavar="GLOB", help="tables the SQL touches")
    p.add_argument("--file", metavar="GLOB", help="scp/sftp path glob (* crosses /)")
    p.add_argument("--action", required=True, choices=ACTIONS)
    p.add_argument(
        "--target", action="append", metavar="GLOB|KEY=VALUE", help="repeatable; default: all"
    )
    p.add_argument(
        "--user", action="append", metavar="NAME|@GROUP", help="repeatable; default: all"
    )
    p.add_argument("--shadow", action="store_true", help="only report matches (try a rule first)")
    p.add_argument("--before", metavar="RULE", help="insert just before this rule")
    p.set_defaults(func=lazy("bastion.cli_policy:cmd_policy_add"))

    p = psub.add_parser("list", help="the rules in order, and the default")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_policy:cmd_policy_list"))

    p = psub.add_parser("remove", help="remove a rule")
    add_config(p)
    p.add_argument("name")
    p.set_defaults(func=lazy("bastion.cli_policy:cmd_policy_remove"))

    p = psub.add_parser("test", help="what a node would decide for a user, target and text")
    add_config(p)
    add_json(p)
    p.add_argument("--user", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--command", metavar="TEXT", help="a shell command line (as an exec request)")
    p.add_argument("--sql", metavar="TEXT", help="a SQL text")
    p.set_defaults(func=lazy("bastion.cli_policy:cmd_policy_test"))
