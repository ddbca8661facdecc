"""Just-in-time access over SSH: stock ``ssh`` clients request, approve, deny, extend, drop.

A real node (``bastion serve``), real OpenSSH sshd targets and real clients;
approvers prove themselves with their own key and TOTP like anyone else. Most
tests share the session's node; ``rq`` is a node of this module's own with a
short ``pending_ttl``, an auto-approve rule for web2 and two webhooks: one a
real HTTP receiver in this process (signed), one a closed port.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from bastion.openssh_target import free_port
from bastion.store.models import Grant, RequestState, Role
from tests.bastion.notify.receivers import HttpReceiver, http_receiver
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PENDING = re.compile(rb"request #(\d+) pending")
SECRET = b"webhook-test-secret"


def _ok(r: subprocess.CompletedProcess[bytes]) -> str:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout.decode()


def _refused(r: subprocess.CompletedProcess[bytes], says: str, status: int = 1) -> None:
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    assert says in r.stderr.decode(), r.stderr


def _pending_id(r: subprocess.CompletedProcess[bytes]) -> int:
    m = PENDING.search(r.stdout)
    assert m is not None and r.returncode == 0, (r.stdout, r.stderr)
    return int(m.group(1))


def _grants(h: BastionHarness, request_id: int) -> list[Grant]:
    r = h.store.get_request(request_id)
    assert r is not None
    return [g for i in r.grant_ids if (g := h.store.get_grant(i)) is not None]


def _wait_spawn(c: Contractor, *words: str) -> pexpect.spawn[bytes]:
    """``ssh alice@bastion request ... --wait`` without a remote terminal, read as it runs."""
    args = [*c.ssh_args(), "-T", "-p", str(c.harness.port), f"{c.name}@127.0.0.1", *words]
    return pexpect.spawn("ssh", args, env=c.ssh_env(), timeout=30)


def _expect_pending(child: pexpect.spawn[bytes]) -> int:
    """The id in ``request #ID pending`` as the client prints it."""
    child.expect(PENDING)
    m = child.match
    assert isinstance(m, re.Match)
    return int(m.group(1))


def _works(c: Contractor, target: str) -> bool:
    r = c.ssh("echo", "in-$((6*7))", target=target)
    return r.returncode == 0 and b"in-42" in r.stdout


# --- a node of this module's own ------------------------------------------------------------


@dataclass
class RequestsNode:
    """A node with a 3 s pending_ttl, web2 auto-approved, a live and a dead webhook."""

    harness: BastionHarness
    receiver: HttpReceiver


@pytest.fixture(scope="module")
def rq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RequestsNode]:
    directory = Path(tmp_path_factory.mktemp("rq"))
    secret = directory / "webhook.secret"
    secret.write_bytes(SECRET + b"\n")
    dead = f"http://127.0.0.1:{free_port()}/hook"
    with http_receiver() as receiver:
        overrides = {
            'pending_ttl = "1h"': 'pending_ttl = "3s"',
            '# [[requests.auto_approve]]\n# targets = ["staging-*"]': (
                '[[requests.auto_approve]]\ntargets = ["web2"]'
            ),
            '# [[notify.webhook]]\n# url = "https://hooks.example.com/bastion"': (
                f'[[notify.webhook]]\nurl = "{receiver.url}"\nsecret_file = "{secret}"\n'
                f'events = ["request.*"]\n[[notify.webhook]]\nurl = "{dead}"'
            ),
        }
        harness = make_harness(directory, overrides=overrides)
        try:
            # Starts the dead webhook's retries now; answered at once all the same.
            starter = harness.contractor("rqstart")
            _pending_id(starter.ssh("request", "web1", "--for", "1h", "--reason", "first"))
            yield RequestsNode(harness, receiver)
        finally:
            harness.close()


def _bodies(rx: HttpReceiver, event: str, request_id: int) -> list[dict[str, object]]:
    found = []
    for got in rx.accepted():
        body = json.loads(got.body)
        if body["event"] == event and body.get("request_id") == request_id:
            mac = hmac.new(SECRET, got.body, hashlib.sha256).hexdigest()
            assert got.headers["x-bastion-signature"] == f"sha256={mac}"
            found.append(body)
    return found


