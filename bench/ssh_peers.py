"""The paths the SSH benchmark compares, and the servers behind them.

Every peer turns a remote command into one fresh ``ssh`` login to the same OpenSSH
target: directly, through an OpenSSH jump host (ProxyJump), through ``bastion
serve``, or through the asyncssh floor relay (``ssh_floor.py``). Also here: the
sshds and the node, set up as the benchmark needs them (production config,
``MaxStartups 1000``, certificates from the bastion's CA).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncssh

from bastion.ca import CertificateAuthority
from bastion.openssh_target import OpenSSHTarget, free_port
from bastion.target_setup import default_principal
from node import LOGIN, BastionHarness, Contractor, make_harness, production_config
from ssh_procs import err_tail, spawn, wait_listening

TARGET = "bench"
FLOOR = "asyncssh floor"
SAME_KEX = "curve25519-sha256"
FLOOR_SCRIPT = Path(__file__).with_name("ssh_floor.py")


# --- peers ---------------------------------------------------------------------------


def client_env() -> dict[str, str]:
    """The environment every client gets (no agent, no X: keys come from files only)."""
    return {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "SSH_AUTH_SOCK")}


class Peer:
    """How to run ``ssh`` to the target through one path."""

    name = ""

    def command(
        self, remote: str, tty_: bool = False, same_kex: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        """argv and environment of one fresh ``ssh`` login running ``remote``.

        ``same_kex`` forces curve25519-sha256 on every hop: what asyncssh (so the
        bastion, on both of its legs) negotiates anyway, while OpenSSH 9.x prefers
        sntrup761x25519-sha512 between its own client and server.
        """
        raise NotImplementedError

    def memory_root(self) -> int:
        """The pid whose process tree is this path's hop (for memory per session)."""
        raise NotImplementedError

    def before_spawn(self, env: dict[str, str]) -> None:
        """Called right before a prepared command is started (nothing to do by default)."""

    def cpu_pid(self) -> int | None:
        """The relay process whose CPU use is reported while streaming (none for OpenSSH)."""
        return None


