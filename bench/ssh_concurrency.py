"""The SSH benchmark's concurrency figure: N sessions at once, the hop's memory,
and the bastion's recordings of them verified against the state store."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bastion.cli_recordings import check_session_recording, node_public_key, recording_path
from node import BastionHarness
from ssh_peers import TARGET, Peer
from ssh_procs import BenchError, reap, spawn

SEQ_LINES = 2000
EXPECTED_SEQ = b"up\n" + b"".join(b"%d\n" % i for i in range(1, SEQ_LINES + 1))


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


def measure_concurrency(peer: Peer, n: int, ramp: int, work: Path, bastion_pid: int) -> Conc:  # noqa: C901  a linear script
    """N sessions held open idle, then all released at once (see the module docstring)."""
    res = Conc(n=n)
    cmds = [peer.command("echo up; read x; seq 1 2000") for _ in range(n)]
    root = peer.memory_root()
    time.sleep(1)
    res.uss_before = tree_uss_kib(root)
    res.rss_before = rss_kib(bastion_pid)
    sel = selectors.DefaultSelector()
    sessions: list[_Sess] = []
    err = open(work / f"conc-{peer.name}.err", "wb")  # closed below
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
