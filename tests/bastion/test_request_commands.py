"""The request built-ins' words and answers, without SSH (``bastion.ssh.request_commands``)."""

from __future__ import annotations

import pytest

from bastion.ssh.request_commands import (
    Approve,
    CommandError,
    Deny,
    DropGrant,
    ExtendRequest,
    ListRequests,
    NewRequest,
    approve_text,
    created_text,
    decision_text,
    parse,
    split_words,
)
from bastion.store.models import AccessRequest, Approval, RequestKind, RequestState

NOW = 1_700_000_000.0


def test_request_with_every_option() -> None:
    cmd = parse(
        "request",
        "web1,web2 --for 2h --reason fix the nginx --login root --allow sftp,scp"
        " --start +1h --wait",
        NOW,
    )
    assert cmd == NewRequest(
        targets=("web1", "web2"),
        duration=7200.0,
        reason="fix the nginx",
        login="root",
        options=("sftp", "scp"),
        start_at=NOW + 3600,
        wait=True,
    )


def test_reason_runs_to_the_next_option_and_survives_unbalanced_quotes() -> None:
    cmd = parse("request", "web1 --reason it's broken --for 1h", NOW)
    assert isinstance(cmd, NewRequest)
    assert (cmd.reason, cmd.duration) == ("it's broken", 3600.0)
    assert split_words("--reason 'a b' c") == ["--reason", "a b", "c"]
    assert parse("deny", "#4 --reason=not now", NOW) == Deny(4, "not now")


def test_extend_break_glass_list_drop_approve() -> None:
    assert parse("request", "--extend 5 --for 30m --reason more", NOW) == ExtendRequest(
        5, 1800.0, "more"
    )
    bg = parse("request", "web1 --break-glass --reason fire", NOW)
    assert bg == NewRequest(("web1",), None, "fire", break_glass=True)
    assert parse("requests", "", NOW) == ListRequests(False)
    assert parse("requests", "--pending", NOW) == ListRequests(True)
    assert parse("drop", "#7", NOW) == DropGrant(7)
    assert parse("approve", "3 --for 1h --targets web1 --allow none --reason ok", NOW) == Approve(
        3, 3600.0, ("web1",), (), "ok"
    )
    assert parse("approve", "3", NOW) == Approve(3)


@pytest.mark.parametrize(
    ("command", "text", "says"),
    [
        ("request", "web1 --for 2h", "--reason"),
        ("request", "web1 --reason x", "--for DURATION"),
        ("request", "web1 --for soon --reason x", "cannot read duration"),
        ("request", "web1 --for 1h --reason x --bogus", "no option --bogus"),
        ("request", "web1 --for 1h --for 2h --reason x", "given twice"),
        ("request", "web1 web2 --for 1h --reason x", "takes one TARGET"),
        ("request", "web1;rm --for 1h --reason x", "not a target name"),
        ("request", "web1 --break-glass --wait --reason x", "no --wait"),
        ("request", "--extend 5 web1 --for 1h --reason x", "takes only GRANT_ID"),
        ("requests", "mine", "takes no arguments"),
        ("drop", "", "takes one grant id"),
        ("approve", "x", "not a request number"),
        ("deny", "3", "needs --reason"),
    ],
)
def test_usage_errors_exit_2_and_say_what(command: str, text: str, says: str) -> None:
    with pytest.raises(CommandError) as e:
        parse(command, text, NOW)
    assert e.value.status == 2
    assert says in str(e.value)
    assert "usage:" in str(e.value)


def _request(state: RequestState, **kw: object) -> AccessRequest:
    base: dict[str, object] = dict(
        id=12, user_id=1, user_name="alice", kind=RequestKind.ACCESS, targets=("web1",),
        login=None, options=frozenset(), duration=7200.0, start_at=None, reason="fix",
        state=state, created_at=NOW, lapses_at=NOW + 3600,
    )  # fmt: skip
    base.update(kw)
    return AccessRequest(**base)  # type: ignore[arg-type]


def test_pending_text_names_approvers_and_lapse() -> None:
    text = created_text(_request(RequestState.PENDING), [], ["bob", "carol"], 2)
    assert text.startswith("request #12 pending: web1 for 2h00m\n")
    assert "can approve: bob, carol (2 distinct approvals needed)" in text
    assert "lapses at 2023-11-14 23:13:20 UTC" in text
    assert "nobody can approve" in created_text(_request(RequestState.PENDING), [], [], 1)


def test_decisions_and_partial_approval() -> None:
    denied = _request(RequestState.DENIED, decided_by="bob", decision_reason="not today")
    assert decision_text(denied, []) == "request #12 denied by bob: not today\n"
    lapsed = _request(RequestState.LAPSED, decision_reason="nobody decided in time")
    assert decision_text(lapsed, []) == "request #12 lapsed: nobody decided in time\n"
    one = Approval("bob", NOW, None, None, None, None)
    partial = _request(RequestState.PENDING, approvals=(one,))
    text = approve_text(partial, [], ["bob", "carol"], 1)
    assert "needs 1 more distinct approval(s) (from: carol)" in text
