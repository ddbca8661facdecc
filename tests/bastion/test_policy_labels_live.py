"""Guardrail rules by target label (``--target env=prod``) on a real node and real sshd targets.

Stock ``ssh alice%web1@bastion 'CMD'``: the rule denies on the target labelled
``env=prod`` and not on the one labelled ``env=dev``; after the labels are
swapped with ``bastion target label`` the next sessions get the other outcome
(each session judges with its target's labels as they were when it started).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.bastion_node import BastionHarness, make_harness
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    h = make_harness(tmp_path_factory.mktemp("policy-labels"))
    try:
        yield h
    finally:
        h.close()


def _ok(h: BastionHarness, *args: str) -> None:
    r = h.cli(*args)
    assert r.returncode == 0, r.stderr


def test_label_rule_follows_the_targets_labels(node: BastionHarness, tmp_path: Path) -> None:
    _ok(node, "target", "label", "web1", "env=prod")
    _ok(node, "target", "label", "web2", "env=dev")
    _ok(node, "policy", "add", "no-rm-prod", "--target", "env=prod", "--command", "rm",
        "--action", "deny")  # fmt: skip
    c = node.contractor()
    node.grant(c, "web1")
    node.grant(c, "web2")
    victims = {t: [tmp_path / f"{t}-{i}" for i in range(2)] for t in ("web1", "web2")}
    for f in (f for fs in victims.values() for f in fs):
        f.touch()  # the sshd targets run on this machine

    def rm(target: str, i: int) -> tuple[int, str]:
        r = c.ssh(f"rm -f {victims[target][i]}", target=target)
        return r.returncode, r.stderr.decode(errors="replace")

    code, err = rm("web1", 0)
    assert code == 1 and "denied (rule no-rm-prod)" in err, err
    assert victims["web1"][0].exists(), "a denied command reached the target"
    code, err = rm("web2", 0)
    assert code == 0, err
    assert not victims["web2"][0].exists()

    _ok(node, "target", "label", "web1", "env=dev")
    _ok(node, "target", "label", "web2", "env=prod")
    code, err = rm("web1", 1)
    assert code == 0, err
    assert not victims["web1"][1].exists()
    code, err = rm("web2", 1)
    assert code == 1 and "denied (rule no-rm-prod)" in err, err
    assert victims["web2"][1].exists(), "a denied command reached the target"

    def denied() -> list[str]:
        return [str(r.subject) for r in node.audit(c.name, "policy.deny")]

    wait_until(lambda: len(denied()) >= 2, 10, "two policy.deny rows")
    assert sorted(denied()) == ["web1", "web2"]
    r = node.cli("policy", "test", "--user", c.name, "--target", "web2", "--command", "rm x")
    assert r.returncode == 0 and r.stdout.startswith("deny"), r.stdout + r.stderr