def test_webhooks_signed_for_created_and_approved_despite_a_dead_receiver(
    rq: RequestsNode,
) -> None:
    h, rx = rq.harness, rq.receiver
    alice = h.contractor("wha")
    bob = h.contractor("whb", role=Role.APPROVER)
    # the dead webhook is retrying in the background; the request is answered regardless
    r = alice.ssh("request", "web1", "--for", "1h", "--reason", "hook", "me")
    request_id = _pending_id(r)
    [created] = wait_until(
        lambda: _bodies(rx, "request.created", request_id), 15, "request.created"
    )
    assert created["requester"] == alice.name and created["targets"] == ["web1"]
    assert created["reason"] == "hook me"
    _ok(bob.ssh("approve", str(request_id), "--reason", "fine"))
    [approved] = wait_until(
        lambda: _bodies(rx, "request.approved", request_id), 15, "request.approved"
    )
    assert approved["decision"] == "approved" and approved["decided_by"] == bob.name
    assert approved["requester"] == alice.name


def test_auto_approve_rule_grants_at_once(rq: RequestsNode) -> None:
    h = rq.harness
    alice = h.contractor("aua")
    out = _ok(alice.ssh("request", "web2", "--for", "30m", "--reason", "routine"))
    m = re.search(r"request #(\d+) approved at once", out)
    assert m is not None, out
    assert "by rule: auto-approve web2" in out
    [grant] = _grants(h, int(m.group(1)))
    assert f"grant #{grant.id}  web2" in out
    assert _works(alice, "web2")


def test_lapse_never_grants(rq: RequestsNode) -> None:
    h = rq.harness
    alice = h.contractor("lpa")
    bob = h.contractor("lpb", role=Role.APPROVER)
    child = _wait_spawn(alice, "request", "web1", "--for", "1h", "--reason", "slow", "--wait")
    try:
        request_id = _expect_pending(child)
        child.expect(f"request #{request_id} lapsed: nobody decided in time", timeout=30)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert f"#{request_id}\tlapsed" in _ok(alice.ssh("requests"))
    _refused(bob.ssh("approve", str(request_id)), "lapsed")
    _refused(alice.ssh("true", target="web1"), "no grant for web1")
    assert h.audit("bastion", "request.lapsed")


# --- the shared node -------------------------------------------------------------------------


def test_whole_flow_pending_refused_approved_works_and_ends(bastion: BastionHarness) -> None:
    alice = bastion.contractor("rqa")
    bob = bastion.contractor("rqb", role=Role.APPROVER)
    # --wait on a terminal: the decision is printed where she asked
    waiting = alice.ssh_pty(None, "request", "web1", "--for", "12s", "--reason", "fix", "nginx",
                            "--wait")  # fmt: skip
    try:
        request_id = _expect_pending(waiting)
        waiting.expect("can approve: ")
        waiting.expect("lapses at ")
        waiting.expect("waiting for a decision")
        r = alice.ssh("true", target="web1")
        _refused(r, "no grant for web1")

        out = _ok(bob.ssh("approve", str(request_id), "--reason", "ok"))
        assert f"request #{request_id} of {alice.name} approved" in out
        waiting.expect(f"request #{request_id} approved by {bob.name}")
        waiting.expect(r"grant #(\d+)  web1")
        waiting.expect(pexpect.EOF)
    finally:
        waiting.close()
    assert waiting.exitstatus == 0

    request = bastion.store.get_request(request_id)
    assert request is not None and request.state is RequestState.APPROVED
    [grant] = _grants(bastion, request_id)
    assert grant.request_id == request_id and grant.approved_by == bob.name
    assert request.decided_at is not None
    assert grant.not_after == pytest.approx(request.decided_at + 12)
    with alice.ssh_pty("web1") as child:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        child.expect(f"grant #{grant.id} ends in", timeout=15)
        child.expect("closing this session", timeout=15)
        child.expect(pexpect.EOF, timeout=10)
    r = alice.ssh("true", target="web1")
    _refused(r, f"grant #{grant.id} expired")


def test_nobody_approves_their_own_request_admins_included(bastion: BastionHarness) -> None:
    admin = bastion.contractor("rqself", role=Role.ADMIN)
    request_id = _pending_id(admin.ssh("request", "web1", "--for", "1h", "--reason", "mine"))
    r = admin.ssh("approve", str(request_id))
    _refused(r, "nobody approves their own request, admins included")
    pending = _ok(admin.ssh("requests", "--pending"))
    assert f"#{request_id}\t" not in pending
    assert bastion.store.get_request(request_id).state is RequestState.PENDING  # type: ignore[union-attr]


