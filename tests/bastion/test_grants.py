"""Authorisation policy over a user's grants for one target (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from bastion.errors import AccessDenied
from bastion.grants import authorize, is_usable, parse_options, require_option
from bastion.store.models import Grant, GrantState

NOW = 2_000_000_000.0


def grant(
    gid: int = 1,
    login: str = "root",
    start: float = NOW - 60,
    end: float = NOW + 3600,
    state: GrantState = GrantState.ACTIVE,
    options: frozenset[str] = frozenset(),
) -> Grant:
    return Grant(
        id=gid,
        user_id=1,
        user_name="alice",
        target_id=1,
        target_name="web1",
        login=login,
        credset=None,
        not_before=start,
        not_after=end,
        reason="",
        requested_by="a",
        approved_by="a",
        state=state,
        options=options,
        created_at=NOW - 100,
    )


def test_no_grants() -> None:
    with pytest.raises(AccessDenied, match="no grant for web1"):
        authorize([], "web1", None, NOW)


def test_active_grant_chosen() -> None:
    assert authorize([grant()], "web1", None, NOW).id == 1


def test_expired_not_started_revoked_pending_messages() -> None:
    with pytest.raises(AccessDenied, match=r"grant #1 expired at 2033-05-18"):
        authorize([grant(end=NOW - 1, start=NOW - 10)], "web1", None, NOW)
    with pytest.raises(AccessDenied, match=r"grant #1 starts at"):
        authorize([grant(start=NOW + 10)], "web1", None, NOW)
    revoked = dataclasses.replace(
        grant(state=GrantState.REVOKED), revoked_at=NOW - 5, revoked_by="bob"
    )
    with pytest.raises(AccessDenied, match=r"grant #1 was revoked at .* by bob"):
        authorize([revoked], "web1", None, NOW)
    with pytest.raises(AccessDenied, match="pending approval"):
        authorize([grant(state=GrantState.PENDING)], "web1", None, NOW)


def test_boundaries() -> None:
    g = grant(start=NOW, end=NOW + 10)
    assert is_usable(g, NOW)
    assert not is_usable(g, NOW + 10)
    assert not is_usable(g, NOW - 0.001)


def test_login_must_match() -> None:
    with pytest.raises(AccessDenied, match="as login 'admin'"):
        authorize([grant(login="deploy")], "web1", "admin", NOW)
    assert authorize([grant(login="deploy")], "web1", "deploy", NOW).login == "deploy"


def test_latest_ending_usable_grant_wins_and_default_login_preferred() -> None:
    a, b = grant(1, end=NOW + 100), grant(2, end=NOW + 500)
    assert authorize([a, b], "web1", None, NOW).id == 2
    c, d = grant(3, login="root", end=NOW + 900), grant(4, login="deploy", end=NOW + 100)
    assert authorize([c, d], "web1", None, NOW, default_login="deploy").id == 4


def test_usable_wins_over_newer_unusable() -> None:
    old_ok = grant(1, end=NOW + 100)
    future = grant(2, start=NOW + 50, end=NOW + 9000)
    assert authorize([old_ok, future], "web1", None, NOW).id == 1


def test_require_option() -> None:
    g = grant(options=frozenset({"sftp"}))
    require_option(g, "sftp")
    require_option(g, "sftp", "scp")
    with pytest.raises(AccessDenied, match="does not allow scp; .*--allow scp"):
        require_option(g, "scp")
    with pytest.raises(ValueError):
        require_option(g, "teleport")


def test_parse_options() -> None:
    assert parse_options("scp, sftp") == {"scp", "sftp"}
    assert parse_options("") == frozenset()
    with pytest.raises(ValueError, match="unknown grant option"):
        parse_options("scp,x11")
