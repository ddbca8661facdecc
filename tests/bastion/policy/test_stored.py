"""Stored guardrail rules: order, insert-before, version, audited add and remove."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion import audit_actions as actions
from bastion.admin_actions import Origin
from bastion.errors import AlreadyExists, NotFound
from bastion.policy.rules import RuleError
from bastion.policy.stored import add_rule, decide, policy_of, remove_rule
from bastion.secretbox import SecretBox
from bastion.session.hooks import Verdict
from bastion.store import Store, open_store
from bastion.store.policy import StoredRule

T0 = 1_700_000_000.125
ADMIN = Origin("admin")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/state.db"
    else:
        url = request.getfixturevalue("pg_url")
    with open_store(url, SecretBox(SecretBox.generate_key())) as s:
        yield s


def _cmd(name: str, prog: str, action: str = "deny", **kw: object) -> StoredRule:
    return StoredRule(name=name, kind="command", action=action, programs=(prog,), **kw)  # type: ignore[arg-type]


def test_rules_keep_their_order_and_insert_before(store: Store) -> None:
    v0 = store.policy_version()
    add_rule(store, ADMIN, _cmd("no-rm", "rm"), None, T0)
    add_rule(store, ADMIN, _cmd("no-dd", "dd"), None, T0 + 1)
    add_rule(store, ADMIN, _cmd("rm-tmp", "rm", "allow", args_regex="^/tmp/"), "no-rm", T0 + 2)
    assert [r.name for r in store.policy_rules()] == ["rm-tmp", "no-rm", "no-dd"]
    v1 = store.policy_version()
    assert v1 == v0 + 3
    saved = store.policy_rules()[0]
    assert (saved.args_regex, saved.created_by, saved.created_at) == ("^/tmp/", "admin", T0 + 2)
    policy = policy_of(store.policy_rules(), "allow")
    args = {"user": "alice", "groups": (), "target": "web1", "labels": {}}
    assert decide(policy, "command", text="rm /tmp/x", **args).action is Verdict.ALLOW  # type: ignore[arg-type]
    d = decide(policy, "command", text="ls; rm -rf /srv", **args)  # type: ignore[arg-type]
    assert (d.action, d.rule) == (Verdict.DENY, "no-rm")
    gone = remove_rule(store, ADMIN, "no-rm", T0 + 3)
    assert gone.programs == ("rm",)
    assert [r.name for r in store.policy_rules()] == ["rm-tmp", "no-dd"]
    assert store.policy_version() == v1 + 1
    (row,) = store.list_audit(action_prefix=actions.POLICY_RULE_REMOVE)
    assert row.subject == "no-rm"
    assert row.details["rule"]["programs"] == ["rm"] and row.details["rule"]["action"] == "deny"
    assert len(store.list_audit(action_prefix=actions.POLICY_RULE_ADD)) == 3


def test_refused_changes_leave_no_row_and_no_audit(store: Store) -> None:
    add_rule(store, ADMIN, _cmd("no-rm", "rm"), None, T0)
    v = store.policy_version()
    with pytest.raises(AlreadyExists):
        add_rule(store, ADMIN, _cmd("no-rm", "shred"), None, T0)
    with pytest.raises(NotFound, match="no policy rule named 'nope'"):
        add_rule(store, ADMIN, _cmd("x", "dd"), "nope", T0)
    with pytest.raises(RuleError, match="unknown SQL classes"):
        add_rule(
            store, ADMIN, StoredRule(name="s", kind="sql", action="deny", sql_classes=("dorp",)),
            None, T0,
        )  # fmt: skip
    with pytest.raises(NotFound):
        remove_rule(store, ADMIN, "nope", T0)
    assert [r.name for r in store.policy_rules()] == ["no-rm"]
    assert store.policy_version() == v
    assert len(store.list_audit(action_prefix="policy.")) == 1
