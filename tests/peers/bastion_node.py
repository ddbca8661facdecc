"""Test harness: a real bastion node (subprocess), real OpenSSH targets, real clients.

``BastionHarness`` initialises a bastion directory exactly as ``bastion init``
does, starts two OpenSSH sshd targets that trust its CA (web1, web2, each with
its own principal), runs ``bastion serve`` as a subprocess, and makes
contractors with fresh keys and TOTP secrets. Clients are the stock OpenSSH
``ssh``/``scp``/``sftp`` (keyboard-interactive answered by SSH_ASKPASS) and
paramiko.
"""

from __future__ import annotations

import getpass
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pexpect

from bastion.ca import CertificateAuthority
from bastion.cli_node import init_dir
from bastion.config import Config, load_config
from bastion.mfa import code_for_step, new_totp_secret, time_step
from bastion.openssh_target import OpenSSHTarget, free_port
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import Grant, Role, Target, TargetKind, User
from bastion.target_setup import default_principal
from tests.peers.lane import require_integration
from tests.waiting import wait_until

LOGIN = getpass.getuser()

TEST_CONFIG_OVERRIDES = {
    "warn_before = [300, 60]": "warn_before = [3, 1.5]",
    'workers = "auto"': "workers = 1",
    "poll_interval = 0.5": "poll_interval = 0.2",
    "lockout = 900": "lockout = 60",
    "still read).\nlogin_grace = 30": "still read).\nlogin_grace = 5",  # [postgres]
    # Most tests log in with wrong codes and raw sockets from 127.0.0.1 many times a
    # module; the per-address limits and penalties are tested where they are enabled
    # (tests/bastion/test_login_limits.py).
    'penalties = "authfail:5 noauth:1 grace-exceeded:10 min:15 max:600"': 'penalties = "no"',
    "address_max_failures = 20": "address_max_failures = 0",
}


def rewind_totp_step(store: Store, user_id: int, step: int) -> None:
    """TEST ONLY: let ``step`` be accepted once more for this user.

    If the user's last accepted TOTP step is ``step`` or later, set it to
    ``step - 1``; otherwise change nothing. No node code path does this: it
    reaches into the store's backend, which only the harness may do.
    """
    with store._db.transaction(write=True) as tx:
        tx.run(
            "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step >= ?",
            [step - 1, user_id, step],
        )


