"""``--file`` rules on scp and sftp: a denied path never reaches the target.

Legacy scp (``scp -O``): the paths of the exec request are judged before the
upstream connection opens. SFTP: each open/remove/rename/... is judged before it
is forwarded; a refused one gets SSH_FX_PERMISSION_DENIED and the session goes
on. Stock scp and sftp against a real sshd.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    h = make_harness(tmp_path_factory.mktemp("policy-files"))
    try:
        r = h.cli("policy", "add", "no-secrets", "--file", "*/secret*", "--action", "deny")
        assert r.returncode == 0, r.stderr
        yield h
    finally:
        h.close()


def _scp(c: Contractor, node: BastionHarness, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = ["scp", "-O", *c.ssh_args(), "-P", str(node.port), *args]
    return subprocess.run(cmd, capture_output=True, env=c.ssh_env(), timeout=60, check=False)


def test_scp_paths_are_judged_before_the_target(node: BastionHarness, tmp_path: Path) -> None:
    c = node.contractor()
    node.grant(c, "web1", options=("scp",))
    remote = tmp_path / "remote"  # the sshd target runs on this machine
    remote.mkdir()
    (remote / "secret.key").write_text("top secret\n")
    local = tmp_path / "local.txt"
    local.write_text("hello\n")
    host = f"{c.login_name('web1')}@127.0.0.1"

    up = _scp(c, node, str(local), f"{host}:{remote}/secret.txt")
    assert up.returncode != 0
    assert b"denied (rule no-secrets)" in up.stderr, up.stderr
    assert not (remote / "secret.txt").exists()

    down = _scp(c, node, f"{host}:{remote}/secret.key", str(tmp_path / "got.key"))
    assert down.returncode != 0
    assert b"denied (rule no-secrets)" in down.stderr, down.stderr
    assert not (tmp_path / "got.key").exists()

    ok = _scp(c, node, str(local), f"{host}:{remote}/plain.txt")
    assert ok.returncode == 0, ok.stderr
    assert (remote / "plain.txt").read_text() == "hello\n"

    rows = node.wait_audit(c.name, "policy.deny")
    assert {(r.details["kind"], r.details["text"]) for r in rows} >= {
        ("file", f"{remote}/secret.txt"),
    }


def _sftp(c: Contractor, node: BastionHarness, batch: str) -> subprocess.CompletedProcess[bytes]:
    # sftp -b implies BatchMode=yes (no prompts); ssh keeps the first value it sees.
    cmd = [
        "sftp",
        *c.ssh_args(),
        "-o",
        "BatchMode=no",
        "-P",
        str(node.port),
        "-b",
        "-",
        f"{c.login_name('web1')}@127.0.0.1",
    ]
    return subprocess.run(
        cmd, input=batch.encode(), capture_output=True, env=c.ssh_env(), timeout=60, check=False
    )


def test_sftp_requests_on_denied_paths_get_permission_denied(
    node: BastionHarness, tmp_path: Path
) -> None:
    c = node.contractor()
    node.grant(c, "web1", options=("sftp",))
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "secret.key").write_text("top secret\n")
    (remote / "plain.txt").write_text("plain\n")
    local = tmp_path / "local.txt"
    local.write_text("hello\n")
    got = tmp_path / "got"
    got.mkdir()
    # "-" goes on after a failed command; the session stays usable throughout
    batch = "\n".join(
        [
            f"-get {remote}/secret.key {got}/secret.key",
            f"-rm {remote}/secret.key",
            f"-put {local} {remote}/secret.txt",
            f"-rename {remote}/plain.txt {remote}/secret.moved",
            f"get {remote}/plain.txt {got}/plain.txt",
            f"put {local} {remote}/uploaded.txt",
        ]
    )
    r = _sftp(c, node, batch + "\n")
    assert r.returncode == 0, r.stderr
    assert b"Permission denied" in r.stderr, r.stderr
    assert (remote / "secret.key").read_text() == "top secret\n"  # not read, not removed
    assert not (got / "secret.key").exists()
    assert not (remote / "secret.txt").exists()
    assert not (remote / "secret.moved").exists()
    assert (got / "plain.txt").read_text() == "plain\n"
    assert (remote / "uploaded.txt").read_text() == "hello\n"
    wait_until(lambda: len(node.audit(c.name, "policy.deny")) >= 4, 10, "policy.deny rows")
    texts = {r.details["text"] for r in node.audit(c.name, "policy.deny")}
    assert texts == {f"{remote}/secret.key", f"{remote}/secret.txt", f"{remote}/secret.moved"}