class OpenSSHPeer(Peer):
    """direct or ProxyJump: a host alias in our ssh_config."""

    def __init__(
        self, name: str, configs: tuple[Path, Path], host: str, hop: OpenSSHTarget
    ) -> None:
        self.name = name
        self.configs = configs
        self.host = host
        self.hop = hop

    def command(
        self, remote: str, tty_: bool = False, same_kex: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        # ProxyJump's inner ssh gets -F but no -o: the KEX choice must be in the file.
        config = self.configs[1 if same_kex else 0]
        argv = ["ssh", "-F", str(config), *(["-tt"] if tty_ else []), self.host, remote]
        return argv, client_env()

    def memory_root(self) -> int:
        return sshd_pid(self.hop)


class BastionPeer(Peer):
    """Through ``bastion serve``: a new user (key + TOTP secret) and grant per login."""

    name = "bastion"

    def __init__(self, harness: BastionHarness) -> None:
        self.harness = harness
        self.users: list[str] = []
        self._by_code_file: dict[str, Contractor] = {}

    def command(
        self, remote: str, tty_: bool = False, same_kex: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        h = self.harness
        who = h.contractor("bench")
        h.grant(who, TARGET, seconds=4 * 3600)
        self.users.append(who.name)
        env = who.ssh_env()
        self._by_code_file[env["BASTION_TEST_CODE_FILE"]] = who
        argv = [
            "ssh",
            *who.ssh_args(),
            *(["-o", f"KexAlgorithms={SAME_KEX}"] if same_kex else []),
            "-p",
            str(h.port),
            *(["-tt"] if tty_ else []),
            f"{who.name}%{TARGET}@127.0.0.1",
            remote,
        ]
        return argv, env

    def memory_root(self) -> int:
        assert self.harness.proc is not None
        return self.harness.proc.pid

    def cpu_pid(self) -> int | None:
        return self.memory_root()

    def before_spawn(self, env: dict[str, str]) -> None:
        """A code for the current step: one prepared long before may be out of the window."""
        path = env["BASTION_TEST_CODE_FILE"]
        who = self._by_code_file[path]
        Path(path).write_text(who.next_code() + "\n")


# --- the asyncssh floor: the cheapest asyncssh hop, for reference ------------------------


class FloorPeer(Peer):
    """``ssh`` through a minimal asyncssh relay (no recording, no checks, no bookkeeping).

    The relay runs in its own process (``ssh_floor.py SPEC``), on
    the node's event loop and with the node's asyncssh settings: the same ciphers on
    each leg, no CBC chaff, no line editor, target output coalesced per loop pass. It
    logs in to the target with the key and certificate the direct peer uses and pipes
    the session both ways: PTY request, resizes, EOF, exit status, flow control. It
    shows the lowest echo latency and the best throughput an asyncssh hop reaches on
    this machine; the bastion's distance to it is what recording and checks cost.
    """

    name = FLOOR

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.host_key = work / "floor_host_key"
        self.client_key = work / "floor_client_key"
        for path in (self.host_key, self.client_key):
            asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
            os.chmod(path, 0o600)
        self.proc: subprocess.Popen[bytes] | None = None
        self.configs: tuple[Path, Path] | None = None

    def host_key_line(self) -> str:
        key = asyncssh.read_private_key(str(self.host_key))
        return key.export_public_key().decode().strip()

    def start(self, target: OpenSSHTarget, target_key: Path, known_hosts: Path) -> None:
        """Start the relay process and wait until it listens."""
        spec = {
            "port": self.port,
            "host_key": str(self.host_key),
            "client_key": str(self.client_key),
            "target_host": target.host,
            "target_port": target.port,
            "login": LOGIN,
            "key": str(target_key),
            "known_hosts": str(known_hosts),
        }
        spec_path = self.work / "floor.json"
        spec_path.write_text(json.dumps(spec))
        log = open(self.work / "floor.log", "wb")  # handed to the child
        try:
            argv = [sys.executable, str(FLOOR_SCRIPT), str(spec_path)]
            self.proc = spawn(argv, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        wait_listening(
            self.proc,
            self.port,
            "asyncssh floor",
            lambda: f"asyncssh floor exited: {err_tail(self.work / 'floor.log')}",
        )

    def command(
        self, remote: str, tty_: bool = False, same_kex: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        assert self.configs is not None
        config = self.configs[1 if same_kex else 0]
        argv = ["ssh", "-F", str(config), *(["-tt"] if tty_ else []), "floor", remote]
        return argv, client_env()

    def memory_root(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_pid(self) -> int | None:
        return self.memory_root()


# --- the servers behind them ----------------------------------------------------------


def sshd_pid(target: OpenSSHTarget) -> int:
    """The listening sshd's pid (``sshd -D`` writes its PidFile)."""
    return int((target.workdir / "sshd.pid").read_text().split()[0])


def issue_files(ca: CertificateAuthority, principal: str, base: Path, forwarding: bool) -> Path:
    """Key + certificate files for ``principal`` (valid 4 hours); returns the key path."""
    now = time.time()
    issued = ca.issue(
        principal=principal,
        key_id=f"bench {principal}",
        now=now,
        lifetime=4 * 3600,
        backdate=60,
        not_after=now + 4 * 3600,
        source_addresses=(),
        permit_pty=True,
        permit_port_forwarding=forwarding,
    )
    key, cert = issued.openssh_files()
    base.write_bytes(key)
    os.chmod(base, 0o600)
    base.with_name(base.name + "-cert.pub").write_bytes(cert)
    return base


def ssh_configs(
    work: Path,
    target: OpenSSHTarget,
    jump: OpenSSHTarget,
    ca: CertificateAuthority,
    floor: FloorPeer,
) -> tuple[Path, Path]:
    """ssh_config files with hosts ``direct``, ``jump``, ``viajump`` (ProxyJump jump) and
    ``floor`` (the asyncssh floor relay).

    The second file is the same with KexAlgorithms forced to curve25519-sha256.
    """
    key = issue_files(ca, default_principal(TARGET), work / "target_key", False)
    # The jump host must allow -W: a certificate without permit-port-forwarding forbids it.
    jkey = issue_files(ca, default_principal("jump"), work / "jump_key", True)
    known = work / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{target.port} {target.host_key_line}\n"
        f"[127.0.0.1]:{jump.port} {jump.host_key_line}\n"
        f"[127.0.0.1]:{floor.port} {floor.host_key_line()}\n"
    )
    text = f"""Host direct viajump
  HostName 127.0.0.1
  Port {target.port}
  IdentityFile {key}
  CertificateFile {key}-cert.pub
Host viajump
  ProxyJump jump
Host jump
  HostName 127.0.0.1
  Port {jump.port}
  IdentityFile {jkey}
  CertificateFile {jkey}-cert.pub
Host floor
  HostName 127.0.0.1
  Port {floor.port}
  IdentityFile {floor.client_key}
Host *
  User {LOGIN}
  IdentitiesOnly yes
  UserKnownHostsFile {known}
  StrictHostKeyChecking yes
  PreferredAuthentications publickey
  LogLevel INFO
  ConnectTimeout 30
"""
    stock, same = work / "ssh_config", work / "ssh_config_curve25519"
    stock.write_text(text)
    same.write_text(text + f"  KexAlgorithms {SAME_KEX}\n")
    return stock, same


def start_sshd(work: Path, ca: CertificateAuthority, name: str) -> OpenSSHTarget:
    """An OpenSSH sshd trusting the CA; MaxStartups raised so a login ramp is never dropped."""
    t = OpenSSHTarget(
        work / name,
        ca.public_key_line(),
        default_principal(name),
        [LOGIN],
        extra_config=["MaxStartups 1000"],
    )
    t.start()
    return t


def start_node(work: Path) -> BastionHarness:
    """A node from the test harness with the production config values and log level."""
    h = make_harness(work)
    try:
        production_config(h)
        restart_node_info_logging(h)
    except BaseException:
        h.close()
        raise
    return h


def restart_node_info_logging(h: BastionHarness) -> None:
    """(Re)start the node at the production log level (the harness runs it with DEBUG)."""
    h.stop()
    log = open(h.dir / "bastion.log", "ab")  # handed to the child
    try:
        argv = [sys.executable, "-m", "bastion", "serve", "--config", str(h.config.path)]
        h.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
    wait_listening(h.proc, h.port, "bastion", lambda: f"bastion exited:\n{h.log()[-3000:]}")


def rotated(items: Sequence[Peer], i: int) -> list[Peer]:
    """``items`` starting at position i (so no peer always goes first)."""
    k = i % len(items)
    return [*items[k:], *items[:k]]
