"""The stored rules as a ``Policy``, the one decision path, and audited rule changes.

The node's ``PolicyHook`` and ``bastion policy test`` both decide through
``decide`` over ``policy_of(stored rules, default)``, so the CLI prints exactly
what a node would do. Adding and removing rules commit together with their audit
row (``Store.audited_change``); the removal's row keeps the whole rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from bastion import audit_actions as actions
from bastion.admin_actions import Origin
from bastion.policy.rules import (
    Policy,
    PolicyDecision,
    Rule,
    decide_command,
    decide_file,
    decide_sql,
)
from bastion.session.hooks import Verdict
from bastion.store import Store
from bastion.store.policy import StoredRule

KINDS = ("command", "statement", "file")
"""What ``decide`` judges: a shell command line, a SQL text, an scp/sftp path."""


def rule_of(stored: StoredRule) -> Rule:
    """The checked ``Rule`` of a stored row (raises RuleError)."""
    return Rule(
        name=stored.name,
        kind=stored.kind,  # type: ignore[arg-type]  # Rule converts and checks
        action=stored.action,  # type: ignore[arg-type]
        programs=stored.programs,
        args_regex=stored.args_regex,
        sql_classes=frozenset(stored.sql_classes),
        tables=stored.tables,
        file_glob=stored.file_glob,
        targets=stored.targets,
        users=stored.users,
        shadow=stored.shadow,
    )


def policy_of(rules: Iterable[StoredRule], default: str) -> Policy:
    """The ordered ``Policy`` of stored rules (raises RuleError for a rule that cannot apply)."""
    return Policy(tuple(rule_of(r) for r in rules), Verdict(default))


def decide(
    policy: Policy,
    kind: str,
    *,
    user: str,
    groups: Iterable[str],
    target: str,
    labels: Mapping[str, str],
    text: str,
    exact: bool = True,
) -> PolicyDecision:
    """Judge ``text`` of ``kind`` (see ``KINDS``) for ``user`` on ``target``."""
    if kind == "command":
        return decide_command(policy, user, groups, target, labels, text, exact)
    if kind == "statement":
        return decide_sql(policy, user, groups, target, labels, text)
    if kind == "file":
        return decide_file(policy, user, groups, target, labels, text)
    raise ValueError(f"no policy kind {kind!r}")


def rule_details(rule: StoredRule) -> dict[str, Any]:
    """A rule as audit details and ``--json``: every field, lists as lists."""
    out = asdict(rule)
    out.pop("id")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def add_rule(
    store: Store, origin: Origin, rule: StoredRule, before: str | None, now: float
) -> StoredRule:
    """Check and store a rule (last, or just before ``before``); audits ``policy.rule-add``.

    Raises RuleError for a rule that cannot apply, AlreadyExists, NotFound (``before``).
    """
    rule_of(rule)
    with store.audited_change(origin.actor, actions.POLICY_RULE_ADD, rule.name, now) as c:
        saved = c.add_policy_rule(replace(rule, created_at=now, created_by=origin.actor), before)
        c.details.update(origin.details, rule=rule_details(saved), before=before)
    return saved


def remove_rule(store: Store, origin: Origin, name: str, now: float) -> StoredRule:
    """Delete a rule; audits ``policy.rule-remove`` with the whole rule. Raises NotFound."""
    with store.audited_change(origin.actor, actions.POLICY_RULE_REMOVE, name, now) as c:
        gone = c.remove_policy_rule(name)
        c.details.update(origin.details, rule=rule_details(gone))
    return gone


def describe(rule: StoredRule) -> str:
    """The rule as one line of ``bastion policy list`` (close to the ``add`` command)."""
    parts: list[str] = [rule.name]
    if rule.kind == "command":
        parts.append("--command " + ",".join(rule.programs))
        if rule.args_regex is not None:
            parts.append(f"--args {rule.args_regex!r}")
    elif rule.kind == "sql":
        parts.append("--sql " + ",".join(sorted(rule.sql_classes)))
        parts.extend(f"--tables {t}" for t in rule.tables)
    else:
        parts.append(f"--file {rule.file_glob}")
    parts.append(f"--action {rule.action}")
    parts.extend(f"--target {t}" for t in rule.targets)
    parts.extend(f"--user {u}" for u in rule.users)
    if rule.shadow:
        parts.append("--shadow")
    return " ".join(parts)


def target_labels_of(store: Store, target: str) -> Mapping[str, str]:
    """A live target's labels by name (none for an unknown name: rules by name still apply)."""
    found = store.get_target(target)
    return {} if found is None else dict(found.labels)


def user_groups_of(store: Store, user: str) -> Sequence[str]:
    """The groups of a user by name (none for an unknown name: rules by name still apply)."""
    found = store.get_user(user)
    return () if found is None else store.user_groups(found.id)
