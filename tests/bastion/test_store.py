"""The state store on both backends: SQLite files and a real PostgreSQL server.

Every test taking ``store`` runs twice; the PostgreSQL half is marked
``integration``. Races are exercised with several ``Store`` objects (separate
connections, as separate nodes would have) on the same database.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bastion.errors import AlreadyExists, ConfigError, NotFound, StoreError
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.audit_chain import GENESIS_HASH
from bastion.store.backends import Row, connect
from bastion.store.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate
from bastion.store.models import (
    CertificateRecord,
    Credset,
    GrantState,
    Role,
    SessionRecord,
    Target,
    TargetKind,
    User,
)

T = TypeVar("T")
T0 = 1_700_000_000.125  # not representable in float4: catches REAL columns on PostgreSQL
HOUR = 3600.0


# ------------------------------------------------------------------------------- fixtures


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


def raw(url: str, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    """Run SQL directly against the database, bypassing the Store."""
    with closing(connect(url)) as backend, backend.transaction(write=True) as tx:
        if sql.lstrip().upper().startswith("SELECT"):
            return tx.all(sql, params)
        tx.run(sql, params)
        return []


def race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run ``fn(0..n-1)`` in n threads released together; re-raise the first error."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = fn(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def make_user(store: Store, name: str = "alice", secret: str | None = "JBSWY3DPEHPK3PXP") -> User:
    return store.add_user(name, Role.CONTRACTOR, ["ssh-ed25519 AAAAkey1 alice@laptop"], secret, T0)


def make_target(store: Store, name: str = "web1", **kw: Any) -> Target:
    args: dict[str, Any] = dict(
        name=name, kind=TargetKind.SSH, host="10.0.0.5", port=22, logins=["deploy", "root"],
        principal=f"{name}-deploy", host_keys=["ssh-ed25519 AAAAhost"], now=T0,
    )  # fmt: skip
    args.update(kw)
    return store.add_target(**args)


def grant_for(store: Store, user: User, target: Target, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        user_id=user.id, target_id=target.id, login="deploy", credset=None,
        not_before=T0, not_after=T0 + HOUR, reason="TICKET-1", requested_by=user.name,
        approved_by="boss", options=["sftp"], now=T0,
    )  # fmt: skip
    args.update(kw)
    return store.add_grant(**args)


def session_rec(sid: str, user: User, target: Target, **kw: Any) -> SessionRecord:
    args: dict[str, Any] = dict(
        id=sid, user_id=user.id, user_name=user.name, target_id=target.id,
        target_name=target.name, grant_id=None, node="node-a", protocol="ssh",
        login="deploy", client_addr="192.0.2.7:5555", started_at=T0,
    )  # fmt: skip
    args.update(kw)
    return SessionRecord(**args)


# ----------------------------------------------------------------------------- migrations


def test_migrations_are_versioned_and_idempotent(store: Store, db_url: str, box: SecretBox) -> None:
    assert store.schema_version() == LATEST_VERSION
    assert store.migrate() == LATEST_VERSION
    assert store.migrate() == LATEST_VERSION
    applied = raw(db_url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in applied] == [m.version for m in MIGRATIONS]
    make_user(store)
    with open_store(db_url, box) as again:  # reopening keeps the data
        assert again.schema_version() == LATEST_VERSION
        assert again.get_user("alice") is not None


def test_concurrent_migrations_from_several_nodes(db_url: str, box: SecretBox) -> None:
    stores = [Store(connect(db_url), box) for _ in range(4)]
    try:
        assert all(s.schema_version() == 0 for s in stores)
        assert race(4, lambda i: stores[i].migrate()) == [LATEST_VERSION] * 4
    finally:
        for s in stores:
            s.close()
    rows = raw(db_url, "SELECT version FROM schema_migrations")
    assert sorted(r["version"] for r in rows) == [m.version for m in MIGRATIONS]


def test_failed_migration_changes_nothing(store: Store, db_url: str) -> None:
    bad = Migration(LATEST_VERSION + 1, "broken", ("CREATE TABLE extra (a INTEGER)", "NOT SQL"))
    with closing(connect(db_url)) as backend, pytest.raises(StoreError):
        migrate(backend, T0, (*MIGRATIONS, bad))
    assert store.schema_version() == LATEST_VERSION
    with pytest.raises(StoreError):
        raw(db_url, "SELECT * FROM extra")


def test_newer_schema_is_refused(store: Store, db_url: str, box: SecretBox) -> None:
    raw(
        db_url,
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        [LATEST_VERSION + 5, "from the future", T0],
    )
    with pytest.raises(StoreError, match="upgrade bastion"):
        open_store(db_url, box)


def test_closed_store_refuses_calls(db_url: str, box: SecretBox) -> None:
    s = open_store(db_url, box)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.list_users()


# ---------------------------------------------------------------------------------- users


def test_users_crud(store: Store) -> None:
    alice = make_user(store)
    assert alice.id > 0 and alice.name == "alice" and alice.role is Role.CONTRACTOR
    assert alice.ssh_keys == ("ssh-ed25519 AAAAkey1 alice@laptop",)
    assert alice.totp_secret == "JBSWY3DPEHPK3PXP"
    assert (alice.totp_last_step, alice.locked_until, alice.disabled) == (None, None, False)
    assert alice.created_at == T0
    bob = store.add_user("bob", Role.ADMIN, [], None, T0 + 1)
    assert bob.totp_secret is None and bob.role is Role.ADMIN
    assert store.get_user("alice") == alice
    assert store.get_user_by_id(bob.id) == bob
    assert store.get_user("carol") is None and store.get_user_by_id(9999) is None
    assert [u.name for u in store.list_users()] == ["alice", "bob"]

    assert store.set_user_disabled("alice", True).disabled is True
    assert store.get_user("alice").disabled is True  # type: ignore[union-attr]
    assert store.set_user_disabled("alice", False).disabled is False

    updated = store.add_user_key("alice", "ssh-rsa AAAAkey2 second")
    assert updated.ssh_keys == ("ssh-ed25519 AAAAkey1 alice@laptop", "ssh-rsa AAAAkey2 second")
    with pytest.raises(AlreadyExists, match="already has that SSH key"):
        store.add_user_key("alice", "ssh-ed25519 AAAAkey1 other-comment")

    calls: list[Callable[[], object]] = [
        lambda: store.set_user_disabled("nobody", True),
        lambda: store.add_user_key("nobody", "ssh-ed25519 AAAA"),
        lambda: store.reset_totp("nobody", "SECRET"),
    ]
    for call in calls:
        with pytest.raises(NotFound, match="no user named 'nobody'; see 'bastion user list'"):
            call()


def test_duplicate_user_is_refused(store: Store) -> None:
    make_user(store)
    with pytest.raises(AlreadyExists, match="user 'alice' already exists"):
        make_user(store)
    assert len(store.list_users()) == 1


def test_totp_secret_is_encrypted_at_rest(store: Store, db_url: str, box: SecretBox) -> None:
    secret = "PLAINTEXTSECRETSEED234567"
    make_user(store, secret=secret)
    (row,) = raw(db_url, "SELECT totp_secret FROM users WHERE name = ?", ["alice"])
    stored = bytes(row["totp_secret"])
    assert secret.encode() not in stored and len(stored) > len(secret)
    store.reset_totp("alice", "ANOTHERSECRET")
    (row,) = raw(db_url, "SELECT totp_secret FROM users WHERE name = ?", ["alice"])
    assert b"ANOTHERSECRET" not in bytes(row["totp_secret"])
    with open_store(db_url, SecretBox(SecretBox.generate_key())) as wrong_key:
        with pytest.raises(ConfigError, match="secret key does not match"):
            wrong_key.get_user("alice")


def test_accept_totp_step_is_a_replay_guard(store: Store) -> None:
    uid = make_user(store).id
    assert store.accept_totp_step(uid, 100) is True
    assert store.accept_totp_step(uid, 100) is False  # same code again: replay
    assert store.accept_totp_step(uid, 99) is False  # older code
    assert store.get_user_by_id(uid).totp_last_step == 100  # type: ignore[union-attr]
    assert store.accept_totp_step(uid, 101) is True
    assert store.accept_totp_step(9999, 5) is False  # unknown user


def test_accept_totp_step_race_has_one_winner(db_url: str, box: SecretBox) -> None:
    nodes = [open_store(db_url, box) for _ in range(6)]
    try:
        uid = make_user(nodes[0]).id
        for step in range(1000, 1005):

            def try_step(i: int, step: int = step) -> bool:
                return nodes[i].accept_totp_step(uid, step)

            wins = race(len(nodes), try_step)
            assert wins.count(True) == 1, (step, wins)
    finally:
        for n in nodes:
            n.close()


def test_reset_totp_clears_guard_failures_and_lock(store: Store) -> None:
    uid = make_user(store).id
    store.accept_totp_step(uid, 50)
    store.record_auth_failure(uid, T0, "bad-code")
    store.lock_user(uid, T0 + 900)
    user = store.reset_totp("alice", "NEWSECRET")
    assert user.totp_secret == "NEWSECRET"
    assert (user.totp_last_step, user.locked_until) == (None, None)
    assert store.count_auth_failures(uid, 0) == 0
    assert store.accept_totp_step(uid, 10) is True  # a lower step is fine after re-enrolment


def test_auth_failures_count_in_a_window_and_lockout(store: Store) -> None:
    uid = make_user(store).id
    other = make_user(store, "bob").id
    for dt in (0, 100, 200, 300):
        store.record_auth_failure(uid, T0 + dt, "bad-code")
    store.record_auth_failure(other, T0 + 250, "bad-key")
    assert store.count_auth_failures(uid, T0 + 150) == 2
    assert store.count_auth_failures(uid, T0 + 100) == 3  # window start is inclusive
    assert store.count_auth_failures(uid, T0 + 301) == 0
    store.clear_auth_failures(uid)
    assert store.count_auth_failures(uid, 0) == 0
    assert store.count_auth_failures(other, 0) == 1
    with pytest.raises(NotFound, match="no user with id 9999"):
        store.record_auth_failure(9999, T0, "bad-code")

    store.lock_user(uid, T0 + 900)
    assert store.get_user_by_id(uid).locked_until == T0 + 900  # type: ignore[union-attr]
    store.lock_user(uid, None)
    assert store.get_user_by_id(uid).locked_until is None  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.lock_user(9999, T0)


# -------------------------------------------------------------------------------- targets


def test_targets_with_encrypted_credsets(store: Store, db_url: str) -> None:
    web = make_target(store, host_ca_keys=["ssh-ed25519 AAAAca"])
    assert (web.kind, web.host, web.port) == (TargetKind.SSH, "10.0.0.5", 22)
    assert web.logins == ("deploy", "root") and web.default_login == "deploy"
    assert web.host_keys == ("ssh-ed25519 AAAAhost",)
    assert web.host_ca_keys == ("ssh-ed25519 AAAAca",)
    assert web.database is None and web.credsets == () and web.created_at == T0
    creds = (Credset("readonly", "ro_user", "s3cret-ro"), Credset("trust", "app", None))
    db = make_target(
        store, "pg1", kind=TargetKind.POSTGRES, port=5432, logins=[], principal="",
        database="sales", credsets=creds,
    )  # fmt: skip
    assert db.credsets == creds and db.database == "sales"
    assert store.get_target("pg1") == db and store.get_target_by_id(web.id) == web
    assert [t.name for t in store.list_targets()] == ["pg1", "web1"]
    stored = raw(db_url, "SELECT password FROM credsets WHERE name = ?", ["readonly"])
    assert b"s3cret-ro" not in bytes(stored[0]["password"])

    with pytest.raises(AlreadyExists, match="target 'web1' already exists"):
        make_target(store)
    with pytest.raises(AlreadyExists, match="listed twice"):
        make_target(store, "pg2", credsets=[creds[0], creds[0]])
    assert store.get_target("pg2") is None
    with pytest.raises(StoreError, match="out of range"):
        make_target(store, "web9", port=70000)

    pinned = store.set_target_host_keys("web1", ["ssh-rsa AAAAnew"])
    assert pinned.host_keys == ("ssh-rsa AAAAnew",) and pinned.id == web.id
    with pytest.raises(NotFound, match="no target named 'nope'; see 'bastion target list'"):
        store.set_target_host_keys("nope", [])


def test_target_soft_delete_and_name_reuse(store: Store) -> None:
    user = make_user(store)
    old = make_target(store)
    active = grant_for(store, user, old)
    pending = grant_for(store, user, old, state=GrantState.PENDING)
    revoked = store.revoke_grant(grant_for(store, user, old).id, "boss", T0 + 5)

    removed = store.remove_target("web1", T0 + 10)
    assert removed.id == old.id
    assert store.get_target("web1") is None
    assert store.list_targets() == []
    assert removed == dataclasses.replace(old, removed_at=T0 + 10)
    assert store.get_target_by_id(old.id) == removed  # history keeps it
    assert store.list_targets(all=True) == [removed]
    for g in (active, pending):
        after = store.get_grant(g.id)
        assert after is not None and after.state is GrantState.REVOKED
        assert (after.revoked_by, after.revoked_at) == ("target-removed", T0 + 10)
    assert store.get_grant(revoked.id) == revoked  # already revoked: untouched
    with pytest.raises(NotFound):
        store.remove_target("web1", T0 + 11)
    with pytest.raises(NotFound, match=f"no target with id {old.id}"):
        grant_for(store, user, old)

    new = make_target(store, host="10.0.0.99")
    assert new.id != old.id and store.get_target("web1") == new
    assert store.get_target_by_id(old.id).host == "10.0.0.5"  # type: ignore[union-attr]
    with pytest.raises(AlreadyExists):
        make_target(store)


# --------------------------------------------------------------------------------- grants


def test_grants_active_at_revoke_and_states(store: Store) -> None:
    alice, bob = make_user(store), make_user(store, "bob")
    web, db = make_target(store), make_target(store, "web2")
    g1 = grant_for(store, alice, web, options=["sftp", "scp", "sftp"])
    assert g1.options == frozenset({"sftp", "scp"})
    assert (g1.user_name, g1.target_name, g1.state) == ("alice", "web1", GrantState.ACTIVE)
    assert (g1.not_before, g1.not_after, g1.created_at) == (T0, T0 + HOUR, T0)
    g2 = grant_for(store, alice, db, not_before=T0 + HOUR, not_after=T0 + 2 * HOUR)
    g3 = grant_for(store, bob, web, state=GrantState.PENDING, approved_by=None)
    assert g3.approved_by is None and g3.state is GrantState.PENDING
    assert g2.id > g1.id and store.get_grant(g2.id) == g2 and store.get_grant(999) is None

    def active(t: float, **kw: Any) -> list[int]:
        return [g.id for g in store.list_grants(active_at=t, **kw)]

    assert active(T0 - 1) == []
    assert active(T0) == [g1.id]  # not_before inclusive; pending g3 never active
    assert active(T0 + HOUR) == [g2.id]  # not_after exclusive
    assert active(T0 + 2 * HOUR) == []
    assert active(T0 + 10, user_id=bob.id) == []
    assert [g.id for g in store.list_grants(user_id=alice.id)] == [g1.id, g2.id]
    assert [g.id for g in store.list_grants(target_id=web.id)] == [g1.id, g3.id]
    assert [g.id for g in store.list_grants(user_id=alice.id, target_id=web.id)] == [g1.id]
    assert len(store.list_grants()) == 3

    revoked = store.revoke_grant(g1.id, "boss", T0 + 60)
    assert revoked.state is GrantState.REVOKED
    assert (revoked.revoked_by, revoked.revoked_at) == ("boss", T0 + 60)
    assert active(T0 + 100) == []
    with pytest.raises(StoreError, match=rf"^grant #{g1.id} is already revoked$"):
        store.revoke_grant(g1.id, "boss", T0 + 61)
    with pytest.raises(NotFound, match="no grant #999"):
        store.revoke_grant(999, "boss", T0)

    states = store.grant_states([g1.id, g2.id, g3.id, 999])
    assert states == {
        g1.id: (GrantState.REVOKED, T0 + HOUR),
        g2.id: (GrantState.ACTIVE, T0 + 2 * HOUR),
        g3.id: (GrantState.PENDING, T0 + HOUR),
    }
    assert store.grant_states([]) == {}


def test_grant_validation(store: Store) -> None:
    alice, web = make_user(store), make_target(store)
    with pytest.raises(StoreError, match="must end after it starts"):
        grant_for(store, alice, web, not_after=T0)
    with pytest.raises(NotFound, match="no user with id 999"):
        store.add_grant(
            user_id=999, target_id=web.id, login=None, credset=None, not_before=T0,
            not_after=T0 + 1, reason="", requested_by="x", approved_by=None, options=(), now=T0,
        )  # fmt: skip
    assert store.list_grants() == []


# ------------------------------------------------------------------------------- sessions


def test_sessions_start_end_and_list(store: Store) -> None:
    alice, bob = make_user(store), make_user(store, "bob")
    web, web2 = make_target(store), make_target(store, "web2")
    grant = grant_for(store, alice, web)
    first = session_rec("01S1", alice, web, grant_id=grant.id, recording="rec/01S1")
    store.start_session(first)
    store.start_session(session_rec("01S2", bob, web, started_at=T0 + 10))
    store.start_session(session_rec("01S3", alice, web2, started_at=T0 + 20, protocol="pg"))
    assert store.get_session("01S1") == first
    assert store.get_session("nope") is None
    with pytest.raises(AlreadyExists, match="session 01S1 already exists"):
        store.start_session(first)

    store.end_session(
        "01S1", ended_at=T0 + 30, reason="client-closed", bytes_in=12, bytes_out=3400,
        events=7, final_hash="ab" * 32,
    )  # fmt: skip
    ended = store.get_session("01S1")
    assert ended is not None
    assert (ended.ended_at, ended.end_reason) == (T0 + 30, "client-closed")
    assert (ended.bytes_in, ended.bytes_out, ended.events) == (12, 3400, 7)
    assert ended.final_hash == "ab" * 32 and ended.recording == "rec/01S1"  # kept
    with pytest.raises(StoreError, match="already ended"):
        store.end_session("01S1", ended_at=T0 + 31, reason="x", bytes_in=0, bytes_out=0)
    with pytest.raises(NotFound, match="no session 01S9"):
        store.end_session("01S9", ended_at=T0, reason="x", bytes_in=0, bytes_out=0)

    def ids(**kw: Any) -> list[str]:
        return [s.id for s in store.list_sessions(**kw)]

    assert ids() == ["01S3", "01S2", "01S1"]  # newest first
    assert ids(live=True) == ["01S3", "01S2"]
    assert ids(live=False) == ["01S1"]
    assert ids(user="alice") == ["01S3", "01S1"]
    assert ids(target="web1") == ["01S2", "01S1"]
    assert ids(user="alice", target="web1", live=False) == ["01S1"]
    assert ids(since=T0 + 10) == ["01S3", "01S2"]
    assert ids(limit=1) == ["01S3"]
    assert ids(user="nobody") == []


# --------------------------------------------------------------------------- certificates


def test_certificates(store: Store) -> None:
    alice, web = make_user(store), make_target(store)
    store.start_session(session_rec("01S1", alice, web))
    big = CertificateRecord(
        serial=2**63 - 1, key_id="alice@web1 01S1", principals=("web1-deploy",),
        valid_after=T0 - 60, valid_before=T0 + 300, session_id="01S1", user_id=alice.id,
        target_id=web.id, issued_at=T0,
    )  # fmt: skip
    other = CertificateRecord(7, "alice@web1", ("a", "b"), T0, T0 + 1, None, alice.id, web.id, T0)
    store.record_certificate(big)
    store.record_certificate(other)
    assert store.list_certificates(session_id="01S1") == [big]
    assert store.list_certificates() == [other, big]  # by issued_at, then serial
    assert store.list_certificates(session_id="none") == []
    with pytest.raises(AlreadyExists, match="serial 7 was already recorded"):
        store.record_certificate(other)


# ---------------------------------------------------------------------------------- audit


def test_audit_chain_append_list_verify(store: Store) -> None:
    assert store.verify_audit_chain() is None  # empty chain is intact
    e1 = store.append_audit("alice", "login.ok", None, {"method": "totp"}, at=T0)
    e2 = store.append_audit("bob", "login.failed", "bob", {"reason": "bad-code"}, at=T0 + 1)
    e3 = store.append_audit("admin", "grant.add", "alice", {"ids": (1, 2), "x": None}, at=T0 + 2)
    e4 = store.append_audit("alice", "login_x", at=T0 + 3)
    assert [e.id for e in (e1, e2, e3, e4)] == [1, 2, 3, 4]
    assert e1.prev_hash == GENESIS_HASH and e2.prev_hash == e1.hash and e4.prev_hash == e3.hash
    assert len({e1.hash, e2.hash, e3.hash}) == 3 and all(len(e.hash) == 64 for e in (e1, e2))
    assert e3.details == {"ids": [1, 2], "x": None}  # as it reads back
    assert store.list_audit() == [e1, e2, e3, e4]
    assert store.verify_audit_chain() is None

    assert store.list_audit(actor="alice") == [e1, e4]
    assert store.list_audit(action_prefix="login.") == [e1, e2]  # '_' and '.' are literal
    assert store.list_audit(action_prefix="LOGIN.") == []  # case-sensitive on both backends
    assert store.list_audit(action_prefix="login%") == []
    assert store.list_audit(since=T0 + 2) == [e3, e4]
    assert store.list_audit(limit=2) == [e3, e4]  # the most recent, oldest first
    assert store.list_audit(actor="alice", action_prefix="login", since=T0 + 1) == [e4]
    default_time = store.append_audit("sys", "tick")
    assert default_time.at > T0 and store.verify_audit_chain() is None


def test_audit_tampering_is_detected(store: Store, db_url: str) -> None:
    for i in range(5):
        store.append_audit("alice", "session.start", "web1", {"n": i}, at=T0 + i)
    raw(db_url, "UPDATE audit SET details = ? WHERE id = ?", ['{"n":99}', 3])
    assert store.verify_audit_chain() == 3
    raw(db_url, "UPDATE audit SET details = ? WHERE id = ?", ['{"n":2}', 3])  # restored
    assert store.verify_audit_chain() is None
    raw(db_url, "UPDATE audit SET at = ? WHERE id = ?", [T0 + 100, 2])
    assert store.verify_audit_chain() == 2
    raw(db_url, "UPDATE audit SET at = ? WHERE id = ?", [T0 + 1, 2])
    raw(db_url, "UPDATE audit SET details = ? WHERE id = ?", ["not json", 4])
    assert store.verify_audit_chain() == 4


def test_audit_row_deletion_is_detected(store: Store, db_url: str) -> None:
    for i in range(5):
        store.append_audit("alice", "x", None, {"n": i}, at=T0 + i)
    raw(db_url, "DELETE FROM audit WHERE id = ?", [3])
    assert store.verify_audit_chain() == 4
    raw(db_url, "DELETE FROM audit WHERE id = ?", [1])
    assert store.verify_audit_chain() == 2


def test_audit_chain_spans_verify_batches(store: Store, db_url: str) -> None:
    for i in range(1100):  # more than one verification batch
        store.append_audit("a", "b", None, {"i": i}, at=T0)
    assert store.verify_audit_chain() is None
    raw(db_url, "UPDATE audit SET actor = ? WHERE id = ?", ["mallory", 1050])
    assert store.verify_audit_chain() == 1050


def test_concurrent_audit_appends_never_fork(db_url: str, box: SecretBox) -> None:
    nodes = [open_store(db_url, box) for _ in range(4)]
    try:

        def append_many(i: int) -> None:
            for j in range(25):
                nodes[i].append_audit(f"node{i}", "tick", None, {"j": j}, at=T0 + j)

        race(len(nodes), append_many)
        events = nodes[0].list_audit(limit=10_000)
        assert [e.id for e in events] == list(range(1, 101))
        assert nodes[0].verify_audit_chain() is None
    finally:
        for n in nodes:
            n.close()


def test_one_store_is_thread_safe(store: Store) -> None:
    uid = make_user(store).id

    def mixed(i: int) -> int:
        for j in range(20):
            store.append_audit(f"t{i}", "x", at=T0)
            store.record_auth_failure(uid, T0 + j, "bad")
            store.list_users()
        return store.count_auth_failures(uid, 0)

    race(6, mixed)
    assert store.count_auth_failures(uid, 0) == 120
    assert len(store.list_audit(limit=500)) == 120
    assert store.verify_audit_chain() is None


# ------------------------------------------------------------------------- urls and links


@pytest.mark.parametrize("form", ["sqlite:///{p}", "sqlite:////{p}", "{p}"])
def test_sqlite_url_forms(tmp_path: Path, box: SecretBox, form: str) -> None:
    path = tmp_path / "s.db"
    url = form.format(p=str(path).lstrip("/") if form.startswith("sqlite:////") else path)
    with open_store(url, box) as s:
        assert s.backend == "sqlite"
        make_user(s)
    assert path.exists()
    assert path.stat().st_mode & 0o077 == 0  # secrets inside: private file


def test_bad_urls_name_the_problem(tmp_path: Path, box: SecretBox) -> None:
    with pytest.raises(StoreError, match="unsupported state URL scheme 'mysql'"):
        open_store("mysql://x/y", box)
    with pytest.raises(StoreError, match="directory does not exist"):
        open_store(f"sqlite:///{tmp_path}/missing/state.db", box)
    with pytest.raises(StoreError, match="cannot connect") as info:
        open_store("postgresql://u:hunter2@127.0.0.1:1/x?connect_timeout=2", box)
    assert "hunter2" not in str(info.value)


@pytest.mark.integration
def test_postgres_reconnects_after_the_server_drops_it(pg_url: str, box: SecretBox) -> None:
    with open_store(pg_url, box) as s:
        assert s.backend == "postgresql"
        make_user(s)
        raw(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = ? AND pid <> pg_backend_pid()",
            ["bastion"],
        )
        assert s.get_user("alice") is not None  # reconnected transparently


def test_in_memory_sqlite(box: SecretBox) -> None:
    with open_store("sqlite:///:memory:", box) as s:
        assert make_user(s).totp_secret == "JBSWY3DPEHPK3PXP"
        assert s.schema_version() == LATEST_VERSION


def test_secrets_stay_out_of_repr(store: Store) -> None:
    """A user or target put in a log line or an error message never shows its secret."""
    user = make_user(store, "reprcheck", secret="JBSWY3DPEHPK3PXP")
    target = make_target(
        store, "pgrepr", kind=TargetKind.POSTGRES, port=5432, logins=[], principal="",
        database="sales", credsets=(Credset("ro", "ro_user", "s3cret-ro"),),
    )  # fmt: skip
    assert user.totp_secret == "JBSWY3DPEHPK3PXP" and target.credsets[0].password == "s3cret-ro"
    for shown in (repr(user), str(user), repr(target), f"{target.credsets}"):
        assert "JBSWY3DPEHPK3PXP" not in shown and "s3cret-ro" not in shown
    assert "ro_user" in repr(target)


def test_recordings_moving_from_the_spool_to_s3(store: Store) -> None:
    """The uploader's row update is conditional; ``recordings pending`` is what is left."""
    u, t = make_user(store), make_target(store)
    spool = "2026/12/03/s-a.bastrec"
    for sid, rec in (("s-a", spool), ("s-b", "2026/12/03/s-b.bastrec"), ("s-c", None)):
        store.start_session(session_rec(sid, u, t, recording=rec))
    for sid in ("s-a", "s-c"):
        store.end_session(sid, ended_at=T0 + 5, reason="closed", bytes_in=1, bytes_out=2)
    # s-b is live: never pending, never moved
    assert [s.id for s in store.sessions_with_recordings_not_in("s3://")] == ["s-a"]
    s3 = "s3://recs/p/2026/12/03/s-a.bastrec"
    assert not store.move_recording("s-a", "2026/12/03/other.bastrec", s3)
    assert not store.move_recording("s-b", "2026/12/03/s-b.bastrec", "s3://recs/p/x")
    assert store.move_recording("s-a", spool, s3)
    assert not store.move_recording("s-a", spool, s3)  # done once
    row = store.get_session("s-a")
    assert row is not None and row.recording == s3
    assert store.sessions_with_recordings_not_in("s3://") == []
