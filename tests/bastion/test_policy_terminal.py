"""Guardrails on lines typed in a terminal: stock ``ssh -tt`` into the target's real bash.

The bypass suite of issue 15 through a PTY, with the same cases as the exec
suite (``BYPASS`` in test_policy_exec.py): typed key by key, pasted (bracketed),
typed after a half line and Ctrl-C, and completed with TAB. Each denied line
has its own file on the real target; the Enter of a denied line never reaches
the shell (it gets Ctrl-C instead), and a final exec proves every file is still
there. A line typed on the alternate screen (a full-screen program) cannot be
checked: the session gets one ``alert.unchecked-input``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.bastion.test_policy_exec import BYPASS, DENY
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    h = make_harness(tmp_path_factory.mktemp("policy-terminal"))
    try:
        r = h.cli("policy", "add", "no-rm", "--command", "rm", "--action", "deny")
        assert r.returncode == 0, r.stderr
        yield h
    finally:
        h.close()


class Shell:
    """The target's bash through the bastion, driven key by key."""

    def __init__(self, c: Contractor) -> None:
        self.child = c.ssh_pty("web1", timeout=20)
        self.child.delaybeforesend = None
        self.n = 0
        self.sync()

    def type(self, text: str) -> None:
        """One key at a time, as a person types."""
        for ch in text:
            self.child.send(ch)

    def sync(self) -> None:
        """Wait until the shell ran a line of ours (its echo has quotes, its output not).

        No ``$((…))``: arithmetic is unanalysable, and denied while a deny rule exists.
        """
        self.n += 1
        self.type(f'echo sync-""{self.n}\r')
        self.child.expect_exact(f"sync-{self.n}\r\n")
        self.child.expect(r"[#$] ")  # the prompt: a person types once they see it

    def refused(self, why: str) -> None:
        self.child.expect_exact(why)
        self.sync()

    def close(self) -> None:
        """Hang up (a failed expectation stays the error reported)."""
        self.child.close(force=True)


def _present(c: Contractor, files: list[str]) -> set[str]:
    check = c.ssh(" ; ".join(f"test -e {f} && echo present {f}" for f in files), target="web1")
    return {line.split()[1] for line in check.stdout.decode().splitlines()}


def _victims(c: Contractor, base: Path, n: int) -> list[str]:
    files = [f"{base}/f{i}" for i in range(n)]
    made = c.ssh(f"mkdir -p {base} && touch {' '.join(files)}", target="web1")
    assert made.returncode == 0, made.stderr
    return files


def _expect(shell: Shell, template: str, expected: str, path: str) -> None:
    if expected == DENY:
        shell.refused("cannot be analysed" if "$C" in template else "denied (rule no-rm)")
    else:
        shell.child.expect(rf"[\r\n]rm -rf {re.escape(path)}\r\n")  # the output, not the echo
        shell.sync()


@pytest.mark.parametrize("how", ["typed", "pasted", "after-ctrl-c"])
def test_terminal_bypass_suite(node: BastionHarness, tmp_path: Path, how: str) -> None:
    c = node.contractor()
    node.grant(c, "web1")
    files = _victims(c, tmp_path / "victims", len(BYPASS))
    shell = Shell(c)
    try:
        for (template, expected), path in zip(BYPASS, files, strict=True):
            line = template.replace("X", path)
            if how == "pasted":
                shell.child.send(PASTE_START + line + PASTE_END)
                shell.type("\r")
            elif how == "after-ctrl-c":
                shell.type("echo half a line")
                shell.child.expect_exact("half a line")  # a person sees it, then changes their mind
                shell.child.sendcontrol("c")
                prompt = shell.child.expect([r"(?s)\^C.*?[#$] ", pexpect.TIMEOUT], timeout=3)
                if prompt == 1:  # bash missed it (it came as bash went back to reading keys):
                    shell.child.sendcontrol("c")  # a person presses it again,
                    shell.sync()  # and waits for a prompt that is surely the last one
                shell.type(line + "\r")
            else:
                shell.type(line + "\r")
            _expect(shell, template, expected, path)
    finally:
        shell.close()
    assert _present(c, files) == set(files), "a denied line reached the target"
    lines = {t.replace("X", p) for (t, e), p in zip(BYPASS, files, strict=True) if e == DENY}
    wait_until(lambda: len(node.audit(c.name, "policy.deny")) >= len(lines), 10, "deny rows")
    texts = [r.details["text"] for r in node.audit(c.name, "policy.deny")]
    assert sorted(texts) == sorted(lines), texts  # each line judged once, as typed