def test_two_of_n_needs_two_distinct_approvers(bastion: BastionHarness) -> None:
    alice = bastion.contractor("rq2a")
    bob = bastion.contractor("rq2b", role=Role.APPROVER)
    carol = bastion.contractor("rq2c", role=Role.APPROVER)
    bastion.store.set_target_request_policy("web2", approvals=2, approvers=None, max_request=None)
    try:
        r = alice.ssh("request", "web2", "--for", "1h", "--reason", "two", "keys")
        request_id = _pending_id(r)
        assert "2 distinct approvals needed" in r.stdout.decode()
        assert f"#{request_id}\t{alice.name}" in _ok(bob.ssh("requests", "--pending"))

        out = _ok(bob.ssh("approve", str(request_id)))
        assert "needs 1 more distinct approval(s)" in out
        assert not _works(alice, "web2")
        _refused(bob.ssh("approve", str(request_id)), f"{bob.name} already approved")
        assert f"#{request_id}\t" not in _ok(bob.ssh("requests", "--pending"))

        out = _ok(carol.ssh("approve", f"#{request_id}"))
        assert "approved" in out
        [grant] = _grants(bastion, request_id)
        assert set(grant.approved_by.split(",")) == {bob.name, carol.name}  # type: ignore[union-attr]
        assert _works(alice, "web2")
    finally:
        bastion.store.set_target_request_policy(
            "web2", approvals=1, approvers=None, max_request=None
        )


def test_approver_narrows_never_widens(bastion: BastionHarness) -> None:
    alice = bastion.contractor("rqna")
    bob = bastion.contractor("rqnb", role=Role.APPROVER)
    r = alice.ssh("request", "web1,web2", "--for", "2h", "--allow", "sftp", "--reason", "both")
    request_id = _pending_id(r)
    rid = str(request_id)
    _refused(bob.ssh("approve", rid, "--for", "3h"), "never lengthen")
    _refused(bob.ssh("approve", rid, "--targets", "web1,nosuch"), "never add (nosuch)")
    _refused(bob.ssh("approve", rid, "--allow", "scp"), "never add (scp)")
    _refused(bob.ssh("approve", rid, "--for", "later"), "cannot read duration", 2)
    assert bastion.store.get_request(request_id).state is RequestState.PENDING  # type: ignore[union-attr]

    out = _ok(bob.ssh("approve", rid, "--targets", "web1", "--for", "1h", "--allow", "none"))
    assert "grant #" in out and "web2" not in out
    request = bastion.store.get_request(request_id)
    assert request is not None and request.decided_at is not None
    [grant] = _grants(bastion, request_id)
    assert grant.target_name == "web1" and grant.options == frozenset()
    assert grant.not_after == pytest.approx(request.decided_at + 3600)
    assert _works(alice, "web1")
    _refused(alice.ssh("true", target="web2"), "no grant for web2")


def test_lists_own_requests_newest_first_and_pending_is_for_approvers(
    bastion: BastionHarness,
) -> None:
    alice = bastion.contractor("rqla")
    first = _pending_id(alice.ssh("request", "web1", "--for", "1h", "--reason", "one"))
    second = _pending_id(alice.ssh("request", "web2", "--for", "30m", "--reason", "two"))
    out = _ok(alice.ssh("requests"))
    assert out.index(f"#{second}\tpending") < out.index(f"#{first}\tpending")
    assert "reason: two" in out
    _refused(alice.ssh("requests", "--pending"), "is not an approver")
    _refused(alice.ssh("approve", str(first)), "nobody approves their own request")
    bob = bastion.contractor("rqlb")
    other = _pending_id(bob.ssh("request", "web1", "--for", "1h", "--reason", "bob's"))
    _refused(alice.ssh("approve", str(other)), "is not an approver")
    with alice.ssh_pty(None, "requests") as child:  # the same with a terminal
        child.expect(f"#{second}\tpending")
        child.expect(pexpect.EOF)


def test_deny_reason_reaches_the_waiting_contractor(bastion: BastionHarness) -> None:
    alice = bastion.contractor("rqda")
    bob = bastion.contractor("rqdb", role=Role.APPROVER)
    child = _wait_spawn(alice, "request", "web1", "--for", "1h", "--reason", "deploy", "--wait")
    try:
        request_id = _expect_pending(child)
        child.expect("waiting for a decision")
        _refused(bob.ssh("deny", str(request_id)), "deny needs --reason", 2)
        out = _ok(bob.ssh("deny", str(request_id), "--reason", "not", "during", "the", "freeze"))
        assert "denied: not during the freeze" in out
        child.expect(f"request #{request_id} denied by {bob.name}: not during the freeze")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    _refused(bob.ssh("approve", str(request_id)), "is denied, not pending")
    _refused(alice.ssh("true", target="web1"), "no grant for web1")
    assert f"#{request_id}\tdenied" in _ok(alice.ssh("requests"))


