"""Engagements on a real node and SQLite store, no sockets, the clock moved by hand.

The end: user disabled, live sessions ended with ``engagement-ended``, tokens and
pending requests revoked, one audit row and one notification whichever node
passes first. Reminders 7 and 1 days before, once each. The CLI's rules for
adding contractors and moving an end.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncssh
import pytest

from bastion import audit_actions as actions
from bastion import engagements
from bastion.admin_actions import Origin
from bastion.cli import main
from bastion.engagements import DAY, Refused, banner_line, refusal, reminder_due, user_state
from bastion.notify import Notification, Notifier
from bastion.service import BastionNode
from bastion.session.reasons import EndReason
from bastion.store.models import RequestKind, RequestState, Role, TokenPurpose
from tests.bastion.session.kit import T0, FakeAdapter, Kit, build_kit


@pytest.fixture()
def kit(tmp_path: Path) -> Kit:
    k = build_kit(tmp_path)
    store = k.node.store
    store.add_user("sam", Role.APPROVER, [], None, T0 - DAY)
    store.set_engagement("alice", sponsor="sam", until=T0 + 600, org="Acme")
    return k


class ListSink:
    """A notification sink that keeps what it is given (webhook and syslog have their tests)."""

    name = "list"

    def __init__(self) -> None:
        self.got: list[Notification] = []

    def wants(self, event: str) -> bool:
        return True

    def deliver(self, notification: Notification) -> None:
        self.got.append(notification)

    def close(self) -> None:
        pass


def listen(node: BastionNode) -> ListSink:
    """Give the node a real notifier whose one sink is a ListSink (start it in the loop)."""
    sink = ListSink()
    node.notifier = Notifier([sink], node.audit)
    return sink


def test_the_end_disables_ends_sessions_revokes_and_notifies_once(kit: Kit) -> None:
    store, node = kit.node.store, kit.node
    sink = listen(node)
    store.add_token(
        purpose=TokenPurpose.DB, user_id=kit.user.id, target_id=kit.target.id,
        grant_id=kit.grant.id, token_hash="h" * 64, now=T0, expires_at=T0 + 3600,
        created_from="test",
    )  # fmt: skip
    with store.audited_change("alice", actions.REQUEST_CREATED, "request", T0) as c:
        pending = c.add_request(
            user_id=kit.user.id, kind=RequestKind.ACCESS, targets=["web1"], login=None,
            options=(), duration=3600.0, start_at=None, reason="more", now=T0,
            lapses_at=T0 + 3600,
        )  # fmt: skip

    async def go() -> tuple[str, FakeAdapter]:
        node.notifier.start()
        session, adapter = await kit.live_session(FakeAdapter(auto_close=True))
        kit.clock.now = T0 + 599.9
        await engagements.engagement_pass(node)
        assert adapter.closes == [] and not store.get_user("alice").disabled  # type: ignore[union-attr]
        kit.clock.now = T0 + 600  # the end second
        await engagements.engagement_pass(node)
        await kit.settle()
        await engagements.engagement_pass(node)  # again: nothing more happens
        await asyncio.sleep(0)
        await asyncio.gather(*adapter.finishing)
        await kit.settle()
        await node.notifier.close(5.0)
        return session.id, adapter

    session_id, adapter = asyncio.run(go())
    assert adapter.closes == [
        (EndReason.ENGAGEMENT_ENDED, "your engagement ended on 2023-11-14 22:23:20 UTC")
    ]
    assert kit.row(session_id).end_reason == "engagement-ended"
    alice = store.get_user("alice")
    assert alice is not None and alice.disabled and alice.engagement_ended_at == T0 + 600
    assert user_state(alice, T0 + 600) == "ended"
    assert all(t.revoked_by == "engagement-ended" for t in store.list_tokens(user="alice"))
    request = store.get_request(pending.id)
    assert request is not None and request.state is RequestState.DROPPED
    assert "ended on" in (request.decision_reason or "")
    [row] = kit.audit(actions.ENGAGEMENT_ENDED)
    assert row.subject == "alice" and row.details["sponsor"] == "sam"
    assert row.details["tokens_revoked"] == 1 and row.details["requests_dropped"] == [pending.id]
    # ten minutes ahead was inside the reminder window: one reminder, then one end
    sent = sink.got
    assert [n.event for n in sent] == ["engagement.reminder", "engagement.ended"]
    assert sent[1].details["sponsor"] == "sam" and sent[1].details["until"] == T0 + 600


def test_only_one_node_ends_an_engagement(kit: Kit, tmp_path: Path) -> None:
    store = kit.node.store
    [alice] = store.engagements_ending(T0 + 600)
    first = engagements.end_engagement(store, alice, T0 + 600)
    second = engagements.end_engagement(store, alice, T0 + 601)  # a node with a stale list
    assert first is not None and second is None
    assert len(kit.audit(actions.ENGAGEMENT_ENDED)) == 1
    assert store.engagements_ending(T0 + 700) == []


def test_login_refusal_and_banner_name_the_date(kit: Kit) -> None:
    alice = kit.node.store.get_user("alice")
    assert alice is not None
    assert refusal(alice, T0) is None
    assert refusal(alice, T0 + 600) == (
        "the engagement of alice ended on 2023-11-14 22:23:20 UTC; "
        "ask sam (your sponsor) or an admin to extend it"
    )
    alice = kit.node.store.set_engagement("alice", until=T0 + 3 * DAY)
    assert banner_line(alice, T0) == (
        "your engagement ends on 2023-11-17 22:13:20 UTC (in 3 days); ask sam to extend it"
    )
    assert banner_line(alice, T0 - 5 * DAY) is None  # more than 7 days ahead
    assert "(in 2 hours)" in (banner_line(alice, T0 + 3 * DAY - 5400) or "")


def test_reminders_seven_and_one_day_before_once_each(kit: Kit) -> None:
    node, store = kit.node, kit.node.store
    sink = listen(node)
    store.set_engagement("alice", until=T0 + 10 * DAY)

    async def at(times: list[float]) -> list[list[tuple[str, int]]]:
        node.notifier.start()
        sent = []
        for t in times:
            kit.clock.now = t
            sent.append(await engagements.send_reminders(node))
        await node.notifier.close(5.0)
        return sent

    days = [0, 3, 3 + 60 / DAY, 8, 9, 9.5]
    assert asyncio.run(at([T0 + d * DAY for d in days])) == [
        [], [("alice", 7)], [], [], [("alice", 1)], [],
    ]  # fmt: skip
    sent = sink.got
    assert [n.details["days"] for n in sent] == [7, 1]
    assert {n.event for n in sent} == {"engagement.reminder"}
    assert sent[0].details["sponsor"] == "sam"
    assert len(kit.audit(actions.ENGAGEMENT_REMINDED)) == 2
    # a new end date forgets the reminders sent for the old one
    alice = store.set_engagement("alice", until=T0 + 20 * DAY)
    assert alice.engagement_reminded is None
    assert reminder_due(alice, T0 + 13.5 * DAY) == 7


def test_extending_is_for_the_sponsor_or_an_admin_and_audited(kit: Kit) -> None:
    store = kit.node.store
    store.add_user("root", Role.ADMIN, [], None, T0)
    store.add_user("olga", Role.APPROVER, [], None, T0)
    with pytest.raises(Refused, match="its sponsor \\(sam\\) or an admin"):
        engagements.set_engagement(store, Origin("olga"), "alice", until=T0 + DAY, now=T0)
    with pytest.raises(Refused, match="only an admin"):
        engagements.set_engagement(store, Origin("sam"), "alice", sponsor="olga", now=T0)
    engagements.set_engagement(store, Origin("sam"), "alice", until=T0 + DAY, now=T0)
    after = engagements.set_engagement(store, Origin("root"), "alice", until=T0 + 2 * DAY, now=T0)
    assert after.engagement_until == T0 + 2 * DAY
    rows = kit.audit(actions.USER_SET_ENGAGEMENT)
    assert [(r.actor, r.details["before"], r.details["until"]) for r in rows] == [
        ("sam", T0 + 600, T0 + DAY),
        ("root", T0 + DAY, T0 + 2 * DAY),
    ]


def test_an_ended_engagement_moved_later_stays_disabled(kit: Kit) -> None:
    store = kit.node.store
    [alice] = store.engagements_ending(T0 + 600)
    assert engagements.end_engagement(store, alice, T0 + 600) is not None
    after = store.set_engagement("alice", until=T0 + DAY)
    assert after.engagement_ended_at is None and after.disabled
    assert user_state(after, T0 + 700) == "disabled"


# --- the CLI ---------------------------------------------------------------------------------


def _cli(node_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main([*args, "--config", str(node_dir / "bastion.toml")])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def test_cli_contractor_needs_an_end_date_and_list_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--dir", str(tmp_path), "--listen", "127.0.0.1:2299"]) == 0
    key = tmp_path / "k.pub"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh"))
    capsys.readouterr()
    code, out = _cli(tmp_path, capsys, "user", "add", "ann", "--key", str(key))
    assert code == 2 and "needs an end date" in out
    code, out = _cli(
        tmp_path, capsys, "user", "add", "sam", "--role", "approver", "--key", str(key)
    )
    assert code == 0
    code, out = _cli(
        tmp_path, capsys, "user", "add", "ann", "--key", str(key), "--until", "2099-01-31"
    )
    assert code == 2 and "needs a sponsor" in out
    code, out = _cli(
        tmp_path, capsys, "user", "add", "ann", "--key", str(key), "--sponsor", "sam",
        "--until", "2099-01-31T18:00", "--org", "Acme",
    )  # fmt: skip
    assert code == 0 and "engagement ends 2099-01-31 18:00:00 UTC" in out
    code, out = _cli(tmp_path, capsys, "user", "set", "ann", "--until", "2099-02-28")
    assert code == 2 and "--as NAME" in out
    code, out = _cli(tmp_path, capsys, "user", "set", "ann", "--until", "2099-02-28", "--as", "ann")
    assert code != 0 and "may not change" in out
    code, out = _cli(tmp_path, capsys, "user", "set", "ann", "--until", "2099-02-28", "--as", "sam")
    assert code == 0 and "2099-02-28 00:00:00 UTC" in out
    code, out = _cli(tmp_path, capsys, "user", "list", "--json")
    users = {u["name"]: u for u in json.loads(out)}
    assert users["ann"]["sponsor"] == "sam" and users["ann"]["org"] == "Acme"
    assert users["ann"]["state"] == "active" and users["ann"]["engagement_until"] == 4075920000.0
    assert users["sam"]["engagement_until"] is None
    code, out = _cli(tmp_path, capsys, "audit", "--action", "user.set-engagement", "--json")
    [row] = json.loads(out)
    assert row["actor"] == "sam" and row["details"]["via"] == "cli"
    config = tmp_path / "bastion.toml"
    config.write_text(
        config.read_text().replace("require_end_date = true", "require_end_date = false")
    )
    code, out = _cli(tmp_path, capsys, "user", "add", "bo", "--key", str(key))
    assert code == 0
