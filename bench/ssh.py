"""Side-by-side SSH benchmark: bastion against OpenSSH direct and OpenSSH ProxyJump.

The peers, all on loopback and all started by this script, reach the same
OpenSSH sshd target (``bench``, trusting the bastion's user CA) with stock ``ssh``:

* **direct** - ``ssh`` to the target with a certificate from the bastion CA for the
  target's principal (``-i KEY`` + ``CertificateFile``);
* **ProxyJump** - ``ssh -J``: through a second OpenSSH sshd acting as the jump
  host (same CA, its own principal and certificate; an ``ssh_config`` file gives
  each hop its certificate);
* **bastion** - ``bastion serve`` (a real subprocess from the test harness,
  recording every session as always), public key + TOTP answered through
  SSH_ASKPASS. TOTP codes are single use per 30 s step per user, so every bastion
  connection is made by a fresh user with its own grant (created before the clock
  starts).
* **asyncssh floor** - in the throughput and echo figures only: a minimal asyncssh
  relay with no recording, run by this script in its own process (``FloorPeer``),
  with the node's event loop, ciphers and asyncssh settings. It logs in to the
  target with the direct peer's key + certificate and pipes the session; its
  ratio to ProxyJump is the best an asyncssh hop does on this machine.

Figures (every one interleaves the peers round by round, so the load of a busy
machine falls on all of them alike; ratios are between medians of the same run):

1. setup time: wall time of ``ssh ... true``, a full login each time;
2. PTY throughput: ``ssh -tt ... 'head -c 256M /dev/zero'`` and ``cat`` of a ~200 MB
   log file with ANSI colours, read to the end; MB/s from the first byte received
   to the last (login excluded);
3. keystroke echo: one byte at a time to ``dd bs=1 count=N`` in a raw remote PTY
   (a ``cat`` that exits by itself after N bytes, so the session ends cleanly;
   ``head -c`` would hold the bytes in stdio), the local ``ssh`` in a raw local PTY;
   p50 and p99 of the time until the byte comes back;
4. concurrency: N sessions (``ssh ... 'echo up; read x; seq 1 2000'``) opened with at
   most ``--ramp`` logins in flight, held idle until all are up (memory sampled
   then), released at once to produce their output together; each must exit 0 with
   the exact output. For the bastion every recording of the run is then verified
   against the final hash the state store kept (as ``bastion verify SESSION_ID``).
   Memory: the bastion's VmRSS, and per idle session the growth of the summed USS
   of the hop's process tree (the bastion process; the jump host's sshd tree for
   ProxyJump; the target's sshd tree, remote shells included, for direct).

The node runs with the production config values and log level (the harness's
test-only overrides are undone) and is restarted before the concurrency phase, so
its memory baseline is a fresh process after two warm-up logins. Both sshds have
``MaxStartups 1000`` so that the login ramp is never dropped at random.

Run from the repository root (it imports the test harness from ``tests.peers``)::

    PYTHONPATH=. python bench/ssh.py [--quick] [--sessions 500]

Progress goes to stderr, the tables (markdown) to stdout. Every process and the
temporary directory are removed at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pwd
import random
import resource
import select
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from bastion import event_loop
from bastion.ca import CertificateAuthority
from bastion.cli_recordings import check_session_recording, node_public_key, recording_path
from bastion.config import SshConfig
from bastion.openssh_target import OpenSSHTarget, free_port
from bastion.ssh.upstream import UPSTREAM_CIPHERS, drop_cbc_chaff
from bastion.store.models import TargetKind
from bastion.target_setup import default_principal

try:
    from tests.peers.bastion_node import (
        LOGIN,
        TEST_CONFIG_OVERRIDES,
        BastionHarness,
        Contractor,
        make_harness,
    )
except ModuleNotFoundError as exc:  # pragma: no cover - run from the wrong place
    raise SystemExit(
        f"{exc}: run from the repository root as 'PYTHONPATH=. python bench/ssh.py'"
    ) from exc

TARGET = "bench"
FLOOR = "asyncssh floor"
PEERS = ("bastion", "direct", "ProxyJump")
RELAY_PEERS = ("bastion", FLOOR, "direct", "ProxyJump")
"""The peers of the throughput and echo figures (the floor has no login or concurrency
figure: its login is a plain key and it keeps no per-session state worth measuring)."""
SEQ_LINES = 2000
SAME_KEX = "curve25519-sha256"
EXPECTED_SEQ = b"up\n" + b"".join(b"%d\n" % i for i in range(1, SEQ_LINES + 1))
ECHO_WARMUP = 20


class BenchError(Exception):
    """A peer failed where it must not (the message says which and why)."""


@dataclass(frozen=True)
class Scale:
    """How big each measurement is (full run or --quick)."""

    setup_runs: int
    zero_mib: int
    text_mb: int
    stream_reps: int
    echo_samples: int
    sessions: int


FULL = Scale(
    setup_runs=15, zero_mib=256, text_mb=200, stream_reps=3, echo_samples=300, sessions=100
)
QUICK = Scale(setup_runs=7, zero_mib=64, text_mb=50, stream_reps=3, echo_samples=100, sessions=30)


def say(msg: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes this script started ---------------------------------------------------

_children: list[subprocess.Popen[bytes]] = []


def spawn(argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
    """Popen, remembered so that ``reap_all`` can end it on any exit path."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(argv, **kw)  # type: ignore[call-overload]
    _children.append(proc)
    return proc


