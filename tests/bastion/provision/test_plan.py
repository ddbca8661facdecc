"""The plan engine, pure: desired records and a store snapshot in, ordered changes out."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bastion.provision.changes import (
    APPLY_REQUESTER,
    AddGrant,
    AddTarget,
    AddUser,
    Current,
    DisableUser,
    Plan,
    RemoveProfile,
    RemoveTarget,
    RevokeGrant,
    UpdateProfile,
    UpdateTarget,
    UpdateUser,
)
from bastion.provision.plan import make_plan
from bastion.provision.spec import Desired, SpecError, parse
from bastion.store.models import (
    Credset,
    Grant,
    GrantState,
    Profile,
    Role,
    Target,
    TargetKind,
    User,
)

NOW = 1_880_000_000.0  # 2029-07-28; the file's dates lie after it
DAY = 86400.0
K1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICZxEW5cAwplvRYGYqR0pBBZG/yjgfpYdwdFiAmHarho"
K2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICLn9R+aV0qgBmicxKvVNAEP4fyixbVj+vzPiYgr1aQ0"
HK = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICADFdflBKO68xe+NAkcTTDn6rPbHKc1hXP6q/90p3pX"

BASE = f"""
[users.sam]
role = "approver"
keys = ["{K1} sam"]
[users.ann]
keys = ["{K2} ann"]
sponsor = "sam"
until = 2030-06-30
org = "Acme"
[targets.web1]
ssh = "10.0.0.5"
logins = ["deploy", "www"]
host_keys = ["{HK}"]
[targets.db]
postgres = "10.0.0.9"
database = "app"
credsets.ro = {{ user = "app_ro", password = "env:RO" }}
[[grants]]
user = "ann"
target = "web1"
until = 2030-01-01
"""
ENV = {"RO": "pw1"}


def desired(text: str = BASE, env: dict[str, str] | None = None) -> Desired:
    return parse(text.encode(), Path("/srv/apply.toml"), environ=ENV if env is None else env)


def user(uid: int, name: str, role: Role = Role.CONTRACTOR, **kw: object) -> User:
    fields: dict[str, object] = dict(
        id=uid, name=name, role=role, ssh_keys=(), totp_secret=None, totp_last_step=None,
        locked_until=None, disabled=False, created_at=0.0,
    )  # fmt: skip
    return User(**(fields | kw))  # type: ignore[arg-type]


def target(tid: int, name: str, **kw: object) -> Target:
    fields: dict[str, object] = dict(
        id=tid, name=name, kind=TargetKind.SSH, host="10.0.0.5", port=22, logins=("deploy", "www"),
        principal=f"bastion-{name}", host_keys=(HK,), host_ca_keys=(), database=None,
        credsets=(), created_at=0.0,
    )  # fmt: skip
    return Target(**(fields | kw))  # type: ignore[arg-type]


def grant(gid: int, u: User, t: Target, **kw: object) -> Grant:
    fields: dict[str, object] = dict(
        id=gid, user_id=u.id, user_name=u.name, target_id=t.id, target_name=t.name,
        login="deploy", credset=None, not_before=NOW - DAY, not_after=1893456000.0, reason="r",
        requested_by=APPLY_REQUESTER, approved_by="cli:x", state=GrantState.ACTIVE,
        options=frozenset(), created_at=NOW - DAY,
    )  # fmt: skip
    return Grant(**(fields | kw))  # type: ignore[arg-type]


def matching() -> Current:
    """The store exactly as BASE wants it."""
    sam = user(1, "sam", Role.APPROVER, ssh_keys=(f"{K1} other-comment",))
    ann = user(2, "ann", ssh_keys=(K2,), sponsor="sam", engagement_until=1909008000.0, org="Acme")
    web1 = target(1, "web1")
    db = target(
        2, "db", kind=TargetKind.POSTGRES, host="10.0.0.9", port=5432, logins=(),
        principal="db", host_keys=(), database="app", credsets=(Credset("ro", "app_ro", "pw1"),),
    )  # fmt: skip
    return Current(
        users={"sam": sam, "ann": ann},
        groups={},
        targets={"web1": web1, "db": db},
        grants=(grant(1, ann, web1),),
    )


def lines(plan: Plan) -> list[str]:
    return [c.line for c in plan.changes]


def test_from_empty_everything_is_added_sponsors_first() -> None:
    plan = make_plan(desired(), Current(), NOW)
    kinds = [type(c) for c in plan.changes]
    assert kinds == [AddUser, AddUser, AddTarget, AddTarget, AddGrant]
    assert [c.subject for c in plan.changes[:2]] == ["sam", "ann"]
    text = plan.render()
    assert "+ user ann: contractor, 1 key(s), sponsor sam, until 2030-06-30 00:00:00 UTC" in text
    assert "+ target db: postgres 10.0.0.9:5432, database app, credset ro (env:RO)" in text
    assert "+ grant ann -> web1 as deploy: until 2030-01-01 00:00:00 UTC" in text
    assert "pw1" not in text
    assert text.endswith("5 change(s): 5 to add, 0 to change, 0 to remove or disable\n")
    add = plan.changes[-1]
    assert isinstance(add, AddGrant) and add.not_before == NOW and add.login == "deploy"


def test_matching_store_means_no_changes() -> None:
    plan = make_plan(desired(), matching(), NOW)
    assert plan.changes == () and plan.render() == "no changes\n"


def test_user_changes_are_one_diff_line() -> None:
    text = BASE.replace('org = "Acme"', 'org = "Beta"\ngroups = ["web"]').replace(
        f'keys = ["{K2} ann"]', f'keys = ["{K1}"]\nrole = "auditor"'
    )
    text = text.replace("until = 2030-06-30", "until = 2030-07-31").replace(
        'user = "ann"\ntarget', 'user = "sam"\ntarget'
    )
    plan = make_plan(desired(text), matching(), NOW, require_end_date=False)
    [update] = [c for c in plan.changes if isinstance(c, UpdateUser)]
    assert update.line == (
        "~ user ann: role contractor -> auditor, keys +1 -1, groups - -> web, org Acme -> Beta, "
        "until 2030-06-30 00:00:00 UTC -> 2030-07-31 00:00:00 UTC"
    )
    assert update.role is Role.AUDITOR and update.groups == ("web",) and update.engagement


def test_target_changes_in_place_and_passwords_are_never_shown() -> None:
    text = BASE.replace('ssh = "10.0.0.5"', 'ssh = "10.0.0.5:2222"').replace(
        '"deploy", "www"', '"deploy"'
    )
    plan = make_plan(desired(text, {"RO": "pw2"}), matching(), NOW)
    assert lines(plan) == [
        "~ target db: credset ro password changed (env:RO)",
        "~ target web1: address 10.0.0.5:22 -> 10.0.0.5:2222, logins deploy,www -> deploy",
    ]
    assert all(isinstance(c, UpdateTarget) for c in plan.changes)


def test_without_prune_the_rest_is_left_alone_and_said() -> None:
    cur = matching()
    bob = user(3, "bob", Role.CONTRACTOR)
    old = target(3, "old")
    cur = dataclasses.replace(
        cur,
        users={**cur.users, "bob": bob},
        targets={**cur.targets, "old": old},
        grants=(*cur.grants, grant(2, bob, old)),
        other_grants=4,
    )
    plan = make_plan(desired(), cur, NOW)
    assert plan.changes == ()
    text = plan.render()
    assert "no changes" in text
    assert "left alone (not in the file; --prune disables or removes them): " in text
    assert "standing grants #2; users bob; targets old" in text
    assert "4 active grant(s) made by hand or by requests" in text


def test_prune_disables_users_removes_targets_revokes_grants_in_order() -> None:
    cur = matching()
    bob = user(3, "bob")
    gone = user(4, "gone", disabled=True)
    old = target(3, "old")
    web1 = cur.targets["web1"]
    cur = dataclasses.replace(
        cur,
        users={**cur.users, "bob": bob, "gone": gone},
        targets={**cur.targets, "old": old},
        grants=(*cur.grants, grant(2, bob, web1), grant(3, bob, old)),
    )
    plan = make_plan(desired(), cur, NOW, prune=True)
    assert lines(plan) == [
        "- grant #2 bob -> web1 as deploy: not in the file",
        "- target old: not in the file",
        "- user bob: not in the file: disabled, live sessions end",
    ]
    assert [type(c) for c in plan.changes] == [RevokeGrant, RemoveTarget, DisableUser]


def test_a_grant_to_a_pruned_target_is_an_error() -> None:
    cur = matching()
    cur = dataclasses.replace(cur, targets={**cur.targets, "old": target(3, "old")})
    text = BASE + '[[grants]]\nuser = "ann"\ntarget = "old"\nfor = "1d"\n'
    assert make_plan(desired(text), cur, NOW).changes  # without prune: fine
    with pytest.raises(SpecError, match=r"grants\[1\].target: target old is not in the file"):
        make_plan(desired(text), cur, NOW, prune=True)


def test_an_expired_standing_grant_is_not_renewed_until_the_end_moves() -> None:
    cur = matching()
    later = 1893456000.0 + DAY  # the grant (until 2030-01-01) has expired by then
    plan = make_plan(desired(), cur, later)
    assert plan.changes == ()
    assert "grant #1 (ann -> web1 as deploy) expired 2030-01-01 00:00:00 UTC: not renewed" in (
        plan.render()
    )
    renewed = make_plan(
        desired(BASE.replace("until = 2030-01-01", "until = 2030-03-01")), cur, later
    )
    [add] = renewed.changes
    assert isinstance(add, AddGrant) and add.line.endswith("renews #1")
    assert add.not_before == cur.grants[0].not_before


def test_for_counts_from_the_first_creation_so_reapplying_is_stable() -> None:
    text = BASE.replace("until = 2030-01-01", 'for = "30d"')
    cur = matching()
    first = make_plan(desired(text), dataclasses.replace(cur, grants=()), NOW)
    [add] = first.changes
    assert isinstance(add, AddGrant) and add.not_after == NOW + 30 * DAY
    stored = dataclasses.replace(cur.grants[0], not_before=NOW, not_after=NOW + 30 * DAY)
    again = dataclasses.replace(cur, grants=(stored,))
    assert make_plan(desired(text), again, NOW + 5 * DAY).changes == ()
    assert make_plan(desired(text), again, NOW + 40 * DAY).changes == ()  # expired: not renewed
    longer = make_plan(desired(text.replace('"30d"', '"60d"')), again, NOW + 40 * DAY)
    [add] = longer.changes
    assert isinstance(add, AddGrant) and (add.not_before, add.not_after) == (NOW, NOW + 60 * DAY)


def test_changed_options_replace_the_grant_keeping_its_start() -> None:
    text = BASE.replace("until = 2030-01-01", "until = 2030-01-01\nallow = ['scp']")
    plan = make_plan(desired(text), matching(), NOW)
    assert lines(plan) == [
        "- grant #1 ann -> web1 as deploy: replaced",
        "+ grant ann -> web1 as deploy: until 2030-01-01 00:00:00 UTC, allow scp, replaces #1",
    ]
    add = plan.changes[1]
    assert isinstance(add, AddGrant) and add.not_before == NOW - DAY


def test_grants_made_by_hand_are_not_matched() -> None:
    cur = matching()
    by_hand = dataclasses.replace(cur.grants[0], requested_by="cli:root")
    plan = make_plan(desired(), dataclasses.replace(cur, grants=()), NOW)
    assert [type(c) for c in plan.changes] == [AddGrant]
    assert by_hand.requested_by != APPLY_REQUESTER


def test_a_revoked_standing_grant_is_granted_again() -> None:
    cur = matching()
    revoked = dataclasses.replace(cur.grants[0], state=GrantState.REVOKED)
    plan = make_plan(desired(), dataclasses.replace(cur, grants=(revoked,)), NOW)
    [add] = plan.changes
    assert isinstance(add, AddGrant) and add.not_before == NOW


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (('sponsor = "sam"', 'sponsor = "nobody"'), "users.ann.sponsor: no user named 'nobody'"),
        (('role = "approver"', 'role = "contractor"\nuntil = 2030-01-01\nsponsor = "ann"'),
         "users.sam.sponsor: ann is a contractor; a sponsor is an admin or approver"),
        (('sponsor = "sam"\n', ""), "users.ann.sponsor: an end date needs a sponsor"),
        (("until = 2030-06-30\n", ""), "users.ann.until: contractor ann needs an end date"),
        (("until = 2030-06-30", "until = 2020-06-30"),
         "users.ann.until: 2020-06-30 00:00:00 UTC is not in the future"),
        (('target = "web1"', 'target = "nope"'), "grants[0].target: no target named 'nope'"),
        (('target = "web1"', 'target = "web1"\nlogin = "root"'),
         "grants[0].login: target web1 has no login 'root'"),
        (('target = "web1"', 'target = "db"\nlogin = "x"'), "grants[0].login: db is a database"),
        (('target = "web1"', 'target = "db"\ncredset = "rw"'),
         "grants[0].credset: target db has no credential set 'rw'"),
        (('user = "ann"\ntarget', 'user = "zed"\ntarget'), "grants[0].user: no user named 'zed'"),
    ],
)  # fmt: skip
def test_rules_checked_against_the_store_name_the_key(edit: tuple[str, str], words: str) -> None:
    with pytest.raises(SpecError) as e:
        make_plan(desired(BASE.replace(*edit)), Current(), NOW)
    assert str(e.value).startswith(f"/srv/apply.toml: {words}")


def test_an_ended_engagement_is_not_reenabled_by_the_same_file() -> None:
    cur = matching()
    ann = dataclasses.replace(cur.users["ann"], disabled=True, engagement_ended_at=1909008000.0)
    cur = dataclasses.replace(cur, users={**cur.users, "ann": ann})
    plan = make_plan(desired(), cur, 1909008000.0 + DAY)
    assert not [c for c in plan.changes if isinstance(c, UpdateUser)]
    assert "user ann stays disabled: the engagement ended" in plan.render()
    later = desired(BASE.replace("until = 2030-06-30", "until = 2031-06-30"))
    [update] = [
        c for c in make_plan(later, cur, 1909008000.0 + DAY).changes if isinstance(c, UpdateUser)
    ]
    assert update.enable and update.line.endswith("enabled")


def test_disabled_true_disables_after_everything_else() -> None:
    text = BASE.replace('org = "Acme"', 'org = "Acme"\ndisabled = true')
    plan = make_plan(desired(text), matching(), NOW)
    assert lines(plan) == ["- user ann: disabled = true"]


# --- labels, profiles and profile grants -----------------------------------------------------

PROFILES = (
    BASE.replace('host_keys = ["', 'labels = { env = "staging", role = "web" }\nhost_keys = ["')
    + """
