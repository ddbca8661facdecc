"""``bastion policy``: guardrail rules (add, list, remove) and what a node would decide.

Rules live in the state store, so every node applies the same ones within a poll
interval. ``bastion policy test`` decides through the very code a node runs
(``bastion.policy.stored.decide``) over the stored rules and ``[policy] default``.
"""

from __future__ import annotations

import argparse
import json
import time

from bastion.admin_actions import Origin
from bastion.cli_shared import opened
from bastion.errors import UsageError
from bastion.policy.rules import RuleError
from bastion.policy.stored import (
    add_rule,
    decide,
    describe,
    policy_of,
    remove_rule,
    rule_details,
    target_labels_of,
    user_groups_of,
)
from bastion.store.policy import StoredRule


def _csv(values: list[str] | None) -> tuple[str, ...]:
    return tuple(x.strip() for v in values or () for x in v.split(",") if x.strip())


def _stored(args: argparse.Namespace) -> StoredRule:
    """The rule the options describe (exactly one of --command, --sql, --file)."""
    given = [k for k in ("command", "sql", "file") if getattr(args, k)]
    if len(given) != 1:
        raise UsageError("say what the rule looks at: one of --command, --sql or --file")
    if args.args is not None and not args.command:
        raise UsageError("--args goes with --command")
    if args.tables and not args.sql:
        raise UsageError("--tables goes with --sql")
    kind = {"command": "command", "sql": "sql", "file": "file"}[given[0]]
    return StoredRule(
        name=args.name,
        kind=kind,
        action=args.action,
        programs=_csv(args.command),
        args_regex=args.args,
        sql_classes=_csv(args.sql),
        tables=_csv(args.tables),
        file_glob=args.file,
        targets=tuple(args.target or ()),
        users=tuple(args.user or ()),
        shadow=args.shadow,
    )


def cmd_policy_add(args: argparse.Namespace) -> int:
    """Add a rule at the end of the list (first match wins) or before another one."""
    rule = _stored(args)
    with opened(args) as (_c, store):
        try:
            saved = add_rule(store, Origin.cli(), rule, args.before, time.time())
        except RuleError as e:
            raise UsageError(str(e)) from e
    where = f" before {args.before}" if args.before else ""
    print(f"policy rule {saved.name} added{where}: {describe(saved)}")
    return 0


def cmd_policy_list(args: argparse.Namespace) -> int:
    """The rules in the order they are tried, and the default."""
    with opened(args) as (config, store):
        rules = store.policy_rules()
    if args.json:
        print(
            json.dumps(
                {"default": config.policy.default, "rules": [rule_details(r) for r in rules]},
                indent=2,
            )
        )
        return 0
    for i, r in enumerate(rules, 1):
        print(f"{i:3} {describe(r)}")
    print(f"    default: {config.policy.default}")
    return 0


def cmd_policy_remove(args: argparse.Namespace) -> int:
    """Remove a rule (its audit row keeps the whole rule)."""
    with opened(args) as (_c, store):
        gone = remove_rule(store, Origin.cli(), args.name, time.time())
    print(f"policy rule {gone.name} removed: {describe(gone)}")
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    """Print the rule that matches and the action, exactly as a node would decide.

    ``KEY=VALUE`` target rules match the named target's stored labels now (an
    unknown name has none), as a session starting now would see them.
    """
    if (args.command is None) == (args.sql is None):
        raise UsageError("give one of --command TEXT or --sql TEXT")
    kind, text = ("command", args.command) if args.command is not None else ("statement", args.sql)
    with opened(args) as (config, store):
        try:
            policy = policy_of(store.policy_rules(), config.policy.default)
        except RuleError as e:
            raise UsageError(f"a stored rule cannot apply: {e}") from e
        groups = user_groups_of(store, args.user)
        labels = target_labels_of(store, args.target)
    d = decide(
        policy, kind, user=args.user, groups=groups, target=args.target, labels=labels, text=text
    )
    if args.json:
        out = {
            "action": d.action.value,
            "rule": d.rule,
            "reason": d.reason,
            "part": d.part,
            "shadow": list(d.shadow),
            "unanalysable": d.unanalysable,
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"{d.action.value}: {d.reason}" if d.reason else d.action.value)
    print(f"rule: {d.rule or '(default)'}")
    for name in d.shadow:
        print(f"shadow match: {name} (reported, not enforced)")
    if d.unanalysable:
        print(f"unanalysable: {d.unanalysable}")
    return 0