def test_a_shell_slow_to_drop_a_refused_line(node: BastionHarness, tmp_path: Path) -> None:
    """Keys typed after a refusal wait for the shell's new prompt, however long it takes
    (a busy target), so the next line is judged alone, not with the refused one."""
    c = node.contractor()
    node.grant(c, "web1")
    first, second = _victims(c, tmp_path / "slow", 2)
    shell = Shell(c)
    try:
        shell.type("trap 'sleep 3' INT\r")  # Ctrl-C reaches a new prompt 3 s late
        shell.sync()
        shell.type(f"rm -rf {first}\r")
        shell.child.expect_exact("denied (rule no-rm)")
        shell.type(f"rm -rf {second}\r")  # typed at once, before the shell dropped the first
        shell.refused("denied (rule no-rm)")
    finally:
        shell.close()
    assert _present(c, [first, second]) == {first, second}
    wait_until(lambda: len(node.audit(c.name, "policy.deny")) >= 2, 10, "deny rows")
    texts = [r.details["text"] for r in node.audit(c.name, "policy.deny")]
    assert sorted(texts) == [f"rm -rf {first}", f"rm -rf {second}"], texts


def test_tab_completion_is_judged_as_completed(node: BastionHarness, tmp_path: Path) -> None:
    c = node.contractor()
    node.grant(c, "web1")
    (victim,) = _victims(c, tmp_path / "tab", 1)
    shell = Shell(c)
    try:
        shell.type("r")
        shell.type(f"m -rf {victim[:-1]}")
        shell.child.send("\t")
        shell.child.expect_exact("f0 ")  # the shell completed the name (and added a space)
        shell.type("\r")
        shell.refused("denied (rule no-rm)")
    finally:
        shell.close()
    assert _present(c, [victim]) == {victim}
    (row,) = node.wait_audit(c.name, "policy.deny")
    assert row.details["text"] == f"rm -rf {victim}"


def test_typed_line_split_and_allowed_lines_run(node: BastionHarness, tmp_path: Path) -> None:
    c = node.contractor()
    node.grant(c, "web1")
    (victim,) = _victims(c, tmp_path / "split", 1)
    shell = Shell(c)
    try:
        shell.child.send(f"rm -rf {victim}\r")  # keys and Enter in one packet: echo awaited
        shell.refused("denied (rule no-rm)")
        shell.type('echo allowed-""42\r')
        shell.child.expect_exact("allowed-42")
    finally:
        shell.close()
    assert _present(c, [victim]) == {victim}


def test_full_screen_input_is_flagged_once(node: BastionHarness) -> None:
    c = node.contractor()
    node.grant(c, "web1")
    shell = Shell(c)
    try:
        shell.type("printf '\\033[?1049h'; echo on-''6\r")
        shell.child.expect_exact("on-6")
        shell.type("echo inside-''9 $((1+1))\r")  # unanalysable, but cannot be checked here
        shell.child.expect_exact("inside-9 2")
        shell.type("echo again-''16\r")
        shell.child.expect_exact("again-16")
        shell.type("printf '\\033[?1049l'\r")
        shell.sync()
    finally:
        shell.close()
    (alert,) = node.wait_audit(c.name, "alert.unchecked-input")
    assert alert.details["session"]
