"""The argument parsers of ``bastion.cli_apply``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy


def add_apply_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion apply``"""
    p = sub.add_parser(
        "apply",
        help="make users, targets, profiles and standing grants match a TOML file (a diff)",
        description=(
            "Declarative provisioning: compare FILE with the state store, print the plan as a "
            "diff (+ add, ~ change, - remove or disable) and apply it in one audited "
            "transaction. Applying the same file again prints 'no changes' and writes "
            "nothing. Things the file does not name are left alone (and listed) unless "
            "--prune. Secrets never go in the file: TOTP is enrolled per user (bastion user "
            "reset-mfa), database passwords are file:/env: references. Format: "
            "deploy/apply-example.toml."
        ),
    )
    p.add_argument("file", metavar="FILE.toml", help="the provisioning file")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument(
        "--prune",
        action="store_true",
        help="also disable users (never delete; their live sessions end) and remove "
        "targets, profiles and standing grants the file no longer names",
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_apply:cmd_apply"))
