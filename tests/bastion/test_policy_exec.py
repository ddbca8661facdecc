"""Guardrails on exec commands: stock ``ssh alice%web1@bastion 'CMD'`` against a real sshd.

The bypass suite of issue 15, one case per line with its expected outcome. Each
denied case has its own file on the real target, created first by an allowed
command; at the end one allowed command proves every file is still there. A
denied command never reaches the target: the contractor sees the rule on stderr
and exit status 1, the audit has ``policy.deny`` with the rule, and the
recording has the marker.

The variable case (``C=rm; $C -rf X``) cannot be analysed: with a command rule
that denies present, the bastion denies it (capped at deny) and also reports it
as ``policy.unanalysable``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.store.models import SessionRecord
from recorder import RecordingReader
from recorder.events import Marker
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DENY, ALLOW = "deny", "allow"

#: (command with X for the file, expected outcome)
BYPASS = [
    ("rm -rf X", DENY),
    ("true; rm -rf X", DENY),
    ("true && rm -rf X", DENY),
    ("echo y | rm -rf X", DENY),
    ("echo $(rm -rf X)", DENY),
    ("echo `rm -rf X`", DENY),
    ("bash -c 'rm -rf X'", DENY),
    ("sudo rm -rf X", DENY),
    ("sudo /bin/rm -rf X", DENY),
    ("env rm -rf X", DENY),
    ("\\rm -rf X", DENY),
    ("r''m -rf X", DENY),
    ("C=rm; $C -rf X", DENY),  # unanalysable: denied because a deny rule exists
    ("echo rm -rf X", ALLOW),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    h = make_harness(tmp_path_factory.mktemp("policy-exec"))
    try:
        for args in (
            ("no-rm", "--command", "rm", "--action", "deny"),
            ("warn-hostname", "--command", "hostname", "--action", "warn"),
            ("end-on-halt", "--command", "halt", "--action", "terminate"),
            ("lock-on-reboot", "--command", "reboot", "--action", "lock"),
            ("try-id", "--command", "id", "--action", "deny", "--shadow"),
        ):
            r = h.cli("policy", "add", *args)
            assert r.returncode == 0, r.stderr
        yield h
    finally:
        h.close()


def _contractor(h: BastionHarness) -> Contractor:
    c = h.contractor()
    h.grant(c, "web1")
    return c


def _run(c: Contractor, command: str) -> subprocess.CompletedProcess[bytes]:
    return c.ssh(command, target="web1")


def _markers(h: BastionHarness, session_id: str) -> list[str]:
    def sealed() -> SessionRecord | None:
        row = h.store.get_session(session_id)
        return row if row is not None and row.final_hash is not None else None

    row = wait_until(sealed, 10, f"session {session_id} sealed")
    assert row is not None and row.recording
    path = h.config.recordings_dir / row.recording
    with RecordingReader.open(str(path)) as reader:
        return [e.label for e in reader.events() if isinstance(e, Marker)]


def test_exec_bypass_suite(node: BastionHarness, tmp_path: Path) -> None:
    c = _contractor(node)
    base = str(tmp_path / "victims")  # the sshd target runs on this machine
    files = [f"{base}/f{i}" for i in range(len(BYPASS))]
    made = _run(c, f"mkdir -p {base} && touch {' '.join(files)}")
    assert made.returncode == 0, made.stderr
    denied = 0
    for (template, expected), path in zip(BYPASS, files, strict=True):
        r = _run(c, template.replace("X", path))
        err = r.stderr.decode(errors="replace")
        if expected == DENY:
            denied += 1
            assert r.returncode == 1, (template, r.returncode, err)
            if "$C" in template:
                assert "cannot be analysed" in err, (template, err)
            else:
                assert "denied (rule no-rm)" in err, (template, err)
        else:
            assert r.returncode == 0, (template, err)
            assert r.stdout.decode().strip() == f"rm -rf {path}", template
    check = _run(c, " ; ".join(f"test -e {f} && echo present {f}" for f in files))
    present = {line.split()[1] for line in check.stdout.decode().splitlines()}
    assert present == set(files), "a denied command reached the target"
    # written in the background, possibly after the client returned
    wait_until(lambda: len(node.audit(c.name, "policy.deny")) >= denied, 10, "policy.deny rows")
    rows = node.audit(c.name, "policy.deny")
    assert len(rows) == denied
    plain = next(r for r in rows if r.details["text"] == f"rm -rf {files[0]}")
    assert plain.details["rule"] == "no-rm" and plain.details["hook"] == "policy"
    unanalysable = node.wait_audit(c.name, "policy.unanalysable")
    assert [r.details["text"] for r in unanalysable] == [f"C=rm; $C -rf {files[12]}"]
    markers = _markers(node, plain.details["session"])
    assert any(m.startswith(f"policy deny: command 'rm -rf {files[0]}'") for m in markers)


def test_warn_runs_and_shadow_only_reports(node: BastionHarness) -> None:
    c = _contractor(node)
    r = _run(c, "hostname")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert "warning (rule warn-hostname)" in r.stderr.decode()
    (warn,) = node.wait_audit(c.name, "policy.warn")
    assert warn.details["rule"] == "warn-hostname"
    r = _run(c, "id -un")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert b"[bastion]" not in r.stderr  # nothing told: shadow rules only report
    (shadow,) = node.wait_audit(c.name, "policy.shadow")
    assert shadow.details["rule"] == "try-id"
    assert any(m.startswith("policy shadow:") for m in _markers(node, shadow.details["session"]))


def test_terminate_ends_the_session_with_reason_policy(node: BastionHarness) -> None:
    c = _contractor(node)
    r = _run(c, "halt -p")
    assert r.returncode != 0
    assert "denied (rule end-on-halt)" in r.stderr.decode()
    (row,) = node.wait_audit(c.name, "policy.terminate")
    node.wait_audit(c.name, "session.end")
    s = node.store.get_session(row.details["session"])
    assert s is not None and s.end_reason == "policy"


def test_lock_locks_the_user(node: BastionHarness) -> None:
    c = _contractor(node)
    assert _run(c, "true").returncode == 0
    r = _run(c, "sudo reboot")
    assert r.returncode != 0
    assert "denied (rule lock-on-reboot)" in r.stderr.decode()
    node.wait_audit(c.name, "policy.lock")
    node.wait_audit("policy", "user.locked")
    again = _run(c, "true")
    assert again.returncode != 0
    user = node.store.get_user(c.name)
    assert user is not None and user.locked_until is not None
