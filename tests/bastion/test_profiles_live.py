"""Access profiles on a real node: labels decide at connect time, stock ssh, real sshd targets.

Labels and profiles are changed with the ``bastion`` CLI in another process, so the
node only learns of them from the store: a target labelled later is reached under
the same grant, and removing its label refuses new connections and ends a live PTY
session on it with reason ``label-removed``, which the contractor is shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.peers.bastion_node import LOGIN, BastionHarness, make_harness
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    harness = make_harness(Path(tmp_path_factory.mktemp("profiles")))
    try:
        yield harness
    finally:
        harness.close()


def _cli(bastion: BastionHarness, *args: str) -> str:
    done = bastion.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_labels_give_and_take_access_under_one_profile_grant(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    _cli(bastion, "profile", "add", "stage-hosts", "--select", "env=stage", "--login", LOGIN)
    _cli(bastion, "target", "label", "web1", "env=stage")
    out = _cli(bastion, "grant", "add", c.name, "--profile", "stage-hosts", "--for", "1h")
    assert "reaches now (labels decide at each connect): web1" in out

    ok = c.ssh("echo", "on-$((40+2))", target="web1")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == b"on-42"
    refused = c.ssh("true", target="web2")
    assert refused.returncode != 0 and b"no grant for web2" in refused.stderr

    _cli(bastion, "target", "label", "web2", "env=stage")  # labelled later: no new grant
    listed = c.ssh("grants")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert [ln.split("\t")[1] for ln in lines] == ["web1", "web2"]
    assert all(ln.endswith("profile stage-hosts") for ln in lines)

    child = c.ssh_pty("web2", timeout=20)
    try:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        _cli(bastion, "target", "label", "web2", "--remove", "env")
        child.expect("web2 is no longer covered by the access profile", timeout=20)
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    [row] = wait_until(
        lambda: [s for s in bastion.store.list_sessions(user=c.name)
                 if s.ended_at and s.target_name == "web2"],
        10, "the web2 session row to be closed",
    )  # fmt: skip
    assert row.end_reason == "label-removed"
    again = c.ssh("true", target="web2")
    assert again.returncode != 0 and b"no grant for web2" in again.stderr
    still = c.ssh("echo", "still", target="web1")  # the other target is untouched
    assert still.returncode == 0 and still.stdout.strip() == b"still"


def test_removing_the_profile_ends_its_live_sessions(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    _cli(bastion, "profile", "add", "web-role", "--select", "role=web", "--login", LOGIN)
    _cli(bastion, "target", "label", "web1", "role=web")
    _cli(bastion, "grant", "add", c.name, "--profile", "web-role", "--for", "1h")
    child = c.ssh_pty("web1", timeout=20)
    try:
        child.sendline("echo started-$((3+4))")
        child.expect("started-7")
        _cli(bastion, "profile", "remove", "web-role")
        child.expect("no longer covered by the access profile", timeout=20)
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    [row] = wait_until(
        lambda: [s for s in bastion.store.list_sessions(user=c.name) if s.ended_at],
        10, "the session row to be closed",
    )  # fmt: skip
    assert row.end_reason == "label-removed"
    refused = c.ssh("true", target="web1")
    assert refused.returncode != 0 and b"no grant for web1" in refused.stderr
