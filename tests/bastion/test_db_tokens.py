"""Database tokens: the store's token table and the issue/check policy, on both backends.

Every test taking ``store`` runs on SQLite and on a real PostgreSQL server (the
PostgreSQL half is marked ``integration``). The clock is a parameter, so expiry
is tested without sleeping.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.db_tokens import (
    TOKEN_PREFIX,
    DbTokenDenied,
    TokenRefused,
    check_db_token,
    connection_help,
    hash_token,
    issue_db_token,
    issue_for_request,
)
from bastion.errors import AccessDenied, NotFound, StoreError
from bastion.grants import authorize_database
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import Credset, Grant, GrantState, Role, Target, TargetKind, TokenPurpose

T0 = 1_700_000_000.125
HOUR = 3600.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/state.db"
    else:
        url = request.getfixturevalue("pg_url")
    with open_store(url, SecretBox(SecretBox.generate_key())) as s:
        yield s


def _pg_target(store: Store, name: str = "pg1", sets: tuple[str, ...] = ("readonly",)) -> Target:
    return store.add_target(
        name=name,
        kind=TargetKind.POSTGRES,
        host="db.internal",
        port=5432,
        logins=[],
        principal=name,
        database="app",
        credsets=[Credset(s, f"app_{s}", f"pw-{s}") for s in sets],
        tls_mode="verify-full",
        tls_ca="/etc/ssl/db-ca.pem",
        now=T0,
    )


def _grant(
    store: Store, user_id: int, target: Target, credset: str = "readonly", hours: float = 8
) -> Grant:
    return store.add_grant(
        user_id=user_id,
        target_id=target.id,
        login=None,
        credset=credset,
        not_before=T0,
        not_after=T0 + hours * HOUR,
        reason="CHG-1",
        requested_by="admin",
        approved_by="admin",
        options=(),
        now=T0,
    )


@pytest.fixture
def world(store: Store) -> tuple[Store, Target, Grant]:
    alice = store.add_user("alice", Role.CONTRACTOR, [], None, T0)
    store.add_user("bob", Role.CONTRACTOR, [], None, T0)
    target = _pg_target(store)
    _pg_target(store, "pg2")
    return store, target, _grant(store, alice.id, target)


def _issue(
    store: Store, target: Target, grant: Grant, now: float = T0, ttl: float = HOUR
) -> tuple[str, int]:
    user = store.get_user(grant.user_name)
    assert user is not None
    issued = issue_db_token(
        store,
        user=user,
        target=target,
        grant=grant,
        credset="readonly",
        now=now,
        ttl=ttl,
        created_from="10.0.0.9",
    )
    return issued.token, issued.record.id


# --- store ------------------------------------------------------------------------------


def test_target_keeps_upstream_tls_settings(world: tuple[Store, Target, Grant]) -> None:
    store, target, _ = world
    again = store.get_target("pg1")
    assert again is not None
    assert (again.tls_mode, again.tls_ca) == ("verify-full", "/etc/ssl/db-ca.pem")
    with pytest.raises(StoreError, match="unknown TLS mode 'sometimes'"):
        store.add_target(
            name="pg3",
            kind=TargetKind.POSTGRES,
            host="h",
            port=5432,
            logins=[],
            principal="pg3",
            tls_mode="sometimes",
            now=T0,
        )


def test_store_token_lifecycle(world: tuple[Store, Target, Grant]) -> None:
    store, target, grant = world
    rec = store.add_token(
        purpose=TokenPurpose.DB,
        user_id=grant.user_id,
        target_id=target.id,
        grant_id=grant.id,
        credset="readonly",
        token_hash="ab" * 32,
        expires_at=T0 + HOUR,
        now=T0,
        created_from="cli",
    )
    assert (rec.user_name, rec.target_name, rec.grant_id, rec.credset) == (
        "alice",
        "pg1",
        grant.id,
        "readonly",
    )
    assert rec.purpose is TokenPurpose.DB and rec.live_at(T0) and not rec.live_at(T0 + HOUR)
    bob = store.get_user("bob")
    assert bob is not None
    control = store.add_token(
        purpose=TokenPurpose.CONTROL,
        user_id=bob.id,
        token_hash="cd" * 32,
        expires_at=T0 + 2 * HOUR,
        now=T0,
        created_from="cli",
    )
    assert control.target_id is None and control.target_name is None
    assert store.find_token("ab" * 32) == rec
    assert store.find_token("ef" * 32) is None

    assert [t.id for t in store.list_tokens()] == [rec.id, control.id]
    assert [t.id for t in store.list_tokens(user="alice")] == [rec.id]
    assert [t.id for t in store.list_tokens(purpose=TokenPurpose.CONTROL)] == [control.id]
    assert [t.id for t in store.list_tokens(live_only=True, now=T0 + 1.5 * HOUR)] == [control.id]

    store.touch_token(rec.id, T0 + 60)
    assert store.get_token(rec.id) is not None
    assert store.get_token(rec.id).last_used_at == T0 + 60  # type: ignore[union-attr]

    revoked = store.revoke_token(rec.id, "admin", T0 + 120)
    assert (revoked.revoked_at, revoked.revoked_by) == (T0 + 120, "admin")
    assert not revoked.live_at(T0 + 121)
    with pytest.raises(StoreError, match="already revoked by admin"):
        store.revoke_token(rec.id, "admin", T0 + 130)
    with pytest.raises(NotFound, match="no token #999"):
        store.revoke_token(999, "admin", T0)
    assert store.list_tokens(user="alice", live_only=True, now=T0 + 121) == []


def test_store_refuses_unknown_user_and_born_expired_tokens(
    world: tuple[Store, Target, Grant],
) -> None:
    store, _, _ = world
    common = {"purpose": TokenPurpose.DB, "token_hash": "aa" * 32, "created_from": "cli"}
    with pytest.raises(NotFound):
        store.add_token(user_id=999, expires_at=T0 + 1, now=T0, **common)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="expire after"):
        store.add_token(user_id=1, expires_at=T0, now=T0, **common)  # type: ignore[arg-type]


def test_revoke_user_tokens_only_touches_that_users_live_tokens(
    world: tuple[Store, Target, Grant],
) -> None:
    store, target, grant = world
    _, first = _issue(store, target, grant)
    _, second = _issue(store, target, grant)
    _, old = _issue(store, target, grant, ttl=60)  # expired by T0 + 2 min
    bob = store.get_user("bob")
    assert bob is not None
    bob_grant = _grant(store, bob.id, target)
    _, bobs = _issue(store, target, bob_grant)
    assert store.revoke_user_tokens(grant.user_id, "lock", T0 + 120) == 2
    states = {t.id: t.revoked_by for t in store.list_tokens()}
    assert states == {first: "lock", second: "lock", old: None, bobs: None}


# --- policy -----------------------------------------------------------------------------


def test_issued_token_is_random_prefixed_and_stored_only_as_a_hash(
    world: tuple[Store, Target, Grant],
) -> None:
    store, target, grant = world
    token, token_id = _issue(store, target, grant)
    other, _ = _issue(store, target, grant)
    assert re.fullmatch(TOKEN_PREFIX + r"[A-Za-z0-9_-]{43}", token) and token != other
    rec = store.get_token(token_id)
    assert rec is not None and rec.token_hash == hash_token(token)
    assert token not in repr(store.list_tokens())
    assert rec.created_from == "10.0.0.9" and rec.expires_at == T0 + HOUR


def test_expiry_is_the_earlier_of_ttl_and_grant_end(world: tuple[Store, Target, Grant]) -> None:
    store, target, grant = world  # grant ends at T0 + 8 h
    late = T0 + 7.5 * HOUR
    user = store.get_user("alice")
    assert user is not None
    issued = issue_db_token(
        store,
        user=user,
        target=target,
        grant=grant,
        credset="readonly",
        now=late,
        ttl=HOUR,
        created_from="x",
    )
    assert issued.record.expires_at == grant.not_after and issued.limited_by_grant
    text = connection_help(issued, target=target, user="alice", host="bh", port=6432, ttl=HOUR)
    assert f"grant #{grant.id} ends then" in text
    _, early = _issue(store, target, grant, now=T0, ttl=HOUR)
    assert store.get_token(early).expires_at == T0 + HOUR  # type: ignore[union-attr]


def test_check_accepts_the_token_and_marks_it_used(world: tuple[Store, Target, Grant]) -> None:
    store, target, grant = world
    token, token_id = _issue(store, target, grant)
    rec = check_db_token(store, user_name="alice", target_name="pg1", token=token, now=T0 + 5)
    assert rec.id == token_id and rec.grant_id == grant.id
    assert store.get_token(token_id).last_used_at == T0 + 5  # type: ignore[union-attr]
    same = check_db_token(
        store, user_name="alice", target_name="pg1", token=token, now=T0 + 6, credset="readonly"
    )
    assert same.id == token_id


def _refused(store: Store, token: str, **kw: object) -> TokenRefused:
    args: dict[str, object] = {"user_name": "alice", "target_name": "pg1", "now": T0 + 10}
    args.update(kw)
    with pytest.raises(TokenRefused) as info:
        check_db_token(store, token=token, **args)  # type: ignore[arg-type]
    return info.value


def test_check_refusals_name_the_cause(world: tuple[Store, Target, Grant]) -> None:
    store, target, grant = world
    token, token_id = _issue(store, target, grant)

    wrong = _refused(store, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert wrong.reason == "unknown" and "not a valid database token" in wrong.message
    assert _refused(store, "hunter2").reason == "unknown"

    other_user = _refused(store, token, user_name="bob")
    assert other_user.reason == "other-user" and "another bastion user" in other_user.message
    assert "alice" not in other_user.message  # the owner's name is not revealed

    other_target = _refused(store, token, target_name="pg2")
    assert other_target.reason == "other-target"
    assert "this token is for target pg1" in other_target.message
    assert "db-token pg2" in other_target.message

    other_set = _refused(store, token, credset="readwrite")
    assert other_set.reason == "other-credset" and "db-token pg1 readwrite" in other_set.message

    expired = _refused(store, token, now=T0 + HOUR)
    assert expired.reason == "expired" and "expired at 2023-11-14 23:13:20 UTC" in expired.message

    store.revoke_token(token_id, "cli:root", T0 + 20)
    revoked = _refused(store, token, now=T0 + 30)
    assert revoked.reason == "revoked" and "revoked at" in revoked.message
    assert "by cli:root" in revoked.message


def test_control_tokens_are_not_database_passwords(world: tuple[Store, Target, Grant]) -> None:
    store, _, grant = world
    token = TOKEN_PREFIX + "c" * 43
    store.add_token(
        purpose=TokenPurpose.CONTROL,
        user_id=grant.user_id,
        token_hash=hash_token(token),
        expires_at=T0 + HOUR,
        now=T0,
        created_from="cli",
    )
    assert _refused(store, token).reason == "unknown"


def test_issue_for_request_refusals(world: tuple[Store, Target, Grant]) -> None:
    store, target, grant = world
    alice, bob = store.get_user("alice"), store.get_user("bob")
    assert alice is not None and bob is not None
    store.add_target(
        name="web1",
        kind=TargetKind.SSH,
        host="h",
        port=22,
        logins=["deploy"],
        principal="p",
        now=T0,
    )

    def ask(user: object, name: str, credset: str | None = None, now: float = T0) -> str:
        with pytest.raises(DbTokenDenied) as info:
            issue_for_request(
                store,
                user=user,  # type: ignore[arg-type]
                target_name=name,
                credset=credset,
                now=now,
                ttl=HOUR,
                created_from="x",
            )
        return f"{info.value.reason}: {info.value}"

    assert ask(alice, "nosuch") == "no-target: no grant for nosuch"
    assert ask(alice, "web1").startswith("not-postgres: web1 is an SSH target")
    assert "has no credential set 'admin' (it has: readonly)" in ask(alice, "pg1", "admin")
    assert ask(bob, "pg1") == "no-grant: no grant for pg1"
    assert f"no-grant: grant #{grant.id} expired at" in ask(alice, "pg1", now=T0 + 9 * HOUR)
    found, issued = issue_for_request(
        store, user=alice, target_name="pg1", credset=None, now=T0, ttl=HOUR, created_from="x"
    )
    assert found.id == target.id and issued.record.credset == "readonly"


# --- authorize_database -----------------------------------------------------------------


def _g(gid: int, credset: str | None, end: float = T0 + HOUR, **kw: object) -> Grant:
    fields: dict[str, object] = {
        "id": gid,
        "user_id": 1,
        "user_name": "alice",
        "target_id": 1,
        "target_name": "pg1",
        "login": None,
        "credset": credset,
        "not_before": T0,
        "not_after": end,
        "reason": "",
        "requested_by": "a",
        "approved_by": "a",
        "state": GrantState.ACTIVE,
        "options": frozenset(),
        "created_at": T0,
    }
    fields.update(kw)
    return Grant(**fields)  # type: ignore[arg-type]


def test_authorize_database_matches_the_credential_set() -> None:
    ro, rw = _g(1, "readonly"), _g(2, "readwrite", end=T0 + 2 * HOUR)
    assert authorize_database([ro, rw], "pg1", "readonly", T0 + 1).id == 1
    assert authorize_database([ro, rw], "pg1", "readwrite", T0 + 1).id == 2
    assert authorize_database([ro], "pg1", None, T0 + 1).id == 1
    with pytest.raises(AccessDenied, match=r"several credential sets \(readonly, readwrite\)"):
        authorize_database([ro, rw], "pg1", None, T0 + 1)
    with pytest.raises(AccessDenied, match=r"credential set 'admin' \(granted: readonly\)"):
        authorize_database([ro], "pg1", "admin", T0 + 1)
    with pytest.raises(AccessDenied, match="^no grant for pg1$"):
        authorize_database([], "pg1", None, T0)


def test_authorize_database_explains_the_matching_grant() -> None:
    revoked = _g(1, "readonly", state=GrantState.REVOKED, revoked_at=T0 + 5, revoked_by="bob")
    expired = _g(2, "readwrite", end=T0 + 60)
    with pytest.raises(AccessDenied, match="grant #1 was revoked at .* by bob"):
        authorize_database([revoked, expired], "pg1", "readonly", T0 + 100)
    with pytest.raises(AccessDenied, match="grant #2 expired at"):
        authorize_database([revoked, expired], "pg1", "readwrite", T0 + 100)


def test_removing_the_target_revokes_its_tokens(world: tuple[Store, Target, Grant]) -> None:
    store, target, grant = world
    token, token_id = _issue(store, target, grant)
    store.remove_target("pg1", T0 + 60)
    _pg_target(store)  # a new pg1 with the same name must not honour the old token
    refused = _refused(store, token, now=T0 + 61)
    assert refused.reason == "revoked" and "by target-removed" in refused.message
