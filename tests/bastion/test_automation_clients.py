"""Automation clients through the bastion, run for real: ControlMaster, ``sftp -b``, Ansible.

Each of them turns prompts off (``sftp -b`` sets BatchMode, Ansible adds
``KbdInteractiveAuthentication=no``), so the TOTP prompt never appears. The
README's answer is one interactive login kept open as an OpenSSH ControlMaster
that later commands reuse; these tests run exactly the commands it prints.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.bastion_node import BastionHarness, Contractor
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _no_prompt_env() -> dict[str, str]:
    """An environment in which OpenSSH cannot ask for a code: only a master can log in."""
    drop = ("DISPLAY", "SSH_AUTH_SOCK", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE")
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture()
def control_dir() -> Iterator[Path]:
    """A short directory for control sockets (a Unix socket path has ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Master:
    """``ssh -fN -o ControlMaster=yes -o ControlPersist=…``: one login with TOTP, kept open."""

    def __init__(self, c: Contractor, b: BastionHarness, control_dir: Path, target: str) -> None:
        self.c, self.b = c, b
        self.path = str(control_dir / "%C")
        self.dest = f"{c.login_name(target)}@127.0.0.1"
        self.options = ["-o", f"ControlPath={self.path}", "-p", str(b.port)]

    def open(self) -> None:
        argv = [
            "ssh",
            *self.c.ssh_args(),
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=120",
            "-fN",
            *self.options,
            self.dest,
        ]
        r = subprocess.run(argv, env=self.c.ssh_env(), capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr

    def close(self) -> None:
        subprocess.run(
            ["ssh", *self.options, "-O", "exit", self.dest],
            capture_output=True,
            env=_no_prompt_env(),
            timeout=30,
        )


@pytest.fixture()
def master(bastion: BastionHarness, control_dir: Path) -> Iterator[Master]:
    c = bastion.contractor()
    bastion.grant(c, "web1", options=("scp",))
    m = Master(c, bastion, control_dir, "web1")
    m.open()
    try:
        yield m
    finally:
        m.close()


def test_commands_reuse_one_login_and_each_is_recorded(master: Master) -> None:
    c, b = master.c, master.b
    before = len(b.store.list_sessions(user=c.name))
    for i in range(3):
        r = subprocess.run(
            ["ssh", "-F", "/dev/null", *master.options, master.dest, f"echo reused-{i}"],
            capture_output=True,
            env=_no_prompt_env(),
            timeout=60,
        )
        assert r.returncode == 0 and r.stdout == f"reused-{i}\n".encode(), r.stderr
    # one login (one login.ok), one recorded session per command
    wait_until(
        lambda: len([s for s in b.store.list_sessions(user=c.name) if s.ended_at]) >= before + 3,
        15,
        "three recorded sessions",
    )
    assert len(b.audit(c.name, "login.ok")) == 1
    ended = [s for s in b.store.list_sessions(user=c.name) if s.ended_at]
    assert {s.end_reason for s in ended} == {"exit"} and all(s.recording for s in ended)


def _sftp_batch(
    c: Contractor, b: BastionHarness, extra: list[str], env: dict[str, str], batch: str
) -> subprocess.CompletedProcess[bytes]:
    argv = ["sftp", *c.ssh_args(), *extra, "-P", str(b.port), "-b", "-"]
    return subprocess.run(
        [*argv, f"{c.login_name('web1')}@127.0.0.1"],
        input=batch.encode(),
        capture_output=True,
        env=env,
        timeout=60,
    )


def test_sftp_batch_needs_batchmode_no_or_a_master(
    master: Master, tmp_path: Path, control_dir: Path
) -> None:
    c, b = master.c, master.b
    src = tmp_path / "batch.txt"
    src.write_text("batch upload\n")
    dest = tmp_path / "uploaded-by-batch.txt"
    batch = f"put {src} {dest}\n"
    # sftp -b implies BatchMode=yes: no keyboard-interactive, so no TOTP prompt
    r = _sftp_batch(c, b, [], c.ssh_env(), batch)
    assert r.returncode != 0 and b"Permission denied" in r.stderr and not dest.exists()
    # -o BatchMode=no before -b lets the prompt (here: SSH_ASKPASS) answer
    r = _sftp_batch(c, b, ["-o", "BatchMode=no"], c.ssh_env(), batch)
    assert r.returncode == 0, r.stderr
    assert dest.read_text() == "batch upload\n"
    dest.unlink()
    # or reuse the master: no prompt at all
    r = _sftp_batch(c, b, ["-o", f"ControlPath={master.path}"], _no_prompt_env(), batch)
    assert r.returncode == 0, r.stderr
    assert dest.read_text() == "batch upload\n"


def _inventory(tmp_path: Path, master: Master, remote_tmp: bool) -> Path:
    c, b = master.c, master.b
    line = (
        f"web1 ansible_host=127.0.0.1 ansible_port={b.port} ansible_user={c.login_name('web1')}"
        " ansible_python_interpreter=/usr/bin/python3"
    )
    if remote_tmp:
        line += " ansible_remote_tmp=/tmp/.ansible-bastion"
    path = tmp_path / "inventory.ini"
    path.write_text(line + "\n")
    return path


def _ansible(
    inventory: Path, ssh_args: str, *module: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        **_no_prompt_env(),
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_LOCAL_TEMP": str(cwd / ".ansible-local"),
        "ANSIBLE_NOCOLOR": "1",
    }
    ansible = shutil.which("ansible")
    assert ansible is not None, "ansible-core is a dev dependency: pip install -e '.[dev]'"
    return subprocess.run(
        [ansible, "web1", "-i", str(inventory), *module],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=cwd,
    )


def test_ansible_through_a_control_master(master: Master, tmp_path: Path) -> None:
    c, b = master.c, master.b
    args = f"-o ControlMaster=auto -o ControlPersist=120 -o ControlPath={master.path}"
    dest = tmp_path / "from-ansible.txt"
    r = _ansible(
        _inventory(tmp_path, master, remote_tmp=True),
        args,
        "-m",
        "copy",
        "-a",
        f"content=written-by-ansible dest={dest}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert dest.read_text() == "written-by-ansible"
    r = _ansible(
        _inventory(tmp_path, master, remote_tmp=True),
        args,
        "-m",
        "command",
        "-a",
        "echo ansible-ran-here",
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "ansible-ran-here" in r.stdout, r.stdout + r.stderr
    # every step Ansible took is a recorded session of this contractor, after one login
    assert len(b.audit(c.name, "login.ok")) == 1
    hits = wait_until(
        lambda: b.store.search_commands("AnsiballZ_command.py", user=c.name),
        15,
        "the command module's exec line in the session history",
    )
    assert all(h.target_name == "web1" for h in hits)


def test_ansible_without_a_master_cannot_answer_totp(master: Master, tmp_path: Path) -> None:
    other = tmp_path / "nomaster"
    other.mkdir()
    r = _ansible(
        _inventory(tmp_path, master, remote_tmp=True),
        "-o ControlMaster=no",
        "-m",
        "command",
        "-a",
        "true",
        cwd=other,
    )
    assert r.returncode != 0 and "UNREACHABLE" in r.stdout, r.stdout + r.stderr
    assert "Permission denied" in r.stdout