def test_extension_keeps_a_live_session_past_the_old_end(bastion: BastionHarness) -> None:
    alice = bastion.contractor("rqea")
    bob = bastion.contractor("rqeb", role=Role.APPROVER)
    request_id = _pending_id(alice.ssh("request", "web1", "--for", "15s", "--reason", "short"))
    _ok(bob.ssh("approve", str(request_id)))
    [grant] = _grants(bastion, request_id)
    with alice.ssh_pty("web1") as child:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        r = alice.ssh("request", "--extend", str(grant.id), "--for", "30s", "--reason", "more")
        extension = _pending_id(r)
        assert f"extend grant #{grant.id}" in r.stdout.decode()
        out = _ok(bob.ssh("approve", str(extension)))
        assert "extended" in out
        moved = bastion.store.get_grant(grant.id)
        assert moved is not None and moved.not_after == pytest.approx(grant.not_after + 30)
        wait_until(lambda: time.time() > grant.not_after + 2, 30, "the old end to pass")
        child.sendline("echo still-$((6*7))")
        child.expect("still-42")
        assert child.isalive()
        child.sendline("exit")
        child.expect(pexpect.EOF)


def test_drop_ends_a_live_session(bastion: BastionHarness) -> None:
    alice = bastion.contractor("rqxa")
    grant = bastion.grant(alice, "web2")
    with alice.ssh_pty("web2") as child:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        out = _ok(alice.ssh("drop", str(grant.id)))
        assert f"grant #{grant.id} (web2) dropped" in out
        child.expect(f"grant #{grant.id} was revoked", timeout=10)
        child.expect("closing this session")
        child.expect(pexpect.EOF, timeout=10)
    [session] = wait_until(
        lambda: bastion.store.list_sessions(user=alice.name, live=False), 10, "the session to end"
    )
    assert session.end_reason == "grant-revoked"
    _refused(alice.ssh("drop", str(grant.id)), "already revoked")
    other = bastion.contractor("rqxb")
    _refused(other.ssh("drop", str(grant.id)), f"you have no grant #{grant.id}")
    assert bastion.audit(alice.name, "request.dropped")


def test_break_glass_gives_access_at_once_capped_and_for_review(bastion: BastionHarness) -> None:
    alice = bastion.contractor("rqba")
    r = alice.ssh("request", "web1", "--break-glass", "--for", "2h", "--reason", "site", "down")
    out = _ok(r)
    m = re.search(r"break-glass: request #(\d+) gives access now for 30m00s \(capped", out)
    assert m is not None, out
    assert "will be reviewed" in out
    request_id = int(m.group(1))
    [grant] = _grants(bastion, request_id)
    assert f"grant #{grant.id}  web1" in out
    assert grant.not_after - grant.not_before == pytest.approx(1800)
    assert _works(alice, "web1")
    unreviewed = bastion.store.list_requests(unreviewed=True)
    assert request_id in [x.id for x in unreviewed]
    assert bastion.audit(alice.name, "request.break-glass")


def test_ctrl_c_stops_waiting_and_the_request_stays(bastion: BastionHarness) -> None:
    alice = bastion.contractor("rqca")
    child = alice.ssh_pty(None, "request", "web1", "--for", "1h", "--reason", "later", "--wait")
    try:
        request_id = _expect_pending(child)
        child.expect("waiting for a decision")
        child.send("\x03")
        child.expect(f"stopped waiting; request #{request_id} stays pending")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert bastion.store.get_request(request_id).state is RequestState.PENDING  # type: ignore[union-attr]
    assert b"request web1 --for 2h --reason TEXT" in _ok(alice.ssh("help")).encode()


def test_errors_are_on_stderr_with_exit_status(bastion: BastionHarness) -> None:
    alice = bastion.contractor("rqerr")
    _refused(alice.ssh("request", "web1", "--for", "2h"), "bastion: say why with --reason", 2)
    _refused(alice.ssh("request", "nosuch", "--for", "2h", "--reason", "x"), "no target named")
    _refused(alice.ssh("request", "web1", "--for", "9h", "--reason", "x"), "at most 8h00m")
    bob = bastion.contractor("rqerrb", role=Role.APPROVER)
    _refused(bob.ssh("approve", "999999"), "bastion: no request #999999")
    _refused(alice.ssh("drop", "x"), "'x' is not a grant number", 2)
    with alice.ssh_pty(None, "request", "web1", "--for", "2h") as child:
        child.expect("say why with --reason")
        child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2


# --- last, so the dead webhook's minute of retries overlaps the tests above ------------


def test_dead_receiver_is_audited_as_notify_failed(rq: RequestsNode) -> None:
    # Five attempts with the default waits (2+5+15+40 s) since the fixture's first request;
    # last in the module, so that minute mostly overlaps the tests above.
    rows = wait_until(
        lambda: rq.harness.audit("notify", "notify.failed"), 120, "notify.failed for the dead hook"
    )
    assert any(str(r.details.get("event", "")).startswith("request.") for r in rows)
