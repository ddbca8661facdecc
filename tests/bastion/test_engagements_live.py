"""Engagement end on a real node: a live PTY session cut at the end second, stock ssh.

The node runs on real time, so the end is set a few seconds ahead. A real webhook
receiver (``http.server``) gets ``engagement.ended``; a contractor ending in three
days sees the reminder in the login banner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from bastion.engagements import DAY
from bastion.grants import format_time
from bastion.store.models import Role
from tests.bastion.notify.receivers import HttpReceiver, http_receiver
from tests.peers.bastion_node import BastionHarness, make_harness
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@dataclass
class EngagedNode:
    harness: BastionHarness
    receiver: HttpReceiver


@pytest.fixture(scope="module")
def en(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngagedNode]:
    directory = Path(tmp_path_factory.mktemp("engaged"))
    with http_receiver() as receiver:
        overrides = {
            '# [[notify.webhook]]\n# url = "https://hooks.example.com/bastion"': (
                f'[[notify.webhook]]\nurl = "{receiver.url}"\nevents = ["engagement.*"]'
            ),
        }
        harness = make_harness(directory, overrides=overrides)
        try:
            yield EngagedNode(harness, receiver)
        finally:
            harness.close()


def _events(rx: HttpReceiver, event: str, user: str) -> list[dict[str, object]]:
    bodies = [json.loads(got.body) for got in rx.accepted()]
    return [b for b in bodies if b["event"] == event and b.get("details", b).get("user") == user]


def test_the_end_cuts_a_live_session_and_refuses_the_next_login(en: EngagedNode) -> None:
    bastion = en.harness
    sponsor = bastion.contractor("sam", role=Role.APPROVER)
    c = bastion.contractor()
    bastion.grant(c, "web1")
    until = float(int(time.time()) + 8)
    bastion.store.set_engagement(c.name, sponsor=sponsor.name, until=until)
    child = c.ssh_pty("web1", timeout=20)
    try:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        child.expect(f"your engagement ended on {format_time(until)}", timeout=20)
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    [row] = wait_until(
        lambda: [s for s in bastion.store.list_sessions(user=c.name) if s.ended_at],
        10, "the session row to be closed",
    )  # fmt: skip
    assert row.end_reason == "engagement-ended"
    assert row.ended_at is not None and until <= row.ended_at < until + 3
    refused = c.ssh("true", target="web1")
    assert refused.returncode == 255
    assert f"ended on {format_time(until)}".encode() in refused.stderr
    [ended] = wait_until(
        lambda: _events(en.receiver, "engagement.ended", c.name), 15, "engagement.ended"
    )
    assert json.dumps(ended).count(sponsor.name) >= 1
    user = bastion.store.get_user(c.name)
    assert user is not None and user.disabled


def test_the_reminder_is_in_the_login_banner(en: EngagedNode) -> None:
    bastion = en.harness
    sponsor = bastion.contractor("sam", role=Role.APPROVER)
    c = bastion.contractor()
    bastion.grant(c, "web1")
    bastion.store.set_engagement(c.name, sponsor=sponsor.name, until=time.time() + 3 * DAY - 60)
    r = c.ssh("echo", "in", target="web1")
    assert r.returncode == 0, r.stderr
    assert b"your engagement ends on " in r.stderr
    assert f"(in 3 days); ask {sponsor.name} to extend it".encode() in r.stderr
