"""``bastion apply --prune`` on a real node: a removed user's live PTY session is cut.

Real ``bastion serve``, real OpenSSH sshd targets, stock ``ssh``; the provisioning
file is written from the harness's targets so --prune keeps them, and applied with
the real CLI (a subprocess, as an operator would).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from bastion.grants import format_time
from bastion.store.models import Role
from tests.peers.bastion_node import LOGIN, BastionHarness, Contractor, make_harness
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    harness = make_harness(Path(tmp_path_factory.mktemp("apply")))
    try:
        yield harness
    finally:
        harness.close()


def _strings(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def provisioning_file(
    bastion: BastionHarness, sponsor: Contractor, contractors: list[Contractor]
) -> str:
    """The harness's targets as they are, a sponsor, contractors with a standing grant each."""
    until = format_time(time.time() + 30 * 86400)[:10]
    text = ""
    for name in ("web1", "web2"):
        t = bastion.target(name)
        text += (
            f'[targets.{name}]\nssh = "{t.host}:{t.port}"\nlogins = {_strings(t.logins)}\n'
            f'principal = "{t.principal}"\nhost_keys = {_strings(t.host_keys)}\n\n'
        )
    key = sponsor.key_path.with_suffix(".pub").read_text().strip()
    text += f'[users.{sponsor.name}]\nrole = "approver"\nkeys = ["{key}"]\n\n'
    for c in contractors:
        key = c.key_path.with_suffix(".pub").read_text().strip()
        text += (
            f'[users.{c.name}]\nkeys = ["{key}"]\nsponsor = "{sponsor.name}"\n'
            f"until = {until}\n\n"
            f'[[grants]]\nuser = "{c.name}"\ntarget = "web1"\nlogin = "{LOGIN}"\nfor = "2h"\n\n'
        )
    return text


def test_prune_cuts_the_live_session_of_a_user_no_longer_in_the_file(
    bastion: BastionHarness,
) -> None:
    sponsor = bastion.contractor("sam", role=Role.APPROVER)
    stays, leaves = bastion.contractor("stay"), bastion.contractor("leave")
    path = bastion.dir / "apply.toml"
    path.write_text(provisioning_file(bastion, sponsor, [stays, leaves]))
    first = bastion.cli("apply", str(path))
    assert first.returncode == 0, first.stderr
    assert f"+ grant {leaves.name} -> web1 as {LOGIN}" in first.stdout
    assert "target" not in first.stdout  # the harness's targets match the file
    again = bastion.cli("apply", str(path), "--prune")
    assert again.returncode == 0 and again.stdout == "no changes\n", again.stdout

    child = leaves.ssh_pty("web1", timeout=20)
    try:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        path.write_text(provisioning_file(bastion, sponsor, [stays]))
        pruned = bastion.cli("apply", str(path), "--prune")
        assert pruned.returncode == 0, pruned.stderr
        assert f"- user {leaves.name}: not in the file: disabled, live sessions end" in (
            pruned.stdout
        )
        assert "1 live session(s) of disabled users will be ended" in pruned.stdout
        child.expect(f"user {leaves.name} disabled: not in the provisioning file", timeout=15)
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    [row] = wait_until(
        lambda: [s for s in bastion.store.list_sessions(user=leaves.name) if s.ended_at],
        10, "the session row to be closed",
    )  # fmt: skip
    assert row.end_reason == "admin-terminated"
    refused = leaves.ssh("true", target="web1")
    assert refused.returncode == 255 and b"is disabled" in refused.stderr
    user = bastion.store.get_user(leaves.name)
    assert user is not None and user.disabled  # disabled, not deleted
    kept = stays.ssh("echo", "still-in", target="web1")
    assert kept.returncode == 0 and b"still-in" in kept.stdout, kept.stderr
    [audit] = bastion.audit("test-admin", "user.disable")
    assert audit.details["via"] == "apply" and audit.details["sessions"] == [row.id]
