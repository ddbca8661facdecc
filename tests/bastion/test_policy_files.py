"""``--file`` rules on legacy scp (``scp -O``): a denied path never reaches the target.

The paths of the exec request (``scp -t PATH`` / ``scp -f PATH``) are judged before
the upstream connection opens, with stock scp against a real sshd.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.bastion_node import BastionHarness, Contractor, make_harness

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