[profiles.web]
select = "role=web, env=staging"
logins = ["deploy"]
allow = ["scp"]
max = "30d"
[[grants]]
user = "ann"
profile = "web"
for = "7d"
"""
)


def with_profiles() -> Current:
    cur = matching()
    web1 = dataclasses.replace(cur.targets["web1"], labels={"env": "staging", "role": "web"})
    web = Profile(
        id=1, name="web", selector="role=web,env=staging", logins=("deploy",), credset=None,
        options=frozenset({"scp"}), max_duration=30 * DAY, approvals=None, approvers=(),
        created_at=0.0, created_by="x",
    )  # fmt: skip
    under = grant(
        2, cur.users["ann"], web1, target_id=None, target_name=None, profile_id=1,
        profile_name="web", login=None, options=frozenset({"scp"}), not_before=NOW,
        not_after=NOW + 7 * DAY,
    )  # fmt: skip
    return dataclasses.replace(
        cur,
        targets={**cur.targets, "web1": web1},
        profiles={"web": web},
        grants=(*cur.grants, under),
    )


def test_labels_and_profiles_from_empty_and_when_matching() -> None:
    plan = make_plan(desired(PROFILES), Current(), NOW)
    text = plan.render()
    assert (
        "+ target web1: ssh 10.0.0.5:22, logins deploy,www, label env=staging, label role=web"
        in text
    )
    assert (
        "+ profile web: select role=web,env=staging, logins deploy, allow scp, max 30d00h" in text
    )
    assert "+ grant ann -> profile web: until 2029-08-05 06:13:20 UTC, allow scp" in text
    assert make_plan(desired(PROFILES), with_profiles(), NOW).changes == ()


def test_a_label_change_is_one_line_and_touches_nothing_else() -> None:
    text = PROFILES.replace('env = "staging", role = "web"', 'env = "prod", tier = "1"')
    [change] = make_plan(desired(text), with_profiles(), NOW).changes
    assert change.line == (
        "~ target web1: label env staging -> prod, label tier=1 added, label role removed"
    )
    assert isinstance(change, UpdateTarget) and not change.fields
    assert change.set_labels == (("env", "prod"), ("tier", "1")) and change.remove_labels == (
        "role",
    )


def test_a_profile_change_and_prune_of_profiles() -> None:
    text = PROFILES.replace('select = "role=web, env=staging"', 'select = "role=web"')
    [change] = make_plan(desired(text), with_profiles(), NOW).changes
    assert isinstance(change, UpdateProfile)
    assert change.line == "~ profile web: select role=web,env=staging -> role=web"
    cur = with_profiles()
    old = dataclasses.replace(cur.profiles["web"], id=2, name="old")
    cur = dataclasses.replace(cur, profiles={**cur.profiles, "old": old})
    assert "profiles old" in make_plan(desired(PROFILES), cur, NOW).render()
    [gone] = make_plan(desired(PROFILES), cur, NOW, prune=True).changes
    assert isinstance(gone, RemoveProfile) and gone.line == "- profile old: not in the file"


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (('for = "7d"', 'for = "40d"'), "grants[1].for: profile web allows at most 30d00h"),
        (('for = "7d"', 'for = "7d"\nallow = ["sftp"]'),
         "grants[1].allow: profile web does not allow sftp"),
        (('for = "7d"', 'for = "7d"\nlogin = "www"'),
         "grants[1].login: profile web allows the logins deploy"),
        (('profile = "web"', 'profile = "nope"'), "grants[1].profile: no profile named 'nope'"),
    ],
)  # fmt: skip
def test_profile_grants_stay_inside_their_profile(edit: tuple[str, str], words: str) -> None:
    with pytest.raises(SpecError) as e:
        make_plan(desired(PROFILES.replace(*edit)), Current(), NOW)
    assert str(e.value).startswith(f"/srv/apply.toml: {words}")
