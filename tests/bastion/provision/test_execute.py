"""Plans put into effect on both store backends: round trips to "no changes", all or nothing."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.errors import AlreadyExists
from bastion.provision.execute import apply_origin, execute, snapshot
from bastion.provision.plan import make_plan
from bastion.provision.spec import Desired, load
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import Role

EXAMPLE = Path(__file__).parents[3] / "deploy" / "apply-example.toml"
NOW = 1_880_000_000.0  # before every date in the example
ENV = {"APPDB_RO_PASSWORD": "ro-secret"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/state.db"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    with open_store(url, SecretBox(SecretBox.generate_key())) as s:
        yield s


@pytest.fixture()
def example(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "appdb-rw.password").write_text("rw-secret\n")
    return Path(shutil.copy(EXAMPLE, tmp_path / "apply.toml"))


def apply(store: Store, desired: Desired, now: float = NOW, prune: bool = False) -> int:
    plan = make_plan(desired, snapshot(store, now), now, prune=prune)
    return len(execute(store, plan, apply_origin(desired), now))


def test_every_kind_of_change_round_trips_to_no_changes(store: Store, example: Path) -> None:
    assert apply(store, load(example, environ=ENV)) == 11
    assert make_plan(load(example, environ=ENV), snapshot(store, NOW), NOW).changes == ()
    text = example.read_text()
    for old, new in [
        ('role = "approver"', 'role = "admin"'),
        ("sam@laptop", "sam@other-laptop"),  # a comment only: not a change
        ('groups = ["web"]', 'groups = ["db", "web"]'),
        ("until = 2030-03-31T18:00:00Z", "until = 2030-04-30T18:00:00Z"),
        ('ssh = "10.0.0.6"', 'ssh = "10.0.0.7:2022"'),
        ('logins = ["deploy", "www-data"]', 'logins = ["deploy"]'),
        ('env = "prod", role = "db"', 'env = "prod", role = "db", tier = "1"'),
        ('tls = "require"', 'tls = "verify-full"\nca_file = "secrets/appdb-rw.password"'),
        ('select = "env=prod,role=db"', 'select = "env=prod"'),
        ('allow = ["scp", "sftp"]', 'allow = ["scp"]'),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    example.write_text(text)
    changed = load(example, environ={"APPDB_RO_PASSWORD": "new-ro"})
    plan = make_plan(changed, snapshot(store, NOW + 60), NOW + 60)
    assert [c.line.split(":")[0] for c in plan.changes] == [
        "~ user sam",
        "~ user ann",
        "~ user raj",
        "~ target appdb",
        "~ target web1",
        "~ target web2",
        "~ profile prod-db",
        "- grant #1 ann -> web1 as deploy",
        "+ grant ann -> web1 as deploy",
    ]
    assert "credset ro password changed (env:APPDB_RO_PASSWORD)" in plan.changes[3].line
    assert "new-ro" not in plan.render()
    execute(store, plan, apply_origin(changed), NOW + 60)
    assert make_plan(changed, snapshot(store, NOW + 61), NOW + 61).changes == ()
    sam, db = store.get_user("sam"), store.get_target("appdb")
    assert sam is not None and sam.role is Role.ADMIN and sam.ssh_keys[0].endswith("sam@laptop")
    assert db is not None and {c.name: c.password for c in db.credsets}["ro"] == "new-ro"
    assert db.labels == {"env": "prod", "role": "db", "tier": "1"}
    [before, after] = [g for g in store.list_grants() if g.user_name == "ann" and g.target_name]
    assert before.revoked_by is not None and after.options == frozenset({"scp"})
    assert after.not_before == before.not_before  # a replacement keeps the start


def test_a_refused_step_leaves_nothing_behind(store: Store, example: Path) -> None:
    desired = load(example, environ=ENV)
    plan = make_plan(desired, snapshot(store, NOW), NOW)
    store.add_user("raj", Role.CONTRACTOR, [], None, NOW)  # appears after the plan was made
    audit_before = len(store.list_audit())
    with pytest.raises(AlreadyExists):
        execute(store, plan, apply_origin(desired), NOW)
    assert [u.name for u in store.list_users()] == ["raj"]
    assert store.list_targets() == [] and store.list_profiles() == []
    assert len(store.list_audit()) == audit_before


def test_prune_retires_profiles_and_targets_keeping_history(store: Store, example: Path) -> None:
    desired = load(example, environ=ENV)
    apply(store, desired)
    keep_users = {k: v for k, v in desired.users.items() if k != "raj"}
    keep_targets = {k: v for k, v in desired.targets.items() if k != "appdb"}
    smaller = dataclasses.replace(
        desired,
        users=keep_users,
        targets=keep_targets,
        profiles={"staging-web": desired.profiles["staging-web"]},
        grants=tuple(g for g in desired.grants if g.user != "raj"),
    )
    plan = make_plan(smaller, snapshot(store, NOW), NOW, prune=True)
    assert [c.line for c in plan.changes] == [  # raj's grant on appdb ends with appdb
        "- profile prod-db: not in the file",
        "- target appdb: not in the file",
        "- user raj: not in the file: disabled, live sessions end",
    ]
    execute(store, plan, apply_origin(smaller), NOW)
    assert make_plan(smaller, snapshot(store, NOW), NOW, prune=True).changes == ()
    raj = store.get_user("raj")
    assert raj is not None and raj.disabled
    assert [p.name for p in store.list_profiles(all=True)] == ["prod-db", "staging-web"]
    assert store.get_target("appdb") is None
    grant = store.get_grant(2)
    assert grant is not None and grant.revoked_by == "target-removed"


def test_changing_the_org_keeps_the_reminders_already_sent(store: Store, example: Path) -> None:
    apply(store, load(example, environ=ENV))
    ann = store.get_user("ann")
    assert ann is not None and ann.engagement_until is not None
    assert store.claim_reminder(ann.id, 7, ann.engagement_until)
    example.write_text(example.read_text().replace('org = "Acme"\n', 'org = "Acme Ltd"\n', 1))
    assert apply(store, load(example, environ=ENV)) == 1
    after = store.get_user("ann")
    assert after is not None and after.org == "Acme Ltd" and after.engagement_reminded == 7
