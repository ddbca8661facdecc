"""A throwaway OpenSSH sshd that trusts the bastion CA, for the demo and the tests.

It uses the same sshd_config lines ``bastion target setup`` prints, so the
tests prove the documented setup, not a private one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import asyncssh

from bastion.errors import BastionError
from bastion.target_setup import sshd_config_lines

SSHD = "/usr/sbin/sshd"


PICKED_PORTS = (20000, 32768)
"""Where ``free_port`` draws from: below Linux's ephemeral range (32768-60999), so no
outgoing connection's automatic port, and no ``bind(port 0)``, takes a port between
the moment it is picked and the moment its server binds it."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing is bound to right now (sshd cannot bind port 0 itself).

    Drawn at random from ``PICKED_PORTS``; under pytest-xdist each worker draws from
    its own slice of it, so two workers starting servers at once never pick the same
    port (a port the kernel hands out for ``bind(0)`` is free for the next caller as
    soon as it is released: an sshd of one worker once took a node's port of another).
    """
    low, high = PICKED_PORTS
    worker, workers = (
        os.environ.get("PYTEST_XDIST_WORKER", ""),
        os.environ.get("PYTEST_XDIST_WORKER_COUNT", ""),
    )
    if worker.startswith("gw") and worker[2:].isdigit() and workers.isdigit():
        span = (high - low) // max(1, int(workers))
        low += int(worker[2:]) * span
        high = low + span
    for _ in range(100):
        port = secrets.randbelow(high - low) + low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range
        s.bind((host, 0))
        return int(s.getsockname()[1])


class OpenSSHTarget:
    """Runs ``sshd -D`` in ``workdir`` on loopback; ``stop()`` always cleans up."""

    def __init__(
        self,
        workdir: Path,
        ca_public_line: str,
        principal: str,
        logins: list[str],
        host: str = "127.0.0.1",
        extra_config: list[str] | None = None,
        port: int = 0,
    ) -> None:
        self.workdir = workdir
        self.ca_public_line = ca_public_line
        self.principal = principal
        self.logins = logins
        self.host = host
        self.fixed_port = port
        self.port = port
        self.extra_config = extra_config or []
        self.host_key_path = workdir / "ssh_host_ed25519_key"
        self.log_path = workdir / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key_line(self) -> str:
        """The public host key to pin on the bastion."""
        return self.host_key_path.with_suffix(".pub").read_text().strip()

    def write_files(self) -> Path:
        """Write host key, CA, principals and sshd_config (start() calls it; tests may first)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)  # noqa: S103  sshd reads it as the user
        if not self.host_key_path.exists():
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{self.principal} host")
            self.host_key_path.write_bytes(key.export_private_key("openssh"))
            os.chmod(self.host_key_path, 0o600)
            self.host_key_path.with_suffix(".pub").write_bytes(key.export_public_key("openssh"))
        ca_file = self.workdir / "user_ca.pub"
        ca_file.write_text(self.ca_public_line + "\n")
        principals = self.workdir / "principals"
        principals.mkdir(exist_ok=True)
        for login in self.logins:
            (principals / login).write_text(self.principal + "\n")
        config = self.workdir / "sshd_config"
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            *sshd_config_lines(str(ca_file), str(principals)),
            "AuthorizedKeysFile none",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp internal-sftp",
            "AllowTcpForwarding yes",
            "AllowAgentForwarding yes",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            *self.extra_config,
        ]
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd and wait until it accepts TCP connections (raises BastionError)."""
        if not Path(SSHD).exists():
            raise BastionError(
                f"{SSHD} not found: install OpenSSH's server (apt-get install openssh-server)"
            )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for _attempt in range(5):
            self.port = self.fixed_port or free_port(self.host)
            config = self.write_files()
            log = open(self.log_path, "ab")  # handed to the child
            try:
                self._proc = subprocess.Popen(  # noqa: S603  fixed argv: sshd, our config
                    [SSHD, "-D", "-e", "-f", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            finally:
                log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.5):
                        return
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise BastionError(f"sshd did not start; see {self.log_path}:\n{self.log_text()[-2000:]}")

    def log_text(self) -> str:
        """sshd's log so far (tests read certificate refusals here)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Terminate sshd (and, through its process group, nothing else)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def remove(self) -> None:
        """Stop and delete the working directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