@dataclass
class Contractor:
    """A user with a key pair on disk and the TOTP secret, able to produce fresh codes."""

    name: str
    key_path: Path
    secret: str
    user: User
    harness: BastionHarness

    def next_code(self) -> str:
        """The code of the current step, made usable again for this user's next login.

        The node accepts each step once per user (the replay guard). Rather than
        sleep up to 30 s for a fresh step, the harness rewinds the user's stored
        last-accepted step just below the current one (test-only, through the
        state store it shares with the node). The node's rule is untouched: a
        test that reuses a code it was given still meets the guard.
        """
        step = time_step(time.time())
        rewind_totp_step(self.harness.store, self.user.id, step)
        return code_for_step(self.secret, step)

    def wrong_code(self) -> str:
        """A code that matches no step near now."""
        near = {code_for_step(self.secret, time_step(time.time()) + d) for d in range(-3, 4)}
        for candidate in ("000000", "123456", "999999", "314159"):
            if candidate not in near:
                return candidate
        raise AssertionError("unlucky secret")

    def ssh_env(self, code: str | None = None) -> dict[str, str]:
        """Environment that makes OpenSSH answer the TOTP prompt from a file."""
        code_file = self.harness.dir / f"code-{self.name}"
        code_file.write_text((code if code is not None else self.next_code()) + "\n")
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "SSH_AUTH_SOCK")}
        env.update(
            SSH_ASKPASS=str(self.harness.askpass),
            SSH_ASKPASS_REQUIRE="force",
            BASTION_TEST_CODE_FILE=str(code_file),
        )
        return env

    def ssh_args(self, login_name: str | None = None) -> list[str]:
        """Common OpenSSH options: this user's key only, the bastion's pinned host key."""
        return [
            "-F",
            "/dev/null",
            "-i",
            str(self.key_path),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.harness.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "PreferredAuthentications=publickey,keyboard-interactive",
            "-o",
            "LogLevel=INFO",
            "-o",
            "ConnectTimeout=10",
        ]

    def ssh(
        self,
        *remote: str,
        target: str | None = None,
        login: str | None = None,
        code: str | None = None,
        stdin: bytes | None = None,
        extra: list[str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run stock ``ssh`` through the bastion and wait for it."""
        user = self.login_name(target, login)
        cmd = [
            "ssh",
            *self.ssh_args(),
            *(extra or []),
            "-p",
            str(self.harness.port),
            f"{user}@127.0.0.1",
            *remote,
        ]
        return subprocess.run(
            cmd,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            env=self.ssh_env(code),
            timeout=timeout,
        )

    def ssh_stream(
        self, target: str, *remote: str, stderr: int = subprocess.PIPE
    ) -> subprocess.Popen[bytes]:
        """Stock ``ssh`` through the bastion, left running (output on a pipe, no stdin)."""
        return subprocess.Popen(
            [
                "ssh",
                *self.ssh_args(),
                "-p",
                str(self.harness.port),
                f"{self.login_name(target)}@127.0.0.1",
                *remote,
            ],
            env=self.ssh_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )

    def ssh_pty(
        self, target: str | None, *remote: str, rows: int = 24, cols: int = 80, timeout: float = 30
    ) -> pexpect.spawn[bytes]:
        """Stock ``ssh -tt`` through the bastion on a real pseudo-terminal (pexpect)."""
        args = [
            *self.ssh_args(),
            "-tt",
            "-p",
            str(self.harness.port),
            f"{self.login_name(target)}@127.0.0.1",
            *remote,
        ]
        return pexpect.spawn(
            "ssh", args, env=self.ssh_env(), timeout=timeout, dimensions=(rows, cols)
        )

    def login_name(self, target: str | None = None, login: str | None = None) -> str:
        """USER[%TARGET[%LOGIN]]."""
        parts = [self.name] + ([target] if target else []) + ([login] if login else [])
        return "%".join(parts)


@dataclass
class BastionHarness:
    """A running bastion node with two OpenSSH targets."""

    dir: Path
    config: Config
    store: Store
    ca: CertificateAuthority
    port: int
    targets: dict[str, OpenSSHTarget]
    proc: subprocess.Popen[bytes] | None = None
    fsize_limit: int | None = None
    pg_port: int = 0
    """The node's PostgreSQL listener (TLS required, self-signed by ``bastion init``)."""
    askpass: Path = field(init=False)
    known_hosts: Path = field(init=False)
    _counter: int = 0

    def __post_init__(self) -> None:
        self.askpass = self.dir / "askpass"
        self.askpass.write_text('#!/bin/sh\ncat "$BASTION_TEST_CODE_FILE"\n')
        os.chmod(self.askpass, 0o755)  # noqa: S103  holds no secret
        host_pub = self.config.ssh.host_key.with_name(self.config.ssh.host_key.name + ".pub")
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub.read_text().strip()}\n")

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start ``bastion serve`` and wait for its port."""
        require_integration("a bastion node (bastion serve)")
        log = open(self.dir / "bastion.log", "ab")
        limit = self.fsize_limit

        def limit_file_size() -> None:  # simulates a full disk for the node's writes
            if limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        argv = [
            sys.executable,
            "-m",
            "bastion",
            "serve",
            "--config",
            str(self.config.path),
            "--log-level",
            "DEBUG",
        ]
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=limit_file_size if limit is not None else None,
        )
        log.close()
        # the SSH port, and the metrics port that tests read gauges from
        ports = [self.port] + [m[1] for m in [self.config.metrics_listen] if m is not None]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bastion exited:\n{self.log()}")
            try:
                for port in ports:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"bastion did not listen on {ports}:\n{self.log()}")

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Stop everything this harness started."""
        self.stop()
        for t in self.targets.values():
            t.stop()
        self.store.close()

    def log(self) -> str:
        """The node's log so far."""
        try:
            return (self.dir / "bastion.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- fixtures' helpers ----------------------------------------------------------------

    def contractor(self, prefix: str = "c", role: Role = Role.CONTRACTOR) -> Contractor:
        """A fresh user (own key, own TOTP secret, so replay guards never collide)."""
        self._counter += 1
        name = f"{prefix}{self._counter}-{os.getpid() % 1000}"
        key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
        key_path = self.dir / f"{name}_ed25519"
        key_path.write_bytes(key.export_private_key("openssh"))
        os.chmod(key_path, 0o600)
        key_path.with_suffix(".pub").write_bytes(key.export_public_key("openssh"))
        secret = new_totp_secret()
        user = self.store.add_user(
            name, role, [key.export_public_key("openssh").decode().strip()], secret, time.time()
        )
        return Contractor(name=name, key_path=key_path, secret=secret, user=user, harness=self)

    def target(self, name: str) -> Target:
        """A target row."""
        t = self.store.get_target(name)
        assert t is not None
        return t

    def grant(
        self,
        who: Contractor,
        target: str,
        *,
        start: float | None = None,
        seconds: float = 3600,
        options: tuple[str, ...] = (),
        login: str = LOGIN,
    ) -> Grant:
        """Grant ``who`` access to ``target`` (default: from now for an hour)."""
        now = time.time()
        t = self.target(target)
        begin = now if start is None else start
        return self.store.add_grant(
            user_id=who.user.id,
            target_id=t.id,
            login=login,
            credset=None,
            not_before=begin,
            not_after=begin + seconds,
            reason="test",
            requested_by="test",
            approved_by="test",
            options=options,
            now=now,
        )

    def audit(self, actor: str, action: str | None = None) -> list[Any]:
        """Audit rows by ``actor`` (optionally one action prefix)."""
        return self.store.list_audit(actor=actor, action_prefix=action)

    def wait_audit(self, actor: str, action: str, timeout: float = 10) -> list[Any]:
        """Audit rows written asynchronously (after the client already returned)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.audit(actor, action)
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def gauge(self, name: str) -> float:
        """One gauge from the node's ``/metrics`` (``bastion_`` prefix implied)."""
        gauges = self.gauges()
        assert name in gauges, f"no gauge {name} in {gauges}"
        return gauges[name]

    def gauges(self) -> dict[str, float]:
        """Every gauge of one ``/metrics`` scrape (one render: read together, consistent)."""
        listen = self.config.metrics_listen
        assert listen is not None
        with urllib.request.urlopen(f"http://{listen[0]}:{listen[1]}/metrics", timeout=5) as r:
            text = r.read().decode()
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("bastion_") and not line.startswith("bastion_events_total"):
                name, value = line.split()
                found[name.removeprefix("bastion_")] = float(value)
        return found

    def control_socket(self, timeout: float = 10) -> str:
        """The node's control socket path, once the node has created it."""
        path = self.config.control.socket
        assert path is not None
        wait_until(path.exists, timeout, f"the node's control socket {path}")
        return str(path)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the ``bastion`` CLI against this node's config."""
        return subprocess.run(
            [sys.executable, "-m", "bastion", *args, "--config", str(self.config.path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "BASTION_ACTOR": "test-admin"},
        )


def reports_size(child: pexpect.spawn[bytes], size: str) -> bool:
    """Run ``stty size`` in ``child``'s shell; True if it printed ``size`` ("ROWS COLS") within 1 s.

    For ``wait_until`` after a resize: ssh relays SIGWINCH on its own time.
    """
    child.sendline("stty size")
    return child.expect([size, pexpect.TIMEOUT], timeout=1) == 0


def make_harness(
    directory: Path,
    state_url: str | None = None,
    fsize_limit: int | None = None,
    overrides: dict[str, str] | None = None,
) -> BastionHarness:
    """Initialise a bastion dir, start two targets and the node."""
    require_integration("OpenSSH sshd targets and a bastion node")
    port = free_port()
    metrics_port = free_port()
    pg_port = free_port()
    config = init_dir(directory, f"127.0.0.1:{port}", state_url, "test-node")
    text = config.path.read_text()
    metrics = {
        'listen = ""': f'listen = "127.0.0.1:{metrics_port}"',
        'listen = "0.0.0.0:6432"': f'listen = "127.0.0.1:{pg_port}"',
    }
    for old, new in {**TEST_CONFIG_OVERRIDES, **metrics, **(overrides or {})}.items():
        assert old in text, f"config template has no line {old!r}"
        text = text.replace(old, new)
    config.path.write_text(text)
    config = load_config(config.path)
    ca = CertificateAuthority.load(config.ca_key)
    store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
    targets: dict[str, OpenSSHTarget] = {}
    try:
        for name in ("web1", "web2"):
            t = OpenSSHTarget(
                directory / name, ca.public_key_line(), default_principal(name), [LOGIN]
            )
            t.start()
            targets[name] = t
            store.add_target(
                name=name,
                kind=TargetKind.SSH,
                host=t.host,
                port=t.port,
                logins=[LOGIN],
                principal=default_principal(name),
                host_keys=[t.host_key_line],
                now=time.time(),
            )
        harness = BastionHarness(
            directory, config, store, ca, port, targets, fsize_limit=fsize_limit, pg_port=pg_port
        )
        harness.start()
    except BaseException:
        for t in targets.values():
            t.stop()
        store.close()
        raise
    return harness
