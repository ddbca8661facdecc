"""Admin actions: the change and its audit row commit together, on both backends.

The ``store`` fixture runs each test on SQLite and on a real PostgreSQL (marked
``integration``). A trigger that refuses audit inserts stands in for an audit
write that fails after the change: the change must be rolled back with it.
"""

from __future__ import annotations

import getpass
import os

import pytest

from bastion import admin_actions
from bastion.admin_actions import Origin
from bastion.errors import NotFound, StoreError
from bastion.store import Store
from bastion.store.models import GrantState, TokenPurpose
from tests.bastion.test_store import (  # noqa: F401 - fixtures
    HOUR,
    T0,
    box,
    db_url,
    grant_for,
    make_target,
    make_user,
    raw,
    session_rec,
    store,
)

SID = "01SESSIONAAAAAAAAAAAAAAAAA"
SID2 = "01SESSIONBBBBBBBBBBBBBBBBB"
CONTROL = Origin.control("adm", "node-a")

_REFUSE_AUDIT = {
    "sqlite": [
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit"
        " BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit"
        " FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    ],
}


def refuse_audit(db_url: str) -> None:  # noqa: F811 - the fixture's value
    for sql in _REFUSE_AUDIT["postgresql" if db_url.startswith("postgresql") else "sqlite"]:
        raw(db_url, sql)


def test_cli_and_control_write_the_same_action(store: Store) -> None:  # noqa: F811
    alice = make_user(store)
    web1 = make_target(store)
    store.start_session(session_rec(SID, alice, web1))
    store.start_session(session_rec(SID2, alice, web1))
    admin_actions.terminate_session(store, Origin.cli(), SID, "incident 7", T0 + 1)
    admin_actions.terminate_session(store, CONTROL, SID2, "incident 8", T0 + 2)
    cli_row, control_row = store.list_audit(action_prefix="session.")
    assert cli_row.action == control_row.action == "session.terminate-requested"
    assert (cli_row.subject, control_row.subject) == (SID, SID2)
    assert cli_row.details == {
        "via": "cli", "uid": os.getuid(), "login": getpass.getuser(), "reason": "incident 7",
    }  # fmt: skip
    assert control_row.actor == "adm"
    assert control_row.details == {
        "via": "control", "admin": "adm", "node": "node-a", "reason": "incident 8",
    }  # fmt: skip
    assert store.termination_requests([SID, SID2]) == {
        SID: (Origin.cli().actor, "incident 7"),
        SID2: ("adm", "incident 8"),
    }


def test_lock_ends_sessions_revokes_tokens_and_audits_once(store: Store) -> None:  # noqa: F811
    alice = make_user(store)
    web1 = make_target(store)
    store.start_session(session_rec(SID, alice, web1))
    store.start_session(session_rec(SID2, alice, web1))
    store.end_session(SID2, ended_at=T0 + 1, reason="client-closed", bytes_in=0, bytes_out=0)
    store.add_token(
        purpose=TokenPurpose.DB, user_id=alice.id, token_hash="h1", expires_at=T0 + HOUR,
        now=T0, created_from="test",
    )  # fmt: skip
    done = admin_actions.lock_user(store, CONTROL, "alice", T0 + HOUR, "leaked key", T0 + 2)
    assert done.sessions == (SID,) and done.tokens_revoked == 1
    assert done.message == "user alice locked: leaked key"
    assert store.termination_requests([SID, SID2]) == {SID: ("adm", done.message)}
    user = store.get_user("alice")
    assert user is not None and user.locked_until == T0 + HOUR
    (row,) = store.list_audit(action_prefix="user.")
    assert (row.action, row.subject) == ("user.lock", "alice")
    assert row.details["sessions"] == [SID] and row.details["tokens_revoked"] == 1
    assert row.details["reason"] == "leaked key" and row.details["via"] == "control"

    store.record_auth_failure(alice.id, T0 + 3, "wrong-code")
    admin_actions.unlock_user(store, Origin.cli(), "alice", T0 + 4)
    user = store.get_user("alice")
    assert user is not None and user.locked_until is None
    assert store.count_auth_failures(alice.id, T0) == 0
    assert [r.action for r in store.list_audit(action_prefix="user.")] == [
        "user.lock", "user.unlock",
    ]  # fmt: skip


def test_a_refused_change_writes_no_audit_row(store: Store) -> None:  # noqa: F811
    alice = make_user(store)
    web1 = make_target(store)
    grant = grant_for(store, alice, web1)
    store.start_session(session_rec(SID, alice, web1))
    store.end_session(SID, ended_at=T0 + 1, reason="client-closed", bytes_in=0, bytes_out=0)
    with pytest.raises(StoreError, match="already ended"):
        admin_actions.terminate_session(store, CONTROL, SID, "late", T0 + 2)
    with pytest.raises(NotFound):
        admin_actions.lock_user(store, CONTROL, "ghost", T0 + HOUR, None, T0 + 2)
    admin_actions.revoke_grant(store, CONTROL, grant.id, T0 + 3)
    with pytest.raises(StoreError, match="already revoked"):
        admin_actions.revoke_grant(store, Origin.cli(), grant.id, T0 + 4)
    (row,) = store.list_audit()
    assert (row.action, row.subject) == ("grant.revoke", f"grant #{grant.id}")
    assert row.details["user"] == "alice" and row.details["target"] == "web1"
    assert store.verify_audit_chain() is None


def test_a_failed_audit_write_undoes_the_change(store: Store, db_url: str) -> None:  # noqa: F811
    alice = make_user(store)
    web1 = make_target(store)
    grant = grant_for(store, alice, web1)
    store.start_session(session_rec(SID, alice, web1))
    refuse_audit(db_url)
    with pytest.raises(StoreError, match="audit refused"):
        admin_actions.lock_user(store, CONTROL, "alice", T0 + HOUR, None, T0 + 1)
    with pytest.raises(StoreError, match="audit refused"):
        admin_actions.terminate_session(store, CONTROL, SID, "x", T0 + 1)
    with pytest.raises(StoreError, match="audit refused"):
        admin_actions.revoke_grant(store, CONTROL, grant.id, T0 + 1)
    user = store.get_user("alice")
    assert user is not None and user.locked_until is None
    assert store.termination_requests([SID]) == {}
    stored = store.get_grant(grant.id)
    assert stored is not None and stored.state is not GrantState.REVOKED
    assert store.list_audit() == []
