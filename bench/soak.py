"""Soak: one node under a mixed load with faults on a schedule, watched over time.

A bastion runs for months; leaks show only over hours. This starts the node as
the benchmarks do (production config values, SQLite state, local recordings),
a real OpenSSH target and a real PostgreSQL target, and keeps busy until the
time is up:

- interactive terminals (``ssh -tt`` on a pseudo-terminal typing a line every
  0.3 s, then ``exit``), exec streams (2 MB of ``seq``), SFTP uploads and
  downloads of 1 MiB, psql sessions (a query of 1,000 rows and a transaction);
- every 30 s one fault in turn: 20 logins with a wrong TOTP code, an ``ssh``
  client killed with SIGKILL mid-stream, the target's session processes killed
  (the "target dies" path), the PostgreSQL backends of the load terminated, 30
  idle TCP connections held silent for 6 s and dropped.

Every 5 s it samples the node: resident memory and open descriptors (from
``/proc``), asyncio tasks, event-loop lag and live sessions (``/metrics``) and
the recording directory's size. It writes ``OUT.csv`` and ``OUT.png`` and prints
a markdown summary: the figures after warm-up and at the end, and whether
memory and descriptors stayed flat.

Run from the repository root::

    PYTHONPATH=. python bench/soak.py --minutes 30 --out bench/soak-30m
    PYTHONPATH=. python bench/soak.py --minutes 3 --out /tmp/soak   # a quick look

The PNG needs matplotlib (``pip install -e '.[bench]'``); without it only the
CSV and the summary are written.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pexpect

from node import BastionHarness, Contractor, make_harness, production_config
from pg import bastion_token
from ssh_peers import sshd_pid
from tests.peers.postgres import PgServer, find_pg_bin, start_pg_server

SAMPLE_SECONDS = 5.0
FAULT_SECONDS = 30.0
FIELDS = (
    "elapsed_s",
    "rss_mib",
    "open_fds",
    "asyncio_tasks",
    "loop_lag_ms",
    "live_sessions",
    "recordings_mib",
    "sessions_done",
)


def say(msg: str) -> None:
    """Progress to stderr."""
    print(f"[bench/soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Tally:
    """What the load did, by kind (thread-safe)."""

    done: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    last_error: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str) -> None:
        with self.lock:
            self.done[kind] += 1

    def bad(self, kind: str, why: str) -> None:
        with self.lock:
            self.failed[kind] += 1
            self.last_error[kind] = why[-300:]


class Soak:
    """The node, its targets, the load threads and the fault schedule."""

    def __init__(self, h: BastionHarness, server: PgServer, work: Path, until: float) -> None:
        self.h, self.server, self.work, self.until = h, server, work, until
        self.tally = Tally()
        self.codes = threading.Lock()
        """``Contractor.ssh_env`` rewinds the TOTP guard through the shared store: one at a time."""
        self.stop = threading.Event()

    def env(self, c: Contractor, code: str | None = None) -> dict[str, str]:
        with self.codes:
            return c.ssh_env(code)

    def contractor(self, options: tuple[str, ...] = ()) -> Contractor:
        c = self.h.contractor("soak")
        self.h.grant(c, "web1", seconds=24 * 3600, options=options)
        return c

    # --- the load ------------------------------------------------------------------------

    def loop(self, kind: str, step: Callable[[], None]) -> None:
        while not self.stop.is_set() and time.time() < self.until:
            try:
                step()
                self.tally.ok(kind)
            except Exception as exc:
                self.tally.bad(kind, f"{type(exc).__name__}: {exc}")
                time.sleep(1)

    def pty(self, c: Contractor) -> None:
        args = [*c.ssh_args(), "-tt", "-p", str(self.h.port), f"{c.login_name('web1')}@127.0.0.1"]
        child = pexpect.spawn("ssh", args, env=self.env(c), timeout=30)
        try:
            child.expect(r"[$#] ")
            for i in range(60):
                child.sendline(f"echo tick-{i}")
                child.expect(f"tick-{i}\r\n")
                time.sleep(0.3)
            child.sendline("exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)

    def exec_stream(self, c: Contractor) -> None:
        r = subprocess.run(
            ["ssh", *c.ssh_args(), "-p", str(self.h.port), f"{c.login_name('web1')}@127.0.0.1"]
            + ["seq 1 400000 | head -c 2000000"],
            capture_output=True,
            env=self.env(c),
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if r.returncode != 0 or len(r.stdout) != 2_000_000:
            raise RuntimeError(f"exec: rc {r.returncode}, {len(r.stdout)} bytes, {r.stderr!r}")

    def sftp(self, c: Contractor, blob: Path) -> None:
        remote = self.work / f"sftp-{secrets.token_hex(4)}"
        back = self.work / f"{remote.name}.back"
        batch = f"put {blob} {remote}\nget {remote} {back}\nrm {remote}\n"
        r = subprocess.run(
            ["sftp", *c.ssh_args(), "-o", "BatchMode=no", "-P", str(self.h.port), "-b", "-"]
            + [f"{c.login_name('web1')}@127.0.0.1"],
            input=batch.encode(),
            capture_output=True,
            env=self.env(c),
            timeout=120,
        )
        try:
            if r.returncode != 0 or back.read_bytes() != blob.read_bytes():
                raise RuntimeError(f"sftp: rc {r.returncode}, {r.stderr!r}")
        finally:
            back.unlink(missing_ok=True)

    def psql(self, env: dict[str, str]) -> None:
        sql = "SELECT count(*) FROM generate_series(1, 1000) g;\nBEGIN; SELECT now(); COMMIT;\n"
        r = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True,
            env=env,
            timeout=60,
            text=True,
        )
        if r.returncode != 0 or "1000" not in r.stdout:
            raise RuntimeError(f"psql: rc {r.returncode}, {r.stderr}")

    # --- the faults ----------------------------------------------------------------------

    def wrong_codes(self, c: Contractor) -> None:
        procs = [
            subprocess.Popen(
                ["ssh", *c.ssh_args(), "-p", str(self.h.port), f"{c.login_name('web1')}@127.0.0.1"]
                + ["true"],
                env=self.env(c, c.wrong_code()),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            for _ in range(20)
        ]
        for p in procs:
            p.wait(timeout=60)

    def killed_client(self, c: Contractor) -> None:
        p = subprocess.Popen(
            ["ssh", *c.ssh_args(), "-p", str(self.h.port), f"{c.login_name('web1')}@127.0.0.1"]
            + ["cat /dev/zero"],
            env=self.env(c),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        time.sleep(3)
        p.kill()
        p.wait()

    def target_dies(self) -> None:
        """SIGKILL the target sshd's session processes (its listener stays up)."""
        parent = sshd_pid(self.h.targets["web1"])
        for pid in _children(parent):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def postgres_ends_backends(self, role: str) -> None:
        from psycopg import sql

        self.server.execute(
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}"
            ).format(sql.Literal(role))
        )

    def idle_flood(self) -> None:
        socks = []
        for _ in range(30):
            with contextlib.suppress(OSError):
                socks.append(socket.create_connection(("127.0.0.1", self.h.port), timeout=5))
        time.sleep(6)  # held silent, then dropped, as a port scanner does
        for s in socks:
            s.close()

    def faults(self, c: Contractor, role: str) -> None:
        schedule: list[tuple[str, Callable[[], None]]] = [
            ("fault: wrong codes", lambda: self.wrong_codes(c)),
            ("fault: client killed", lambda: self.killed_client(c)),
            ("fault: target dies", self.target_dies),
            ("fault: postgres ends backends", lambda: self.postgres_ends_backends(role)),
            ("fault: idle flood", self.idle_flood),
        ]
        i = 0
        while not self.stop.wait(FAULT_SECONDS) and time.time() < self.until:
            name, fault = schedule[i % len(schedule)]
            i += 1
            try:
                fault()
                self.tally.ok(name)
            except Exception as exc:
                self.tally.bad(name, f"{type(exc).__name__}: {exc}")


