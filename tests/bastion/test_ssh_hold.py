"""``hold``: an exec command waits for approval in the requests inbox (stock ssh, real sshd).

A rule ``--action hold`` stops ``touch`` before anything reaches the target. The
contractor's ``ssh`` stays connected, told which request holds it and who can
approve; a second user approves over SSH (``ssh bob@bastion approve ID``) or the
CLI (``bastion request approve ID --as NAME``), and only then does the command
run on the real target. Another is denied by an approver, another lapses after
``[policy] hold_timeout`` (shortened by SIGHUP), and neither ever ran: their
files do not exist. Every outcome is audited with the approver or the timeout,
and approvers hear of held commands through a real webhook receiver.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.store.models import AccessRequest, RequestKind, RequestState, Role
from tests.bastion.notify.receivers import HttpReceiver, http_receiver
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@dataclass
class HoldNode:
    harness: BastionHarness
    receiver: HttpReceiver


@pytest.fixture(scope="module")
def hn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HoldNode]:
    directory = Path(tmp_path_factory.mktemp("hold"))
    with http_receiver() as receiver:
        overrides = {
            '# [[notify.webhook]]\n# url = "https://hooks.example.com/bastion"': (
                f'[[notify.webhook]]\nurl = "{receiver.url}"\nevents = ["request.*"]'
            ),
        }
        h = make_harness(directory, overrides=overrides)
        try:
            r = h.cli("policy", "add", "hold-touch", "--command", "touch", "--action", "hold")
            assert r.returncode == 0, r.stderr
            yield HoldNode(h, receiver)
        finally:
            h.close()


def _contractor(h: BastionHarness) -> Contractor:
    c = h.contractor("hc")
    h.grant(c, "web1")
    return c


def _held_request(h: BastionHarness, who: Contractor) -> AccessRequest:
    def pending() -> AccessRequest | None:
        for r in h.store.list_requests(user_id=who.user.id, state=RequestState.PENDING):
            if r.kind is RequestKind.COMMAND:
                return r
        return None

    found = wait_until(pending, 30, f"a held command of {who.name}")
    assert found is not None
    return found


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def test_held_exec_runs_once_approved_over_ssh(hn: HoldNode, tmp_path: Path) -> None:
    h = hn.harness
    alice, bob = _contractor(h), h.contractor("hb", role=Role.APPROVER)
    made = tmp_path / "made-by-held-touch"  # the sshd target runs on this machine
    proc = alice.ssh_stream("web1", f"touch {made} && echo ran-42")
    try:
        request = _held_request(h, alice)
        assert request.held is not None and request.held.text == f"touch {made} && echo ran-42"
        assert request.held.rule == "hold-touch" and request.targets == ("web1",)
        assert not made.exists()  # nothing reached the target while held
        assert proc.poll() is None  # the contractor is still connected, waiting
        r = alice.ssh("approve", str(request.id))  # never their own
        assert r.returncode != 0 and b"nobody approves their own" in r.stderr
        r = bob.ssh("approve", str(request.id))
        assert r.returncode == 0, r.stderr
        assert f"request #{request.id} of {alice.name} approved" in r.stdout.decode()
        status, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status == 0, err
    assert out.strip() == "ran-42"
    assert made.exists()
    assert re.search(
        rf"held for approval \(rule hold-touch\): request #{request.id}; can approve: .*{bob.name}",
        err,
    ), err
    assert f"request #{request.id} approved by {bob.name}: running it now" in err
    (hold,) = [a for a in h.wait_audit(alice.name, "policy.hold") if a.action == "policy.hold"]
    (approved,) = h.wait_audit(alice.name, "policy.hold-approved")
    assert approved.details["approver"] == bob.name and approved.details["request"] == request.id
    assert hold.details["session"] == approved.details["session"]
    (decided,) = h.wait_audit(bob.name, "request.approved")
    assert decided.details["request"] == request.id

    def created() -> list[dict[str, object]]:
        bodies = [json.loads(g.body) for g in hn.receiver.accepted()]
        return [
            b for b in bodies if b["event"] == "request.created" and b["request_id"] == request.id
        ]

    (body,) = wait_until(created, 15, "the webhook of the held command")
    assert f"touch {made}" in json.dumps(body) and bob.name in json.dumps(body)


def test_held_exec_denied_by_an_approver_never_runs(hn: HoldNode, tmp_path: Path) -> None:
    h = hn.harness
    alice, bob = _contractor(h), h.contractor("hd", role=Role.APPROVER)
    never = tmp_path / "denied-touch"
    proc = alice.ssh_stream("web1", f"touch {never}")
    try:
        request = _held_request(h, alice)
        r = bob.ssh("deny", str(request.id), "--reason", "not on a Friday")
        assert r.returncode == 0, r.stderr
        status, _out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status == 1 and f"denied by {bob.name}: not on a Friday" in err, err
    assert not never.exists()
    (denied,) = h.wait_audit(alice.name, "policy.hold-denied")
    assert denied.details["outcome"] == "denied" and denied.details["approver"] == bob.name


def test_held_exec_approved_with_the_cli(hn: HoldNode, tmp_path: Path) -> None:
    h = hn.harness
    alice, carol = _contractor(h), h.contractor("hcli", role=Role.APPROVER)
    made = tmp_path / "cli-approved"
    proc = alice.ssh_stream("web1", f"touch {made}")
    try:
        request = _held_request(h, alice)
        shown = h.cli("request", "show", str(request.id))
        assert shown.returncode == 0, shown.stderr
        assert f"held       command 'touch {made}'" in shown.stdout
        assert request.held is not None and request.held.session_id in shown.stdout
        listed = h.cli("request", "list", "--pending")
        assert f"held command 'touch {made}'" in listed.stdout
        r = h.cli("request", "approve", str(request.id), "--as", alice.name)
        assert r.returncode != 0 and "nobody approves their own" in r.stderr
        r = h.cli("request", "approve", str(request.id), "--as", carol.name)
        assert r.returncode == 0, r.stderr
        assert f"request #{request.id} approved by {carol.name}" in r.stdout
        status, _out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status == 0, err
    assert made.exists()
    (approved,) = h.wait_audit(alice.name, "policy.hold-approved")
    assert approved.details["approver"] == carol.name
    (decided,) = h.wait_audit(carol.name, "request.approved")
    assert decided.details["via"] == "cli"


def test_held_exec_denied_on_timeout_never_runs(hn: HoldNode, tmp_path: Path) -> None:
    h = hn.harness
    assert h.proc is not None
    text = h.config.path.read_text()
    assert 'hold_timeout = "5m"' in text
    h.config.path.write_text(text.replace('hold_timeout = "5m"', 'hold_timeout = "3s"'))
    reloads = len(h.audit("node", "node.reload"))
    h.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(h.audit("node", "node.reload")) > reloads, 15, "the reload")
    alice = _contractor(h)
    h.contractor("ht", role=Role.APPROVER)  # someone could approve; nobody does
    never = tmp_path / "lapsed-touch"
    r = alice.ssh(f"touch {never}", target="web1")
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, err
    m = re.search(r"denied: nobody approved request #(\d+) within 3s", err)
    assert m, err
    assert not never.exists()
    found = h.store.get_request(int(m.group(1)))
    assert found is not None and found.state is RequestState.LAPSED
    (denied,) = h.wait_audit(alice.name, "policy.hold-denied")
    assert denied.details["outcome"] == "lapsed" and denied.details["approver"] is None
    assert h.wait_audit("bastion", "request.lapsed")
