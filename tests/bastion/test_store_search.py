"""Session signature and command search in the state store, on both backends."""

from __future__ import annotations

from bastion.store import Store
from bastion.store.models import SessionRecord
from tests.bastion.test_store import T0, box, db_url, make_target, make_user, store

__all__ = ["box", "db_url", "store"]


def _session(store: Store, sid: str, user: str, target: str) -> None:
    u = store.get_user(user) or make_user(store, user)
    t = store.get_target(target) or make_target(store, target)
    store.start_session(
        SessionRecord(
            id=sid,
            user_id=u.id,
            user_name=u.name,
            target_id=t.id,
            target_name=t.name,
            grant_id=None,
            node="n",
            protocol="ssh",
            login="root",
            client_addr="c",
            started_at=T0,
        )
    )


def test_final_signature_kept(store: Store) -> None:
    _session(store, "01SESSIONAAAAAAAAAAAAAAAAA", "alice", "web1")
    store.end_session(
        "01SESSIONAAAAAAAAAAAAAAAAA",
        ended_at=T0 + 5,
        reason="exit",
        bytes_in=1,
        bytes_out=2,
        events=3,
        final_hash="ab" * 32,
        final_signature="cd" * 64,
        recording="2026/01/01/x.bastrec",
    )
    s = store.get_session("01SESSIONAAAAAAAAAAAAAAAAA")
    assert s is not None
    assert (s.final_hash, s.final_signature, s.events) == ("ab" * 32, "cd" * 64, 3)


def test_command_search(store: Store) -> None:
    _session(store, "01SESSIONAAAAAAAAAAAAAAAAA", "alice", "web1")
    _session(store, "01SESSIONBBBBBBBBBBBBBBBBB", "bob", "web2")
    store.add_session_commands(
        "01SESSIONAAAAAAAAAAAAAAAAA", [(T0 + 1, "sudo systemctl restart nginx"), (T0 + 2, "ls -la")]
    )
    store.add_session_commands("01SESSIONBBBBBBBBBBBBBBBBB", [(T0 + 3, "SUDO rm -rf /tmp/100%_x")])
    hits = store.search_commands("sudo")
    assert [(h.session_id, h.text) for h in hits] == [
        ("01SESSIONBBBBBBBBBBBBBBBBB", "SUDO rm -rf /tmp/100%_x"),
        ("01SESSIONAAAAAAAAAAAAAAAAA", "sudo systemctl restart nginx"),
    ]
    assert [h.user_name for h in store.search_commands("sudo", user="alice")] == ["alice"]
    assert [h.target_name for h in store.search_commands("sudo", target="web2")] == ["web2"]
    # LIKE wildcards in the query are literal
    assert [h.text for h in store.search_commands("100%_")] == ["SUDO rm -rf /tmp/100%_x"]
    assert store.search_commands("0%x") == []
    assert store.search_commands("nothing-like-this") == []


def test_termination_requests(store: Store) -> None:
    import pytest

    from bastion.errors import NotFound, StoreError

    _session(store, "01SESSIONAAAAAAAAAAAAAAAAA", "alice", "web1")
    _session(store, "01SESSIONBBBBBBBBBBBBBBBBB", "alice", "web1")
    assert store.termination_requests(["01SESSIONAAAAAAAAAAAAAAAAA"]) == {}
    store.request_termination("01SESSIONAAAAAAAAAAAAAAAAA", "bob", "policy", T0 + 1)
    assert store.termination_requests(
        ["01SESSIONAAAAAAAAAAAAAAAAA", "01SESSIONBBBBBBBBBBBBBBBBB"]
    ) == {"01SESSIONAAAAAAAAAAAAAAAAA": ("bob", "policy")}
    store.end_session(
        "01SESSIONBBBBBBBBBBBBBBBBB", ended_at=T0 + 2, reason="exit", bytes_in=0, bytes_out=0
    )
    with pytest.raises(StoreError, match="already ended"):
        store.request_termination("01SESSIONBBBBBBBBBBBBBBBBB", "bob", "x", T0 + 3)
    with pytest.raises(NotFound):
        store.request_termination("01SESSIONCCCCCCCCCCCCCCCCC", "bob", "x", T0 + 3)