def reap(proc: subprocess.Popen[bytes], timeout: float = 5) -> int:
    """Wait for a child (kill it after ``timeout``) and forget it.

    A blocking wait with a timer, not ``wait(timeout=)``: that polls with sleeps of up
    to 50 ms, which would round every measured time up to the next poll.
    """
    timer = threading.Timer(timeout, _kill, (proc,))
    timer.start()
    try:
        rc = proc.wait()
    finally:
        timer.cancel()
    if proc in _children:
        _children.remove(proc)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return rc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()


def reap_all() -> None:
    """Terminate every client process still running (by its own pid)."""
    for proc in list(_children):
        if proc.poll() is None:
            proc.terminate()
    for proc in list(_children):
        reap(proc, timeout=3)


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

    The relay runs in its own process (this script with ``--asyncssh-floor SPEC``), on
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
        log = open(self.work / "floor.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            argv = [sys.executable, __file__, "--asyncssh-floor", str(spec_path)]
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


def floor_relay_main(spec_path: str) -> None:
    """The asyncssh floor relay process (see ``FloorPeer``); runs until terminated."""
    spec = json.loads(Path(spec_path).read_text())
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    event_loop.run(_floor_serve(spec))


async def _floor_serve(spec: dict[str, object]) -> None:
    server_ciphers = SshConfig().ciphers
    key = asyncssh.read_private_key(str(spec["key"]))
    cert = asyncssh.read_certificate(str(spec["key"]) + "-cert.pub")
    client = asyncssh.read_private_key(str(spec["client_key"])).convert_to_public()
    tasks: set[asyncio.Task[None]] = set()

    class Up(asyncssh.SSHClientSession[bytes]):
        """Target output to the client, coalesced per loop pass as the node does (one
        write per pass instead of one per upstream packet; a lone small write, such as
        a keystroke's echo, goes out at once)."""

        exit_code: int | None = None

        def __init__(self, relay: Relay) -> None:
            self.relay = relay
            self.out: list[bytes] = []

        def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
            if datatype is not None or (not self.out and len(data) <= 256):
                self.flush()
                self.relay.chan.write(data, datatype)
                return
            if not self.out:
                asyncio.get_running_loop().call_soon(self.flush)
            self.out.append(data)

        def flush(self) -> None:
            if self.out:
                data = b"".join(self.out)
                self.out.clear()
                self.relay.chan.write(data)

        def eof_received(self) -> bool:
            self.flush()
            self.relay.chan.write_eof()
            return True

        def exit_status_received(self, status: int) -> None:
            self.exit_code = status

        def pause_writing(self) -> None:
            self.relay.chan.pause_reading()

        def resume_writing(self) -> None:
            self.relay.chan.resume_reading()

        def connection_lost(self, exc: Exception | None) -> None:
            self.flush()
            try:
                self.relay.chan.exit(255 if self.exit_code is None else self.exit_code)
            except OSError:
                pass

    class Relay(asyncssh.SSHServerSession[bytes]):
        chan: asyncssh.SSHServerChannel[bytes]

        def __init__(self) -> None:
            self.up: asyncssh.SSHClientChannel[bytes] | None = None
            self.conn: asyncssh.SSHClientConnection | None = None
            self.pty: tuple[str, tuple[int, int, int, int], dict[int, int]] | None = None
            self.command: str | None = None
            self.eof = False

        def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
            self.chan = chan

        def pty_requested(
            self, term_type: str, term_size: tuple[int, int, int, int], term_modes: object
        ) -> bool:
            self.pty = (term_type, term_size, dict(term_modes))  # type: ignore[call-overload]
            return True

        def shell_requested(self) -> bool:
            return True

        def exec_requested(self, command: str) -> bool:
            self.command = command
            return True

        def session_started(self) -> None:
            self.chan.pause_reading()  # input waits in asyncssh until the target is there
            task = asyncio.get_running_loop().create_task(self.connect())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def connect(self) -> None:
            try:
                conn = await asyncssh.connect(
                    str(spec["target_host"]),
                    int(str(spec["target_port"])),
                    username=str(spec["login"]),
                    client_keys=[(key, cert)],
                    known_hosts=str(spec["known_hosts"]),
                    config=None,
                    preferred_auth=["publickey"],
                    encoding=None,
                    encryption_algs=UPSTREAM_CIPHERS,
                )
                drop_cbc_chaff(conn, UPSTREAM_CIPHERS)
                self.conn = conn
                kwargs: dict[str, object] = {"encoding": None, "request_pty": False}
                if self.pty is not None:
                    term_type, term_size, modes = self.pty
                    kwargs.update(
                        request_pty="force",
                        term_type=term_type,
                        term_size=term_size,
                        term_modes=modes,
                    )
                self.up, _ = await conn.create_session(
                    lambda: Up(self),
                    self.command,
                    **kwargs,  # type: ignore[arg-type]
                )
            except (OSError, asyncssh.Error) as e:
                self.chan.write_stderr(f"floor: {e}\r\n".encode())
                self.chan.exit(255)
                return
            if self.eof:
                self.up.write_eof()
            self.chan.resume_reading()

        def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
            assert self.up is not None  # reading is paused until it is set
            self.up.write(data)

        def eof_received(self) -> bool:
            self.eof = True
            if self.up is not None:
                self.up.write_eof()
            return True

        def terminal_size_changed(self, width: int, height: int, pw: int, ph: int) -> None:
            if self.up is not None:
                self.up.change_terminal_size(width, height, pw, ph)

        def pause_writing(self) -> None:
            if self.up is not None:
                self.up.pause_reading()

        def resume_writing(self) -> None:
            if self.up is not None:
                self.up.resume_reading()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.conn is not None:
                self.conn.close()

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            drop_cbc_chaff(conn, server_ciphers)

        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return key.public_data == client.public_data

        def session_requested(self) -> Relay:
            return Relay()

    server = await asyncssh.create_server(
        Server,
        "127.0.0.1",
        int(str(spec["port"])),
        server_host_keys=[str(spec["host_key"])],
        encoding=None,
        line_editor=False,
        encryption_algs=list(server_ciphers),
    )
    async with server:
        await server.wait_closed()


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


def production_config(h: BastionHarness) -> None:
    """Undo the harness's test-only config values (faster time-box polling, short warnings)."""
    text = h.config.path.read_text()
    for default, test_value in TEST_CONFIG_OVERRIDES.items():
        text = text.replace(test_value, default)
    h.config.path.write_text(text)


def restart_node_info_logging(h: BastionHarness) -> None:
    """(Re)start the node at the production log level (the harness runs it with DEBUG)."""
    h.stop()
    log = open(h.dir / "bastion.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        argv = [sys.executable, "-m", "bastion", "serve", "--config", str(h.config.path)]
        h.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
    wait_listening(h.proc, h.port, "bastion", lambda: f"bastion exited:\n{h.log()[-3000:]}")


def wait_listening(
    proc: subprocess.Popen[bytes], port: int, what: str, exited: Callable[[], str]
) -> None:
    """Wait until ``proc`` accepts connections on ``port`` (BenchError if it dies or not)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(exited())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} did not listen")


# --- helpers ---------------------------------------------------------------------------


def rotated(items: Sequence[Peer], i: int) -> list[Peer]:
    """``items`` starting at position i (so no peer always goes first)."""
    k = i % len(items)
    return [*items[k:], *items[:k]]


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    x = (len(s) - 1) * p / 100
    lo = int(x)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (x - lo)


def err_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1500:]
    except FileNotFoundError:
        return ""


# --- 1. setup time -------------------------------------------------------------------


def measure_setup(
    peers: Sequence[Peer], runs: int, work: Path, same_kex: bool = False
) -> dict[str, list[float]]:
    """Wall seconds of ``ssh ... true`` per peer (one warm-up each, not counted)."""
    out: dict[str, list[float]] = {p.name: [] for p in peers}
    err = work / "setup.err"
    for i in range(runs + 1):
        for peer in rotated(peers, i):
            argv, env = peer.command("true", same_kex=same_kex)
            with open(err, "wb") as e:
                t0 = time.perf_counter()
                proc = spawn(argv, env=env, stdin=subprocess.DEVNULL, stdout=e, stderr=e)
                rc = reap(proc, timeout=60)
                dt = time.perf_counter() - t0
            if rc != 0:
                raise BenchError(f"{peer.name}: ssh ... true exited {rc}: {err_tail(err)}")
            if i > 0:
                out[peer.name].append(dt)
    return out


def remote_shell_start(runs: int = 7) -> float:
    """Median seconds of ``$SHELL -c true`` as sshd runs it for LOGIN (part of every login).

    bash sources ~/.bashrc when started by sshd (SSH_CLIENT set, shell level 1), so a
    heavy ~/.bashrc adds the same time to every peer's setup figure.
    """
    pw = pwd.getpwnam(LOGIN)
    env = {
        "HOME": pw.pw_dir,
        "USER": LOGIN,
        "LOGNAME": LOGIN,
        "SHELL": pw.pw_shell,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "SSH_CLIENT": "127.0.0.1 40000 22",
        "SSH_CONNECTION": "127.0.0.1 40000 127.0.0.1 22",
    }
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            [pw.pw_shell, "-c", "true"],
            env=env,
            cwd=pw.pw_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- 2. PTY throughput -----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream_once(peer: Peer, remote: str, expect: int, work: Path) -> tuple[float, float]:
    """MB/s of one ``ssh -tt`` run's output, first byte to last, and the share of one
    core that the peer's relay process (bastion, floor; else 0) used meanwhile."""
    cpu_pid = peer.cpu_pid()
    argv, env = peer.command(remote, tty_=True)
    err = work / "stream.err"
    with open(err, "wb") as e:
        proc = spawn(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=e)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    total = first_len = 0
    first = last = cpu0 = 0.0
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            break
        now = time.perf_counter()
        if not total:
            first, first_len = now, len(data)
            cpu0 = cpu_seconds(cpu_pid) if cpu_pid else 0.0
        total += len(data)
        last = now
    cpu1 = cpu_seconds(cpu_pid) if cpu_pid else 0.0
    rc = reap(proc, timeout=30)
    if rc != 0 or total < expect:
        raise BenchError(
            f"{peer.name}: {remote!r} exited {rc} after {total} bytes: {err_tail(err)}"
        )
    return (total - first_len) / (last - first) / 1e6, (cpu1 - cpu0) / (last - first)


def measure_stream(
    peers: Sequence[Peer], remote: str, expect: int, reps: int, work: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """MB/s per peer, and each relay process's core use during its own runs."""
    out: dict[str, list[float]] = {p.name: [] for p in peers}
    cores: dict[str, list[float]] = {p.name: [] for p in peers if p.cpu_pid()}
    for i in range(reps):
        for peer in rotated(peers, i):
            rate, core = stream_once(peer, remote, expect, work)
            out[peer.name].append(rate)
            if peer.name in cores:
                cores[peer.name].append(core)
            say(f"  {peer.name}: {rate:.0f} MB/s")
    return out, cores


def write_log_file(path: Path, size: int, seed: int = 7) -> int:
    """~``size`` bytes of journal-like lines with ANSI colours (16 MiB unique, repeated).

    A 16 MiB period is far beyond what the recorder's 256 KiB zstd frames can see, so the
    bastion compresses it as it would unique output. Returns the size written.
    """
    rng = random.Random(seed)
    units = [
        ("nginx", 36, 1033),
        ("app", 32, 2210),
        ("postgres", 34, 1201),
        ("sshd", 35, 4022),
        ("CRON", 33, 5120),
        ("systemd", 37, 1),
    ]
    paths = ["users", "orders", "items", "carts", "search", "auth/token", "reports"]
    levels = [("INFO", "32"), ("WARN", "1;33"), ("ERROR", "1;31"), ("DEBUG", "2")]
    msgs = [
        "request completed",
        "cache miss, loading from db",
        "slow query detected",
        "retrying upstream call",
        "session refreshed",
        "worker heartbeat",
    ]
    lines: list[str] = []
    n = 0
    t = 9 * 3600.0
    while n < 16 << 20:
        t += rng.expovariate(40.0)
        ts = f"Nov 29 {int(t) // 3600 % 24:02d}:{int(t) // 60 % 60:02d}:{int(t) % 60:02d}"
        unit, colour, pid = rng.choice(units)
        what = rng.random()
        if unit == "nginx" or what < 0.3:
            status = rng.choices((200, 201, 304, 404, 500), (80, 6, 8, 5, 1))[0]
            sc = "32" if status < 400 else ("33" if status < 500 else "1;31")
            msg = (
                f'10.0.{rng.randrange(8)}.{rng.randrange(2, 250)} - - "GET /api/v1/'
                f'{rng.choice(paths)}/{rng.randrange(100000)} HTTP/1.1" '
                f"\x1b[{sc}m{status}\x1b[0m {int(rng.lognormvariate(7, 1.2))} "
                f'"-" "Mozilla/5.0 (X11; Linux x86_64)"'
            )
        else:
            level, lc = rng.choices(levels, (85, 9, 2, 4))[0]
            msg = (
                f"\x1b[{lc}m{level:5}\x1b[0m {rng.choice(msgs)} "
                f"request_id={rng.getrandbits(32):08x} "
                f"duration_ms={rng.lognormvariate(3.0, 1.0):.1f}"
            )
        line = f"\x1b[2m{ts}\x1b[0m web1 \x1b[{colour}m{unit}[{pid}]\x1b[0m: {msg}\n"
        lines.append(line)
        n += len(line)
    block = "".join(lines).encode()
    written = 0
    with open(path, "wb") as f:
        while written < size:
            piece = block[: size - written]
            if len(piece) < len(block):
                piece = piece[: piece.rfind(b"\n") + 1] or piece
            f.write(piece)
            written += len(piece)
    return written


# --- 3. keystroke echo -----------------------------------------------------------------


class EchoSession:
    """``ssh -tt`` in a local raw PTY running ``dd bs=1 count=N`` in a raw remote PTY."""

    def __init__(self, peer: Peer, nbytes: int) -> None:
        self.peer = peer
        remote = f"stty raw -echo; printf READY; exec dd bs=1 count={nbytes} status=none"
        argv, env = peer.command(remote, True)
        master, slave = os.openpty()
        tty.setraw(slave)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        try:
            self.proc = spawn(argv, env=env, stdin=slave, stdout=slave, stderr=slave)
        finally:
            os.close(slave)
        self.fd = master
        self.buf = b""
        self._wait_for(b"READY", 60)

    def _wait_for(self, token: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while token not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.peer.name}: echo session: no {token!r} in {self.buf!r}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    raise BenchError(f"{self.peer.name}: echo session ended: {self.buf!r}")
                self.buf += data
        self.buf = self.buf[self.buf.index(token) + len(token) :]

    def sample(self, byte: bytes) -> float:
        """Seconds from writing ``byte`` to reading it back."""
        t0 = time.perf_counter()
        os.write(self.fd, byte)
        self._wait_for(byte, 10)
        return time.perf_counter() - t0

    def close(self) -> int:
        rc = reap(self.proc, timeout=10)
        os.close(self.fd)
        return rc


def measure_echo(peers: Sequence[Peer], samples: int) -> dict[str, list[float]]:
    """Echo round trips, one byte per peer per round (peers interleaved)."""
    rng = random.Random(3)
    total = ECHO_WARMUP + samples
    sessions = [EchoSession(p, total) for p in peers]
    out: dict[str, list[float]] = {p.name: [] for p in peers}
    try:
        for i in range(total):
            byte = bytes([97 + i % 26])
            k = i % len(sessions)
            order = sessions[k:] + sessions[:k]
            for s in order:
                dt = s.sample(byte)
                if i >= ECHO_WARMUP:
                    out[s.peer.name].append(dt)
                time.sleep(rng.uniform(0.002, 0.008))
    finally:
        codes = {s.peer.name: s.close() for s in sessions}
    bad = {k: v for k, v in codes.items() if v != 0}
    if bad:
        raise BenchError(f"echo sessions exited non-zero: {bad}")
    return out


# --- 4. concurrency and memory -----------------------------------------------------------


def _proc_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _status_kib(path: str, field_: str) -> int:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(field_.encode()):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_uss_kib(root: int) -> int:
    """Summed USS (private pages) of ``root`` and all its descendants.

    What each new session adds: a forked sshd child's pages still shared with its
    parent or siblings cost nothing extra. (PSS would also move with unrelated
    processes that map the same libraries, e.g. other Pythons on a busy machine.)
    """
    total = 0
    for pid in _proc_tree(root):
        rollup = f"/proc/{pid}/smaps_rollup"
        total += _status_kib(rollup, "Private_Clean:") + _status_kib(rollup, "Private_Dirty:")
    return total


def rss_kib(pid: int) -> int:
    return _status_kib(f"/proc/{pid}/status", "VmRSS:")


@dataclass
class Conc:
    """One peer's concurrency run."""

    n: int
    up: int = 0
    completed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    uss_before: int = 0
    uss_idle: int = 0
    rss_before: int = 0
    rss_idle: int = 0
    rss_peak: int = 0
    ramp_seconds: float = 0.0
    burst_seconds: float = 0.0

    @property
    def kib_per_session(self) -> float:
        return (self.uss_idle - self.uss_before) / max(self.up, 1)


@dataclass
class _Sess:
    proc: subprocess.Popen[bytes]
    out: bytearray = field(default_factory=bytearray)
    up: bool = False
    eof: bool = False


def measure_concurrency(peer: Peer, n: int, ramp: int, work: Path, bastion_pid: int) -> Conc:
    """N sessions held open idle, then all released at once (see the module docstring)."""
    res = Conc(n=n)
    cmds = [peer.command("echo up; read x; seq 1 2000") for _ in range(n)]
    root = peer.memory_root()
    time.sleep(1)
    res.uss_before = tree_uss_kib(root)
    res.rss_before = rss_kib(bastion_pid)
    sel = selectors.DefaultSelector()
    sessions: list[_Sess] = []
    err = open(work / f"conc-{peer.name}.err", "wb")  # noqa: SIM115 - closed below
    connecting = 0
    todo = list(cmds)
    t0 = time.monotonic()
    try:
        # Ramp: at most `ramp` logins in flight; a session counts as up at its "up" line.
        while todo or connecting:
            while todo and connecting < ramp:
                argv, env = todo.pop(0)
                peer.before_spawn(env)
                p = spawn(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
                assert p.stdout is not None
                s = _Sess(p)
                sessions.append(s)
                sel.register(p.stdout, selectors.EVENT_READ, s)
                connecting += 1
            for key, _ in sel.select(timeout=1.0):
                s = key.data
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    s.eof = True
                    if not s.up:
                        connecting -= 1
                    continue
                s.out += data
                if not s.up and b"up\n" in s.out:
                    s.up = True
                    res.up += 1
                    connecting -= 1
            if time.monotonic() - t0 > 60 + n:
                raise BenchError(f"{peer.name}: ramp of {n} sessions did not finish")
        res.ramp_seconds = time.monotonic() - t0
        # All up and idle: sample the hop's memory.
        time.sleep(1.0)
        res.uss_idle = max(tree_uss_kib(root) for _ in range(3))
        res.rss_idle = rss_kib(bastion_pid)
        res.rss_peak = res.rss_idle
        # Release every session at once.
        t1 = time.monotonic()
        for s in sessions:
            assert s.proc.stdin is not None
            try:
                s.proc.stdin.write(b"go\n")
                s.proc.stdin.close()
            except OSError:
                pass
        last_sample = 0.0
        while any(not s.eof for s in sessions):
            for key, _ in sel.select(timeout=0.2):
                s = key.data
                data = os.read(key.fd, 65536)
                if data:
                    s.out += data
                else:
                    sel.unregister(key.fileobj)
                    s.eof = True
            if time.monotonic() - last_sample > 0.2:
                res.rss_peak = max(res.rss_peak, rss_kib(bastion_pid))
                last_sample = time.monotonic()
            if time.monotonic() - t1 > 120:
                raise BenchError(f"{peer.name}: sessions still running after 120 s")
        res.burst_seconds = time.monotonic() - t1
        for i, s in enumerate(sessions):
            rc = reap(s.proc, timeout=30)
            if rc == 0 and bytes(s.out) == EXPECTED_SEQ:
                res.completed += 1
            else:
                res.failed += 1
                res.failures.append(f"#{i}: exit {rc}, {len(s.out)} bytes")
        res.failed += n - len(sessions)
    finally:
        sel.close()
        err.close()
        for s in sessions:
            if s.proc.poll() is None:
                s.proc.terminate()
            reap(s.proc)
    return res


# --- recordings --------------------------------------------------------------------------


@dataclass
class Verified:
    total: int = 0
    intact: int = 0
    problems: list[str] = field(default_factory=list)


def verify_recordings(h: BastionHarness, users: Iterable[str], timeout: float = 120) -> Verified:
    """Every session of ``users``: ended, then its recording verified against the store."""
    store, config = h.store, h.config
    key = node_public_key(config)
    wanted = set(users)
    deadline = time.monotonic() + timeout
    while True:
        sessions = [
            s for s in store.list_sessions(target=TARGET, limit=100_000) if s.user_name in wanted
        ]
        open_ = [s for s in sessions if s.ended_at is None or s.final_hash is None]
        if not open_ or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    res = Verified(total=len(sessions))
    for s in sessions:
        verdict = check_session_recording(s, recording_path(config, s), key)
        if verdict.status == "intact" and s.final_hash is not None:
            res.intact += 1
        else:
            res.problems.append(f"{s.id} ({s.user_name}): {verdict.line}")
    return res


# --- report ------------------------------------------------------------------------------


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table with the columns padded for reading in a terminal."""
    body = [list(head), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in body) for i in range(len(head))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def verdict(ratio: float, target: float, higher_is_better: bool) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "met" if ok else "**missed**"


@dataclass
class Results:
    scale: Scale
    ramp: int
    setup: dict[str, list[float]] = field(default_factory=dict)
    setup_same_kex: dict[str, list[float]] = field(default_factory=dict)
    shell_start: float = 0.0
    zero: dict[str, list[float]] = field(default_factory=dict)
    text: dict[str, list[float]] = field(default_factory=dict)
    text_bytes: int = 0
    zero_cpu: dict[str, list[float]] = field(default_factory=dict)
    text_cpu: dict[str, list[float]] = field(default_factory=dict)
    echo: dict[str, list[float]] = field(default_factory=dict)
    conc: dict[str, Conc] = field(default_factory=dict)
    conc_verified: Verified | None = None
    all_verified: Verified | None = None


def summary(r: Results) -> str:
    rows: list[list[str]] = []
    med = statistics.median

    def add(
        figure: str,
        data: dict[str, list[float]],
        fmt: Callable[[float], str],
        stat: Callable[[list[float]], float],
        target: float,
        higher: bool,
    ) -> None:
        vals = {p: stat(data[p]) for p in RELAY_PEERS if p in data}
        ratio = vals["bastion"] / vals["ProxyJump"]
        floor = f"{vals[FLOOR] / vals['ProxyJump']:.2f}x" if FLOOR in vals else ""
        rel = "≥" if higher else "≤"
        rows.append(
            [
                figure,
                *(fmt(vals[p]) if p in vals else "-" for p in RELAY_PEERS),
                f"{ratio:.2f}x",
                floor,
                f"{rel} {target:.1f}x",
                verdict(ratio, target, higher),
            ]
        )

    def ms(v: float) -> str:
        return f"{v * 1000:.0f} ms"

    def ms1(v: float) -> str:
        return f"{v * 1000:.2f} ms"

    def mbs(v: float) -> str:
        return f"{v:.0f} MB/s"

    def p99(v: list[float]) -> float:
        return percentile(v, 99)

    s = r.scale
    add(f"setup, `ssh … true`, stock (median of {s.setup_runs})", r.setup, ms, med, 1.0, False)
    add(
        f"setup, `ssh … true`, {SAME_KEX} everywhere (median of {s.setup_runs})",
        r.setup_same_kex,
        ms,
        med,
        1.0,
        False,
    )
    add(
        f"PTY throughput, `head -c {s.zero_mib}M /dev/zero` (median of {s.stream_reps})",
        r.zero,
        mbs,
        med,
        1.0,
        True,
    )
    add(
        f"PTY throughput, `cat` {r.text_bytes / 1e6:.0f} MB coloured log "
        f"(median of {s.stream_reps})",
        r.text,
        mbs,
        med,
        1.0,
        True,
    )
    n_echo = len(r.echo["bastion"])
    add(f"keystroke echo p50 ({n_echo} samples)", r.echo, ms1, med, 1.2, False)
    add(f"keystroke echo p99 ({n_echo} samples)", r.echo, ms1, p99, 1.5, False)
    n = s.sessions
    done = {p: r.conc[p] for p in PEERS}
    all_ok = all(c.completed == n for c in done.values())
    rows.append(
        [
            f"{n} concurrent sessions completed (exit 0, exact output)",
            f"{done['bastion'].completed}/{n}",
            "-",
            *(f"{done[p].completed}/{n}" for p in PEERS[1:]),
            "",
            "",
            f"all {n}",
            "met" if all_ok else "**missed**",
        ]
    )
    cv, av = r.conc_verified, r.all_verified
    assert cv is not None and av is not None
    recorded_all = cv.total >= done["bastion"].completed
    rows.append(
        [
            f"recordings intact: those {n} sessions / whole run",
            f"{cv.intact}/{cv.total} / {av.intact}/{av.total}",
            "-",
            "-",
            "-",
            "",
            "",
            "all",
            "met" if recorded_all and not cv.problems and not av.problems else "**missed**",
        ]
    )
    kib = {p: done[p].kib_per_session for p in PEERS}
    rows.append(
        [
            "memory per idle session (USS growth of the hop)",
            f"{kib['bastion']:.0f} KiB",
            "-",
            *(f"{kib[p]:.0f} KiB" for p in PEERS[1:]),
            f"{kib['bastion'] / kib['ProxyJump']:.2f}x" if kib["ProxyJump"] > 0 else "n/a",
            "",
            "",
            "",
        ]
    )
    b = done["bastion"]
    rows.append(
        [
            f"bastion VmRSS: before / {b.up} idle / peak",
            f"{b.rss_before / 1024:.0f} / {b.rss_idle / 1024:.0f} / {b.rss_peak / 1024:.0f} MiB",
            "-",
            "-",
            "-",
            "",
            "",
            "",
            "",
        ]
    )
    rows.append(
        [
            "bastion VmRSS per idle session",
            f"{(b.rss_idle - b.rss_before) / max(b.up, 1):.0f} KiB",
            "-",
            "-",
            "-",
            "",
            "",
            "",
            "",
        ]
    )
    head = [
        "figure",
        *RELAY_PEERS,
        "bastion/ProxyJump",
        "floor/ProxyJump",
        "target",
        "result",
    ]
    return table(head, rows)


def details(r: Results) -> str:
    rows: list[list[str]] = []

    def spread(name: str, data: dict[str, list[float]], scale: float, unit: str) -> None:
        for p in [p for p in RELAY_PEERS if p in data]:
            v = [x * scale for x in data[p]]
            rows.append(
                [
                    name,
                    p,
                    str(len(v)),
                    f"{statistics.median(v):.2f} {unit}",
                    f"{min(v):.2f}",
                    f"{percentile(v, 90):.2f}",
                    f"{max(v):.2f}",
                ]
            )

    spread("setup, stock", r.setup, 1000, "ms")
    spread(f"setup, {SAME_KEX}", r.setup_same_kex, 1000, "ms")
    spread("/dev/zero", r.zero, 1, "MB/s")
    spread("coloured log", r.text, 1, "MB/s")
    spread("echo", r.echo, 1000, "ms")
    return table(["figure", "peer", "n", "median", "min", "p90", "max"], rows)


def conc_details(r: Results) -> str:
    rows = []
    for p in PEERS:
        c = r.conc[p]
        rows.append(
            [
                p,
                f"{c.up}/{c.n}",
                f"{c.ramp_seconds:.1f} s",
                f"{c.burst_seconds:.1f} s",
                f"{c.completed}",
                f"{c.failed}",
                f"{c.uss_before / 1024:.1f} MiB",
                f"{c.uss_idle / 1024:.1f} MiB",
                f"{c.kib_per_session:.0f} KiB",
            ]
        )
    head = [
        "peer",
        "up",
        "ramp",
        "output burst",
        "completed",
        "failed",
        "hop USS before",
        "hop USS idle",
        "per session",
    ]
    return table(head, rows)


# --- main --------------------------------------------------------------------------------


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, so the finally blocks clean up.

    SIGINT is set explicitly: a shell without job control starts background jobs
    with it ignored, and Python then leaves it ignored.
    """

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, handler)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def raise_fd_limit(need: int) -> None:
    """Enough descriptors for N sessions here and in the bastion (which inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, max(need, 4096)))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def run(args: argparse.Namespace, scale: Scale, work: Path) -> Results:
    res = Results(scale=scale, ramp=args.ramp)
    say("starting bastion node (harness), target sshd and jump sshd")
    h = make_harness(work / "node")
    target = jump = None
    try:
        production_config(h)
        restart_node_info_logging(h)
        target = start_sshd(work, h.ca, TARGET)
        jump = start_sshd(work, h.ca, "jump")
        h.store.add_target(
            name=TARGET,
            kind=TargetKind.SSH,
            host=target.host,
            port=target.port,
            logins=[LOGIN],
            principal=default_principal(TARGET),
            host_keys=[target.host_key_line],
            now=time.time(),
        )
        floor = FloorPeer(work)
        cfgs = ssh_configs(work, target, jump, h.ca, floor)
        floor.configs = cfgs
        floor.start(target, work / "target_key", work / "known_hosts")
        bastion = BastionPeer(h)
        peers: list[Peer] = [
            bastion,
            OpenSSHPeer("direct", cfgs, "direct", target),
            OpenSSHPeer("ProxyJump", cfgs, "viajump", jump),
        ]
        relays: list[Peer] = [bastion, floor, *peers[1:]]

        say(f"1/4 setup time: {scale.setup_runs} logins per peer (+1 warm-up), stock KEX")
        res.setup = measure_setup(peers, scale.setup_runs, work)
        say(f"    and with {SAME_KEX} on every hop")
        res.setup_same_kex = measure_setup(peers, scale.setup_runs, work, same_kex=True)
        res.shell_start = remote_shell_start()

        say(f"2/4 PTY throughput: head -c {scale.zero_mib}M /dev/zero x{scale.stream_reps}")
        zero = scale.zero_mib << 20
        res.zero, res.zero_cpu = measure_stream(
            relays, f"head -c {scale.zero_mib}M /dev/zero", zero, scale.stream_reps, work
        )
        say(f"    generating a {scale.text_mb} MB coloured log file")
        text = work / "colour.log"
        res.text_bytes = write_log_file(text, scale.text_mb * 1_000_000)
        say(f"    cat of it x{scale.stream_reps}")
        res.text, res.text_cpu = measure_stream(
            relays, f"cat {text}", res.text_bytes, scale.stream_reps, work
        )

        say(f"3/4 keystroke echo: {scale.echo_samples} samples per peer")
        res.echo = measure_echo(relays, scale.echo_samples)

        say("verifying the recordings so far, then restarting the node for a clean RSS baseline")
        earlier = verify_recordings(h, bastion.users)
        mark = len(bastion.users)
        restart_node_info_logging(h)
        measure_setup([bastion], 2, work)  # warm-up logins on the fresh node

        n = scale.sessions
        say(f"4/4 concurrency: {n} sessions per peer, at most {args.ramp} logins in flight")
        for peer in peers:
            first = len(bastion.users)
            c = measure_concurrency(peer, n, args.ramp, work, bastion.memory_root())
            res.conc[peer.name] = c
            say(
                f"  {peer.name}: {c.up} up in {c.ramp_seconds:.1f} s, {c.completed} completed, "
                f"{c.failed} failed; {c.kib_per_session:.0f} KiB per idle session"
            )
            for f in c.failures[:5]:
                say(f"    {f}")
            if c.failed:
                lines = (work / f"conc-{peer.name}.err").read_text(errors="replace").splitlines()
                noise = ("Connection to", "Warning: Permanently")
                distinct = sorted({ln for ln in lines if ln and not ln.startswith(noise)})
                for ln in distinct[:10]:
                    say(f"    ssh stderr: {ln}")
                if peer is bastion:
                    for ln in [x for x in h.log().splitlines() if " WARNING " in x][-10:]:
                        say(f"    bastion log: {ln}")
            if peer is bastion:
                say("  verifying the recordings of those sessions")
                res.conc_verified = verify_recordings(h, bastion.users[first:])
        assert res.conc_verified is not None
        later = verify_recordings(h, bastion.users[mark:])  # warm-ups and concurrency
        res.all_verified = Verified(
            earlier.total + later.total,
            earlier.intact + later.intact,
            earlier.problems + later.problems,
        )
        for problem in res.all_verified.problems[:10]:
            say(f"  recording: {problem}")
    finally:
        reap_all()
        h.close()
        for t in (target, jump):
            if t is not None:
                t.stop()
    return res


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 2 minutes)")
    parser.add_argument("--sessions", type=int, help="concurrent sessions (default 100, quick 30)")
    parser.add_argument(
        "--ramp", type=int, default=20, help="logins in flight while opening them (default 20)"
    )
    parser.add_argument("--asyncssh-floor", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.asyncssh_floor:
        floor_relay_main(args.asyncssh_floor)
        return
    scale = QUICK if args.quick else FULL
    if args.sessions:
        scale = Scale(**{**scale.__dict__, "sessions": args.sessions})
    for tool in ("ssh", "/usr/sbin/sshd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install openssh-client and openssh-server")
    raise_fd_limit(8 * scale.sessions + 1024)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bastion-bench-ssh-"))
    try:
        with interruptible():
            res = run(args, scale, work)
    except BenchError as e:
        raise SystemExit(f"benchmark failed: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted; everything started was stopped") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    mode = "--quick" if args.quick else "full"
    print(
        f"# SSH benchmark ({mode} run, {elapsed:.0f} s; {ssh_version}; "
        f"Python {sys.version.split()[0]}; {os.cpu_count()} cores)\n"
    )
    print(summary(res))
    print()
    print(
        f"Every setup figure includes the target's `$SHELL -c true` as sshd runs it: "
        f"{res.shell_start * 1000:.0f} ms here\n(bash sources ~/.bashrc for sshd)."
    )
    print("Stock: each client's defaults (OpenSSH 9.x to sshd: sntrup761x25519-sha512; asyncssh")
    print("has no sntrup761/ML-KEM without liboqs, so the bastion's two legs use curve25519).")
    print("Ratios are bastion / ProxyJump between medians of the same run; the peers were")
    print("interleaved round by round. The asyncssh floor is a minimal asyncssh relay with")
    print("the node's loop, ciphers and asyncssh settings and nothing else (no recording),")
    print("in throughput and echo only. Throughput is bytes received on the client's PTY")
    print("from the first byte to the last (login excluded); setup is the whole `ssh … true`.")
    print("Memory per idle session: growth of the summed USS (private pages) of the hop's")
    print("processes while the sessions were open and idle, divided by their number:")
    print("bastion = the bastion process; ProxyJump = the jump host's sshd tree; direct = the")
    print("target's sshd tree, which also holds the remote shells waiting in `read`.")
    print("Sessions were opened with at most --ramp logins in flight (sshd: MaxStartups 1000).")
    print("\n## Spread\n")
    print(details(res))
    print()
    for name, what in (("bastion", "relay, recording, and their threads"), (FLOOR, "relay")):
        print(
            f"{name} process CPU while streaming (median, share of one core): "
            f"/dev/zero {statistics.median(res.zero_cpu[name]) * 100:.0f}%, "
            f"coloured log {statistics.median(res.text_cpu[name]) * 100:.0f}% "
            f"({what}; one event loop)."
        )
    print("\n## Concurrency\n")
    print(conc_details(res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
