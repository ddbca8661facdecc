"""Target labels, access profiles and profile grants in the state store, on both backends.

Also the selector language (pure) and migration 9 on a store that already holds
grants referenced by sessions. The PostgreSQL half is marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import AlreadyExists, NotFound, StoreError, UsageError
from bastion.profiles import Selector, format_labels, parse_label, parse_labels
from bastion.secretbox import SecretBox
from bastion.session.admission import Refused, find_access
from bastion.store import Store, open_store
from bastion.store.backends import connect
from bastion.store.migrations import MIGRATIONS, migrate
from bastion.store.models import Grant, Role, SessionRecord, Target, TargetKind, User

T0 = 1_700_000_000.125
HOUR = 3600.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(SecretBox.generate_key())


@pytest.fixture
def store(db_url: str, box: SecretBox) -> Iterator[Store]:
    with open_store(db_url, box) as s:
        yield s


def make_user(store: Store, name: str = "alice") -> User:
    return store.add_user(name, Role.CONTRACTOR, [f"ssh-ed25519 AAAA{name} x"], None, T0)


def make_target(store: Store, name: str, labels: dict[str, str] | None = None) -> Target:
    return store.add_target(
        name=name, kind=TargetKind.SSH, host="10.0.0.5", port=22, logins=["deploy", "root"],
        principal=f"{name}-deploy", labels=labels, now=T0,
    )  # fmt: skip


def profile_grant(store: Store, user: User, profile: str, **kw: Any) -> Grant:
    found = store.get_profile(profile)
    assert found is not None
    args: dict[str, Any] = dict(
        user_id=user.id, target_id=None, profile_id=found.id, login=None, credset=None,
        not_before=T0, not_after=T0 + HOUR, reason="TICKET-1", requested_by="root",
        approved_by=None, options=sorted(found.options), now=T0,
    )  # fmt: skip
    args.update(kw)
    return store.add_grant(**args)


# ------------------------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("env=staging", {"env": "staging", "role": "web"}, True),
        ("env=staging", {"env": "prod"}, False),
        ("env=staging,role=web", {"env": "staging", "role": "web"}, True),
        ("env=staging,role=web", {"env": "staging", "role": "db"}, False),
        ("env=staging, role!=db", {"env": "staging"}, True),
        ("env=staging,role!=db", {"env": "staging", "role": "db"}, False),
        ("team", {"team": "a"}, True),
        ("team", {}, False),
        ("!legacy", {"env": "x"}, True),
        ("!legacy", {"legacy": "yes"}, False),
    ],
)
def test_selector_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Selector.parse(text).matches(labels) is expected


def test_selector_text_is_canonical_and_bad_ones_are_named() -> None:
    assert str(Selector.parse(" env = staging ,role!=db,, team ,!old")) == (
        "env=staging,role!=db,team,!old"
    )
    for bad, named in [("", "at least one"), (",", "at least one"), ("a b", "a b"),
                       ("env=", "env"), ("=x", "''"), ("env=a,b c", "b c")]:  # fmt: skip
        with pytest.raises(UsageError, match=named):
            Selector.parse(bad)


def test_labels_parse_and_format() -> None:
    assert parse_label("env=prod") == ("env", "prod")
    assert parse_labels(["env=prod", "role=db", "env=prod"]) == {"env": "prod", "role": "db"}
    assert format_labels({"role": "db", "env": "prod"}) == "env=prod,role=db"
    assert format_labels({}) == "-"
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_label("env")
    with pytest.raises(UsageError, match="twice"):
        parse_labels(["env=a", "env=b"])
    with pytest.raises(UsageError, match="bad value"):
        parse_label("env=a,b")


# ---------------------------------------------------------------------------------- labels


def test_target_labels_set_remove_and_read_back(store: Store) -> None:
    t = make_target(store, "web1", {"env": "staging"})
    assert dict(t.labels) == {"env": "staging"}
    t = store.set_target_labels("web1", {"role": "web", "env": "prod"})
    assert dict(t.labels) == {"env": "prod", "role": "web"}
    t = store.set_target_labels("web1", {}, ["env"])
    assert dict(t.labels) == {"role": "web"}
    got = store.get_target("web1")
    assert got is not None and dict(got.labels) == {"role": "web"}
    assert [dict(x.labels) for x in store.list_targets()] == [{"role": "web"}]
    with pytest.raises(NotFound, match="has no label 'env'.*role"):
        store.set_target_labels("web1", {}, ["env"])
    with pytest.raises(NotFound, match="no target named 'nope'"):
        store.set_target_labels("nope", {"a": "b"})
    with pytest.raises(StoreError, match="both set and removed"):
        store.set_target_labels("web1", {"role": "db"}, ["role"])


# -------------------------------------------------------------------------------- profiles


def test_profiles_add_get_list_set_remove(store: Store) -> None:
    p = store.add_profile(
        name="staging-web", selector="env=staging, role=web", logins=["deploy"],
        options=["sftp"], max_duration=4 * HOUR, approvals=2, approvers=["bob", "@ops"],
        created_by="root", now=T0,
    )  # fmt: skip
    assert (p.selector, p.logins, p.options) == (
        "env=staging,role=web",
        ("deploy",),
        frozenset({"sftp"}),
    )
    assert (p.max_duration, p.approvals, p.approvers) == (4 * HOUR, 2, ("bob", "@ops"))
    assert store.get_profile("staging-web") == p
    with pytest.raises(AlreadyExists, match="already exists"):
        store.add_profile(name="staging-web", selector="env=x", created_by="root", now=T0)
    with pytest.raises(UsageError, match="bad selector term"):
        store.add_profile(name="bad", selector="env staging", created_by="root", now=T0)
    with pytest.raises(StoreError, match="unknown grant option"):
        store.add_profile(name="bad", selector="env=x", options=["root"], created_by="r", now=T0)
    changed = store.set_profile("staging-web", selector="env=staging", approvals=None)
    assert (changed.selector, changed.approvals, changed.logins) == (
        "env=staging",
        None,
        ("deploy",),
    )
    removed = store.remove_profile("staging-web", T0 + 5)
    assert removed.removed_at == T0 + 5
    assert store.get_profile("staging-web") is None
    assert store.list_profiles() == []
    assert [x.name for x in store.list_profiles(all=True)] == ["staging-web"]
    with pytest.raises(NotFound, match="no profile named"):
        store.remove_profile("staging-web", T0 + 6)
    again = store.add_profile(name="staging-web", selector="env=x", created_by="root", now=T0)
    assert again.id != p.id  # the name is free again; history keeps the old row


def test_targets_reached_by_follows_labels_now(store: Store) -> None:
    make_target(store, "web1", {"env": "staging", "role": "web"})
    make_target(store, "web2", {"env": "prod", "role": "web"})
    make_target(store, "db1", {"env": "staging", "role": "db"})
    store.add_profile(name="sw", selector="env=staging,role=web", created_by="root", now=T0)
    assert [t.name for t in store.targets_reached_by("sw")] == ["web1"]
    store.set_target_labels("web2", {"env": "staging"})
    assert [t.name for t in store.targets_reached_by("sw")] == ["web1", "web2"]
    store.remove_target("web1", T0 + 1)
    assert [t.name for t in store.targets_reached_by("sw")] == ["web2"]


# -------------------------------------------------------------------------- profile grants


def test_profile_grant_reaches_labelled_targets_at_each_call(store: Store) -> None:
    alice = make_user(store)
    web1 = make_target(store, "web1", {"env": "staging"})
    web2 = make_target(store, "web2")
    store.add_profile(
        name="staging", selector="env=staging", logins=["deploy"], created_by="root", now=T0
    )
    g = profile_grant(store, alice, "staging")
    assert (g.target_id, g.target_name, g.profile_name) == (None, None, "staging")
    assert store.get_grant(g.id) == g
    assert [x.id for x in store.list_grants(user_id=alice.id)] == [g.id]

    views = store.list_grants(user_id=alice.id, target_id=web1.id)
    assert [(v.id, v.target_id, v.target_name, v.login) for v in views] == [
        (g.id, web1.id, "web1", "deploy")
    ]
    assert store.list_grants(user_id=alice.id, target_id=web2.id) == []
    access = find_access(store, user=alice, target_name="web1", protocol="ssh", now=T0 + 1)
    assert (access.grant.id, access.login) == (g.id, "deploy")
    with pytest.raises(Refused, match="no grant for web2"):
        find_access(store, user=alice, target_name="web2", protocol="ssh", now=T0 + 1)

    store.set_target_labels("web2", {"env": "staging"})  # labelled later: reached, no new grant
    access = find_access(store, user=alice, target_name="web2", protocol="ssh", now=T0 + 1)
    assert access.grant.id == g.id
    expanded = store.list_grants(user_id=alice.id, active_at=T0 + 1, expand=True)
    assert [(v.id, v.target_name) for v in expanded] == [(g.id, "web1"), (g.id, "web2")]

    store.set_target_labels("web1", {}, ["env"])  # label removed: no longer reached
    with pytest.raises(Refused, match="no grant for web1"):
        find_access(store, user=alice, target_name="web1", protocol="ssh", now=T0 + 1)


def test_profile_grant_logins_and_fixed_grants_together(store: Store) -> None:
    alice = make_user(store)
    web1 = make_target(store, "web1", {"env": "staging"})
    store.add_profile(
        name="staging", selector="env=staging", logins=["deploy", "root"], created_by="r", now=T0
    )
    g = profile_grant(store, alice, "staging")
    fixed = store.add_grant(
        user_id=alice.id, target_id=web1.id, login="deploy", credset=None, not_before=T0,
        not_after=T0 + 2 * HOUR, reason="r", requested_by="r", approved_by=None, options=[],
        now=T0,
    )  # fmt: skip
    views = store.list_grants(user_id=alice.id, target_id=web1.id)
    assert [(v.id, v.login) for v in views] == [
        (g.id, "deploy"),
        (g.id, "root"),
        (fixed.id, "deploy"),
    ]
    as_root = find_access(
        store, user=alice, target_name="web1", protocol="ssh", now=T0, login="root"
    )
    assert as_root.grant.id == g.id
    own = profile_grant(store, alice, "staging", login="root")
    only_root = [
        v for v in store.list_grants(user_id=alice.id, target_id=web1.id) if v.id == own.id
    ]
    assert [v.login for v in only_root] == ["root"]


def test_removed_profile_grants_nothing(store: Store) -> None:
    alice = make_user(store)
    web1 = make_target(store, "web1", {"env": "staging"})
    store.add_profile(name="staging", selector="env=staging", created_by="root", now=T0)
    g = profile_grant(store, alice, "staging")
    store.remove_profile("staging", T0 + 1)
    assert store.list_grants(user_id=alice.id, target_id=web1.id) == []
    assert store.list_grants(user_id=alice.id, expand=True) == []
    stored = store.get_grant(g.id)
    assert stored is not None and stored.profile_name == "staging"  # history keeps the name
    with pytest.raises(NotFound, match="no profile with id"):
        store.add_grant(
            user_id=alice.id, target_id=None, profile_id=g.profile_id, login=None, credset=None,
            not_before=T0, not_after=T0 + HOUR, reason="r", requested_by="r", approved_by=None,
            options=[], now=T0,
        )  # fmt: skip


def test_grant_names_a_target_or_a_profile(store: Store) -> None:
    alice = make_user(store)
    web1 = make_target(store, "web1")
    p = store.add_profile(name="p", selector="env=x", created_by="root", now=T0)
    for target_id, profile_id in [(None, None), (web1.id, p.id)]:
        with pytest.raises(StoreError, match="either one target or one profile"):
            store.add_grant(
                user_id=alice.id, target_id=target_id, profile_id=profile_id, login=None,
                credset=None, not_before=T0, not_after=T0 + HOUR, reason="r",
                requested_by="r", approved_by=None, options=[], now=T0,
            )  # fmt: skip


def test_unreached_judges_live_profile_sessions(store: Store) -> None:
    alice = make_user(store)
    web1 = make_target(store, "web1", {"env": "staging"})
    make_target(store, "web2", {"env": "staging"})
    store.add_profile(name="staging", selector="env=staging", created_by="root", now=T0)
    g = profile_grant(store, alice, "staging")
    fixed = store.add_grant(
        user_id=alice.id, target_id=web1.id, login="deploy", credset=None, not_before=T0,
        not_after=T0 + HOUR, reason="r", requested_by="r", approved_by=None, options=[], now=T0,
    )  # fmt: skip
    pairs = [(g.id, "web1"), (g.id, "web2"), (fixed.id, "web1")]
    assert store.unreached(pairs) == set()
    assert store.unreached([]) == set()
    store.set_target_labels("web1", {}, ["env"])
    assert store.unreached(pairs) == {(g.id, "web1")}  # the fixed grant is not judged here
    store.set_profile("staging", selector="env=prod")
    assert store.unreached(pairs) == {(g.id, "web1"), (g.id, "web2")}
    store.set_profile("staging", selector="env=staging")
    store.remove_profile("staging", T0 + 1)
    assert store.unreached(pairs) == {(g.id, "web1"), (g.id, "web2")}


# ------------------------------------------------------------------------------- migration


def test_migration_9_keeps_existing_grants_sessions_and_tokens(db_url: str, box: SecretBox) -> None:
    before = tuple(m for m in MIGRATIONS if m.version < 9)
    with closing(connect(db_url)) as backend:
        migrate(backend, T0, before)
        old = Store(backend, box)
        alice = make_user(old)
        with backend.transaction(write=True) as tx:
            target_id = tx.insert(
                "INSERT INTO targets (name, kind, host, port, logins, principal, host_keys,"
                " host_ca_keys, created_at) VALUES ('web1', 'ssh', 'h', 22, '[\"deploy\"]',"
                " 'p', '[]', '[]', ?) RETURNING id",
                [T0],
            )
            grant_id = tx.insert(
                "INSERT INTO grants (user_id, target_id, login, credset, not_before, not_after,"
                " reason, requested_by, approved_by, state, options, created_at)"
                " VALUES (?, ?, 'deploy', NULL, ?, ?, 'r', 'r', NULL, 'active', '[]', ?)"
                " RETURNING id",
                [alice.id, target_id, T0, T0 + HOUR, T0],
            )
        old.start_session(
            SessionRecord(
                id="s1", user_id=alice.id, user_name="alice", target_id=target_id,
                target_name="web1", grant_id=grant_id, node="n", protocol="ssh",
                login="deploy", client_addr="c", started_at=T0,
            )
        )  # fmt: skip
    with open_store(db_url, box) as store:
        kept = store.get_grant(grant_id)
        assert kept is not None and (kept.target_name, kept.profile_id) == ("web1", None)
        session = store.get_session("s1")
        assert session is not None and session.grant_id == grant_id
        store.add_profile(name="p", selector="env=x", created_by="root", now=T0)
        g = profile_grant(store, alice, "p")  # target_id is nullable now
        assert g.target_id is None and g.id > grant_id