def _children(pid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                yield int(entry.name)


def _gauges(h: BastionHarness) -> dict[str, float]:
    listen = h.config.metrics_listen
    assert listen is not None
    with urllib.request.urlopen(f"http://{listen[0]}:{listen[1]}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"bastion_([a-z_]+) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sample(h: BastionHarness, start: float, tally: Tally) -> dict[str, float]:
    """One row of the CSV."""
    assert h.proc is not None
    pid = h.proc.pid
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    g = _gauges(h)
    return {
        "elapsed_s": round(time.time() - start, 1),
        "rss_mib": round(rss_kib / 1024, 1),
        "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "asyncio_tasks": g.get("asyncio_tasks", 0),
        "loop_lag_ms": round(g.get("event_loop_lag_seconds", 0) * 1000, 1),
        "live_sessions": g.get("live_sessions", 0),
        "recordings_mib": round(_dir_bytes(h.config.recordings_dir) / 2**20, 1),
        "sessions_done": sum(tally.done.values()),
    }


def plot(rows: list[dict[str, float]], png: Path) -> bool:
    """The four curves that must stay flat; False when matplotlib is not installed."""
    try:
        mpl: Any = importlib.import_module("matplotlib")
    except ModuleNotFoundError:
        return False
    mpl.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    minutes = [r["elapsed_s"] / 60 for r in rows]
    fig, axes = plt.subplots(5, 1, figsize=(9, 12), sharex=True)
    for ax, key, label in zip(
        axes,
        ("rss_mib", "open_fds", "asyncio_tasks", "loop_lag_ms", "recordings_mib"),
        (
            "RSS (MiB)",
            "open fds",
            "asyncio tasks",
            "loop lag, worst of 10 s (ms)",
            "recordings (MiB)",
        ),
        strict=True,
    ):
        ax.plot(minutes, [r[key] for r in rows])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.suptitle("bastion soak: one node, mixed load, a fault every 30 s")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    return True


def summary(rows: list[dict[str, float]], tally: Tally, minutes: float) -> str:
    """Markdown: after warm-up vs end, lag, what the load and faults did."""
    warm = next((r for r in rows if r["elapsed_s"] >= min(120.0, minutes * 60 / 5)), rows[0])
    end = rows[-1]
    tail = rows[len(rows) * 3 // 4 :]  # the last quarter: steady state
    lag = sorted(r["loop_lag_ms"] for r in rows)
    p99 = lag[min(len(lag) - 1, int(len(lag) * 0.99))]

    rss_slack = max(8.0, warm["rss_mib"] * 0.1)

    def flat(key: str, slack: float) -> str:
        grew = max(r[key] for r in tail) - warm[key]
        return "flat" if grew <= slack else f"**grew {grew:g}**"

    lines = [
        f"Soak of {minutes:g} min, sample every {SAMPLE_SECONDS:g} s,"
        f" fault every {FAULT_SECONDS:g} s.",
        "",
        "| figure | after warm-up | end | max of last quarter | verdict |",
        "|---|---|---|---|---|",
        f"| RSS (MiB) | {warm['rss_mib']:g} | {end['rss_mib']:g} | "
        f"{max(r['rss_mib'] for r in tail):g} | {flat('rss_mib', rss_slack)} |",
        f"| open fds | {warm['open_fds']:g} | {end['open_fds']:g} | "
        f"{max(r['open_fds'] for r in tail):g} | {flat('open_fds', 40)} |",
        f"| asyncio tasks | {warm['asyncio_tasks']:g} | {end['asyncio_tasks']:g} | "
        f"{max(r['asyncio_tasks'] for r in tail):g} | {flat('asyncio_tasks', 60)} |",
        f"| loop lag p99 / max (ms) | | {p99:g} / {lag[-1]:g} | | |",
        f"| recordings (MiB) | {warm['recordings_mib']:g} | {end['recordings_mib']:g} | | |",
        "",
        "| load or fault | done | failed | last failure |",
        "|---|---|---|---|",
    ]
    for kind in sorted(set(tally.done) | set(tally.failed)):
        why = tally.last_error.get(kind, "").replace("|", "/").replace("\n", " ")
        lines.append(f"| {kind} | {tally.done[kind]} | {tally.failed[kind]} | {why[:120]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", default="bench/soak", help="OUT.csv, OUT.png (default bench/soak)")
    args = parser.parse_args(argv)
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries not found (set BASTION_PG_BIN)")
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    os.chmod(work, 0o755)  # noqa: S103  postgres must reach it
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, float]] = []
    try:
        with contextlib.ExitStack() as stack:
            say("starting PostgreSQL, the target sshd and the node")
            server = stack.enter_context(start_pg_server(bin_dir))
            role, password = "soak_user", secrets.token_urlsafe(12)
            server.create_role(role, password)
            server.execute(f"CREATE DATABASE bench OWNER {role}")
            h = make_harness(work / "node")
            stack.callback(h.close)
            h.stop()
            production_config(h)
            h.start()
            name, token = bastion_token(h, server, role, password)
            pg_env = {
                **os.environ,
                "PGHOST": "127.0.0.1",
                "PGPORT": str(h.pg_port),
                "PGUSER": name,
                "PGPASSWORD": token,
                "PGDATABASE": "bench",
                "PGSSLMODE": "require",
            }
            start = time.time()
            soak = Soak(h, server, work, start + args.minutes * 60)
            blob = work / "blob"
            blob.write_bytes(secrets.token_bytes(1 << 20))
            jobs: list[tuple[str, Callable[[], None]]] = []
            p1, p2, c = soak.contractor(), soak.contractor(), soak.contractor()
            jobs.append(("pty 0", lambda: soak.pty(p1)))
            jobs.append(("pty 1", lambda: soak.pty(p2)))
            jobs.append(("exec stream", lambda: soak.exec_stream(c)))
            s = soak.contractor(("sftp",))
            jobs.append(("sftp", lambda: soak.sftp(s, blob)))
            jobs.append(("psql", lambda: soak.psql(pg_env)))
            threads = [
                threading.Thread(target=soak.loop, args=(kind, step), daemon=True)
                for kind, step in jobs
            ]
            f = soak.contractor()
            threads.append(threading.Thread(target=soak.faults, args=(f, role), daemon=True))
            for t in threads:
                t.start()
            say(f"soaking for {args.minutes:g} min")
            try:
                while time.time() < soak.until:
                    rows.append(sample(h, start, soak.tally))
                    if len(rows) % 12 == 0:
                        r = rows[-1]
                        say(
                            f"{r['elapsed_s'] / 60:.1f} min: rss {r['rss_mib']} MiB, fds "
                            f"{r['open_fds']:g}, tasks {r['asyncio_tasks']:g}, lag "
                            f"{r['loop_lag_ms']} ms, done {r['sessions_done']:g}"
                        )
                    time.sleep(SAMPLE_SECONDS)
            finally:
                soak.stop.set()
                for t in threads:
                    t.join(timeout=150)
            rows.append(sample(h, start, soak.tally))
            with open(out.with_suffix(".csv"), "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(rows)
            drawn = plot(rows, out.with_suffix(".png"))
            report = summary(rows, soak.tally, args.minutes)
            print(report)
            say(
                f"wrote {out.with_suffix('.csv')}"
                + (f" and {out.with_suffix('.png')}" if drawn else "")
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
