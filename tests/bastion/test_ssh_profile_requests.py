"""Requests naming an access profile, on a real node with stock ``ssh`` and real sshd targets.

A contractor asks for ``--profile`` over SSH, a second user approves over SSH (own
key and TOTP), and the one profile grant that approval makes reaches the targets
labelled for the profile, including one labelled after the approval. Labels and
profiles are set with the ``bastion`` CLI in another process; the labels are
unique to this module, so the shared node's other tests see no difference.
"""

from __future__ import annotations

import re
import secrets
import subprocess

import pytest

from bastion.store.models import RequestState, Role
from tests.peers.bastion_node import LOGIN, BastionHarness, Contractor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PENDING = re.compile(rb"request #(\d+) pending")


def _cli(bastion: BastionHarness, *args: str) -> str:
    done = bastion.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _ok(r: subprocess.CompletedProcess[bytes]) -> str:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout.decode()


def _works(c: Contractor, target: str) -> bool:
    r = c.ssh("echo", "in-$((6*7))", target=target)
    return r.returncode == 0 and b"in-42" in r.stdout


def test_request_profile_approved_over_ssh_reaches_labelled_targets(
    bastion: BastionHarness,
) -> None:
    key = f"preq{secrets.token_hex(3)}"
    profile = f"{key}-web"
    _cli(bastion, "profile", "add", profile, "--select", f"{key}=yes", "--login", LOGIN)
    _cli(bastion, "target", "label", "web2", f"{key}=yes")
    alice = bastion.contractor("pra")
    bob = bastion.contractor("prb", role=Role.APPROVER)
    assert not _works(alice, "web2")

    asked = alice.ssh(
        "request", "--profile", profile, "--for", "1h", "--reason", "deploy", "the", "fix"
    )
    out = _ok(asked)
    m = PENDING.search(asked.stdout)
    assert m is not None, out
    request_id = int(m.group(1))
    assert f"profile {profile} (reaches now: web2) for 1h" in out
    assert re.search(rf"can approve: .*\b{re.escape(bob.name)}\b", out), out
    refused = alice.ssh("true", target="web2")
    assert refused.returncode != 0 and b"no grant for web2" in refused.stderr

    listed = _ok(bob.ssh("requests", "--pending"))
    line = next(ln for ln in listed.splitlines() if ln.startswith(f"#{request_id}\t"))
    assert f"profile {profile} (reaches now: web2)" in line and "reason: deploy the fix" in line
    narrowed = bob.ssh("approve", str(request_id), "--targets", "web2")
    assert narrowed.returncode == 1 and b"not for targets" in narrowed.stderr

    approved = _ok(bob.ssh("approve", str(request_id), "--reason", "ok"))
    assert f"request #{request_id} of {alice.name} approved" in approved
    assert f"profile {profile} as -" in approved  # the profile's logins apply per target
    request = bastion.store.get_request(request_id)
    assert request is not None and request.state is RequestState.APPROVED
    (grant_id,) = request.grant_ids
    grant = bastion.store.get_grant(grant_id)
    assert grant is not None and grant.profile_name == profile and grant.target_id is None
    assert grant.request_id == request_id and grant.approved_by == bob.name

    assert _works(alice, "web2")
    assert not _works(alice, "web1")
    _cli(bastion, "target", "label", "web1", f"{key}=yes")  # labelled after approval
    assert _works(alice, "web1")
    grants = _ok(alice.ssh("grants")).splitlines()
    assert [ln.split("\t")[1] for ln in grants] == ["web1", "web2"]
    assert all(ln.startswith(f"#{grant_id}\t") for ln in grants)
    assert all(ln.endswith(f"profile {profile}") for ln in grants)

    shown = _cli(bastion, "request", "show", str(request_id))
    assert f"profile    {profile}" in shown and "reaches    web1, web2" in shown
    listing = _cli(bastion, "request", "list", "--user", alice.name)
    assert f"profile {profile}" in listing
    _cli(bastion, "target", "label", "web1", "--remove", key)
    _cli(bastion, "target", "label", "web2", "--remove", key)
    assert not _works(alice, "web2")
