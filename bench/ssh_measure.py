"""The SSH benchmark's per-peer figures: setup time, PTY throughput, keystroke echo.

Each interleaves the peers round by round (``rotated``), so that the load of a busy
machine falls on all of them alike.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import random
import select
import statistics
import struct
import subprocess
import termios
import time
import tty
from collections.abc import Sequence
from pathlib import Path

from node import LOGIN
from report import say
from ssh_peers import Peer, rotated
from ssh_procs import BenchError, err_tail, reap, spawn

ECHO_WARMUP = 20


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
