"""Benchmark of the ``recorder`` package: size, writer CPU and idle memory, against peers.

Every figure is a ratio against a peer measured in the same run, on the same bytes:

* **size** - a ``.bastrec`` written by the real ``RecordingWriter`` (default
  ``WriterPolicy``; a fake clock ticked every 0.25 s as ``run_ticker`` does, so
  chunks are cut by size for bulk output and every second for trickling output)
  against the raw terminal bytes, an asciicast v2 file of the same events (plain
  and gzip'ed) and, if the ``asciinema`` 2.x CLI is installed, a real
  ``asciinema rec`` of ``cat`` of the same output; and the same file again after
  ``recorder.repack`` (large chunks, high zstd level) once it is closed;
* **writer CPU** - process time to record each workload against writing the same
  pieces to /dev/null, and against a naive writer holding one zstd stream per
  session;
* **memory** - RSS growth per recorded session gone idle, in a fresh subprocess,
  against a naive writer holding one zstd streaming context per session.

The workloads are generated deterministically (fixed seeds): bulk logs, an
``ls -lR --color`` listing, a ``top`` screen refreshed every 3 s, and an interactive
session with typing, prompts, short commands and ``tail -f`` trickles.

Run from the repository root, with the package installed (``pip install -e .``)::

    python bench/recording.py [--quick]
"""

from __future__ import annotations

import argparse
import bisect
import codecs
import ctypes
import gc
import gzip
import json
import os
import random
import re
import resource
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fake_clock import FakeClock
from recorder import (
    Input,
    LocalStorage,
    Output,
    RecordingReader,
    RecordingWriter,
    RepackPolicy,
    repack,
    verify,
)
from recorder.keys import generate_signing_key
from report import table

OUT, IN = 1, 2
TICK = 0.25
"""Seconds between writer.tick() calls (run_ticker's default)."""
PIECE = 4096
"""Bulk output arrives in pieces of this size (one SSH channel read)."""
COLS, ROWS = 80, 24
WALL_START = 1_732_870_800.0  # 2024-11-29T09:00:00Z
SIZE_TARGET = 7.0
RSS_TARGET_KIB = 100.0

Event = tuple[float, int, bytes]
"""(session time in seconds, OUT or IN, bytes)."""


@dataclass(frozen=True)
class Scale:
    """How big each measurement is (full run or --quick)."""

    bulk_bytes: int
    ls_bytes: int
    top_seconds: float
    interactive_seconds: float
    cpu_reps: int
    rss_sessions: int
    rss_reps: int


FULL = Scale(16 << 20, 8 << 20, 1800.0, 3600.0, 5, 1000, 3)
QUICK = Scale(4 << 20, 2 << 20, 600.0, 1200.0, 3, 200, 2)


@dataclass
class Workload:
    """A named, time-stamped terminal session."""

    name: str
    events: list[Event]

    @property
    def duration(self) -> float:
        return self.events[-1][0] if self.events else 0.0

    @property
    def raw_bytes(self) -> int:
        return sum(len(data) for _, _, data in self.events)

    def output(self) -> bytes:
        return b"".join(data for _, kind, data in self.events if kind == OUT)


# -- realistic terminal output ------------------------------------------------------------


class Zipf:
    """Draws 0..n-1 with probability proportional to 1/(i+1)**s (a few hot values)."""

    def __init__(self, n: int, s: float = 1.1) -> None:
        total = 0.0
        self.cum: list[float] = []
        for i in range(n):
            total += 1.0 / (i + 1) ** s
            self.cum.append(total)

    def __call__(self, rng: random.Random) -> int:
        return bisect.bisect_left(self.cum, rng.random() * self.cum[-1])


WORDS = (
    "alpha api app archive auth backup base bin build cache cert client common config "
    "core cron data db debug default deploy dist doc driver etc event export fonts gen "
    "git grpc helper home http image include index init job kernel lib local lock log "
    "mail main man media metrics module net node nginx opt orders pkg plugin postgres "
    "proc proxy python queue redis report run sbin schema share shell site src ssh ssl "
    "static storage sync sys systemd template test tmp tools user util var vendor web "
    "worker x11 zone"
).split()
USERS = ("alice", "bob", "deploy", "postgres", "www-data", "root")
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
PATHS = ("items", "orders", "users", "carts", "search", "sessions", "invoices", "health")
AGENTS = ('"curl/8.5.0"', '"python-requests/2.31.0"', '"Mozilla/5.0 (X11; Linux x86_64)"')
APP_MSGS = (
    "request completed",
    "cache miss",
    "job finished",
    "retrying upstream call",
    "connection pool exhausted, waiting",
    "token refreshed",
)
SQL = (
    "SELECT id, name, price FROM items WHERE id = $1",
    "UPDATE orders SET status = 'shipped' WHERE id = $1",
    "INSERT INTO events (kind, payload) VALUES ($1, $2)",
    "SELECT count(*) FROM sessions WHERE expires_at > now()",
)


class LogGen:
    """Syslog/journal lines from a busy web server, time advancing monotonically."""

    def __init__(self, rng: random.Random, start: float = 9 * 3600.0) -> None:
        self.rng = rng
        self.t = start
        self.item = Zipf(5000)
        self.client = Zipf(60)
        self.path = Zipf(len(PATHS))

    def hms(self) -> str:
        t = int(self.t)
        return f"{t // 3600 % 24:02d}:{t // 60 % 60:02d}:{t % 60:02d}"

    def line(self) -> str:
        r = self.rng
        self.t += r.expovariate(40.0)
        hms = self.hms()
        what = r.random()
        if what < 0.40:
            status = r.choices((200, 201, 304, 404, 500), (80, 6, 8, 5, 1))[0]
            method = "GET" if r.random() < 0.8 else "POST"
            path = f"/api/v1/{PATHS[self.path(r)]}/{self.item(r)}"
            size = int(r.lognormvariate(7.0, 1.2))
            ip = f"10.0.{self.client(r) // 20}.{self.client(r) + 10}"
            msg = (
                f'{ip} - - [29/Nov/2024:{hms} +0000] "{method} {path} HTTP/1.1" '
                f'{status} {size} "-" {r.choice(AGENTS)}'
            )
            proc = "nginx[1033]"
        elif what < 0.65:
            level = r.choices(("info", "warn", "error"), (90, 8, 2))[0]
            msg = (
                f"level={level} ts=2024-11-29T{hms}.{r.randrange(1000):03d}Z "
                f"logger=app.{r.choice(('http', 'db', 'worker'))} "
                f'msg="{r.choice(APP_MSGS)}" request_id={r.getrandbits(32):08x} '
                f"duration_ms={int(r.lognormvariate(3.0, 1.0))}"
            )
            proc = f"app[{r.choice((2210, 2211, 2212, 2213))}]"
            if level == "error":
                msg = f"\x1b[0;1;31m{msg}\x1b[0m"
        elif what < 0.78:
            msg = (
                f"LOG:  duration: {r.lognormvariate(1.0, 1.0):.3f} ms  "
                f"statement: {r.choice(SQL).replace('$1', str(self.item(r)))}"
            )
            proc = f"postgres[{1201 + r.randrange(8)}]"
        elif what < 0.86:
            user = r.choice(USERS)
            msg = r.choice(
                (
                    f"Accepted publickey for {user} from 10.0.1.{self.client(r)} port "
                    f"{r.randint(40000, 60999)} ssh2: ED25519 SHA256:pX3kq9vN2mLr8sTzY1wQ",
                    f"pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)",
                    f"Disconnected from user {user} 10.0.1.{self.client(r)} port "
                    f"{r.randint(40000, 60999)}",
                )
            )
            proc = f"sshd[{r.randint(3000, 9999)}]"
        elif what < 0.93:
            n = r.randint(100, 999)
            msg = f"Started session-{n}.scope - Session {n} of User {r.choice(USERS)}."
            proc = "systemd[1]"
        elif what < 0.97:
            msg = "(root) CMD (   cd / && run-parts --report /etc/cron.hourly)"
            proc = f"CRON[{r.randint(3000, 9999)}]"
        else:
            msg = (
                f"[{int(self.t) + 1036800}.{r.randrange(10**6):06d}] TCP: request_sock_TCP: "
                "Possible SYN flooding on port 443. Sending cookies."
            )
            proc = "kernel"
        return f"Nov 29 {hms} web1 {proc}: {msg}\r\n"


def _name(r: random.Random) -> str:
    name = r.choice(WORDS)
    if r.random() < 0.5:
        name += r.choice(("-", "_", "")) + r.choice(WORDS)
    if r.random() < 0.2:
        name += str(r.randint(1, 12))
    return name


LsEntry = tuple[str, str, int, int, str]
"""(name, type, link count, size, date); type: f file, d dir, x executable, z archive,
or ``-> target`` for a symlink."""
LS_COLOURS = {"d": "01;34", "x": "01;32", "z": "01;31", "-": "01;36"}


def ls_format(entries: list[LsEntry], path: str | None = None) -> str:
    """``ls -l --color`` of one directory: sorted, numeric columns padded to the widest."""
    entries = sorted(entries)
    lw = max(len(str(e[2])) for e in entries)
    sw = max(len(str(e[3])) for e in entries)
    lines = [f"{path}:\r\n" if path is not None else ""]
    lines.append(f"total {sum(e[3] // 1024 + 4 for e in entries)}\r\n")
    modes = {"f": "-rw-r--r--", "d": "drwxr-xr-x", "x": "-rwxr-xr-x", "z": "-rw-r--r--"}
    for name, kind, links, size, date in entries:
        mode = modes.get(kind, "lrwxrwxrwx")
        colour = LS_COLOURS.get(kind[0])
        shown = f"\x1b[{colour}m{name}\x1b[0m" if colour else name
        if kind.startswith("->"):
            shown += " " + kind
        lines.append(f"{mode} {links:{lw}d} root root {size:{sw}d} {date} {shown}\r\n")
    return "".join(lines)


def usr_dirs(r: random.Random, packages: Sequence[str]) -> list[tuple[str, list[LsEntry]]]:  # noqa: C901  one branch per entry kind
    """One package's directories under /usr, in the shapes a real ``ls -lR /usr`` shows.

    Package names recur (in doc, lib, man, locale trees) as on a real system.
    """
    pkg = r.choice(packages)
    stamp = f"{r.choice(MONTHS)} {r.randint(1, 28):2d}  {r.choice((2022, 2023, 2024))}"

    def date() -> str:  # files of a package share its date
        if r.random() < 0.85:
            return stamp
        return f"Nov {r.randint(1, 29):2d} {r.randint(0, 23):02d}:{r.randint(0, 59):02d}"

    def size(mu: float = 8.0) -> int:
        return int(r.lognormvariate(mu, 1.5))

    def names(n: int, suffix: str = "", sep: str = "-") -> list[str]:
        return sorted({_name(r).replace("-", sep) + suffix for _ in range(n)})

    shapes = ("doc", "python", "man", "lib", "include", "locale", "libexec", "parent")
    shape = r.choices(shapes, (30, 15, 10, 15, 10, 10, 5, 5))[0]
    if shape == "doc":
        extra = ["NEWS.Debian.gz", "README.md", "changelog.gz", "README.Debian", "TODO"]
        docs = ["changelog.Debian.gz", "copyright", *r.sample(extra, r.randint(0, 3))]
        files = [(n, "z" if n.endswith(".gz") else "f", 1, size(7.5), date()) for n in docs]
        return [(f"/usr/share/doc/{pkg}", files)]
    if shape == "python":
        mods = ["__init__", *names(r.randint(2, 25), sep="_")]
        base = f"/usr/lib/python3/dist-packages/{pkg.replace('-', '_')}"
        code = [(f"{m}.py", "f", 1, size(8.5), date()) for m in mods]
        cache = [(f"{m}.cpython-311.pyc", "f", 1, size(8.8), date()) for m in mods]
        return [
            (base, [*code, ("__pycache__", "d", 2, 4096, date())]),
            (f"{base}/__pycache__", cache),
        ]
    if shape == "man":
        section = r.choice("1358")
        lang = r.choice(("", "de/", "fr/", "ja/", "pl/", "ru/"))
        pages = [(n, "z", 1, size(7.5), date()) for n in names(r.randint(5, 120), f".{section}.gz")]
        return [(f"/usr/share/man/{lang}man{section}", pages)]
    if shape == "lib":
        entries: list[LsEntry] = []
        for n in names(r.randint(1, 12)):
            major = r.randint(0, 6)
            link, real = (
                f"lib{n}.so.{major}",
                f"lib{n}.so.{major}.{r.randint(0, 30)}.{r.randint(0, 9)}",
            )
            entries += [
                (link, f"-> {real}", 1, len(real), date()),
                (real, "f", 1, size(11), date()),
            ]
        return [(f"/usr/lib/x86_64-linux-gnu/{pkg}", entries)]
    if shape == "include":
        headers = [(n, "f", 1, size(8.5), date()) for n in names(r.randint(3, 60), ".h", "_")]
        return [(f"/usr/include/{pkg}", headers)]
    if shape == "locale":
        lang = r.choice(("de", "es", "fr", "it", "ja", "nl", "pl", "pt_BR", "ru", "sv", "zh_CN"))
        domains = sorted(set(r.sample(packages, r.randint(1, 30))))
        catalogues = [(f"{n}.mo", "f", 1, size(9), date()) for n in domains]
        return [(f"/usr/share/locale/{lang}/LC_MESSAGES", catalogues)]
    if shape == "libexec":
        programs = [(n, "x", 1, size(10), date()) for n in names(r.randint(1, 15))]
        return [(f"/usr/libexec/{pkg}", programs)]
    dirs = [(n, "d", r.randint(2, 9), 4096, date()) for n in names(r.randint(20, 200))]
    return [(f"/usr/share/{pkg}", dirs)]


@dataclass
class Proc:
    """One row of the ``top`` process table."""

    pid: int
    user: str
    cmd: str
    virt: int
    res: int
    shr: int
    seconds: float
    hot: bool
    cpu: float = 0.0


class TopGen:
    """A ``top`` screen (80x24) with a drifting process table, repainted in full."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.t = 9 * 3600.0 + 14 * 60
        names = "nginx postgres app redis-server sshd systemd cron dockerd containerd node"
        names += " python3 bash journald rsyslogd"
        self.procs = [
            Proc(
                pid,
                rng.choice(USERS),
                rng.choice(names.split()),
                rng.randint(8000, 2_000_000),
                rng.randint(2000, 400_000),
                rng.randint(1000, 60_000),
                rng.uniform(0, 3000),
                rng.random() < 0.2,
            )
            for pid in sorted(rng.sample(range(1, 40000), 60))
        ]

    def screen(self, interval: float) -> str:
        r = self.rng
        self.t += interval
        for p in self.procs:
            p.cpu = round(r.lognormvariate(1.0, 1.0), 1) if p.hot else 0.0
            if not p.hot and r.random() < 0.05:
                p.cpu = 0.3
            p.seconds += p.cpu * interval / 100
            if r.random() < 0.1:
                p.res += r.randint(-64, 64)
        t = int(self.t)
        load = [round(r.uniform(0.05, 1.5), 2) for _ in range(3)]
        bold = "\x1b(B\x1b[m\x1b[39;49m\x1b[1m"
        plain = "\x1b(B\x1b[m\x1b[39;49m"
        lines = [
            f"top - {t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d} up 12 days,  3:02,  "
            f"2 users,  load average: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}",
            f"Tasks:{bold} {r.randint(180, 190)} {plain}total,{bold}   1 {plain}running,"
            f"{bold} {r.randint(179, 189)} {plain}sleeping,{bold}   0 {plain}stopped,"
            f"{bold}   0 {plain}zombie",
            f"%Cpu(s):{bold}  {r.uniform(0, 9):.1f} {plain}us,{bold}  {r.uniform(0, 3):.1f} "
            f"{plain}sy,{bold}  0.0 {plain}ni,{bold} {r.uniform(88, 99):.1f} {plain}id,"
            f"{bold}  0.0 {plain}wa,{bold}  0.0 {plain}hi,{bold}  0.0 {plain}si",
            f"MiB Mem :{bold}  15989.2 {plain}total,{bold}   {r.uniform(7000, 9000):.1f} "
            f"{plain}free,{bold}   {r.uniform(2900, 3100):.1f} {plain}used,{bold}   "
            f"4844.1 {plain}buff/cache",
            f"MiB Swap:{bold}      0.0 {plain}total,{bold}      0.0 {plain}free,{bold}      "
            f"0.0 {plain}used.{bold}  12613.9 {plain}avail Mem",
            "",
            f"\x1b[7m    PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ "
            f"COMMAND  {plain}",
        ]
        busy = sorted(self.procs, key=lambda p: (-p.cpu, p.pid))
        for p in busy[: ROWS - len(lines) - 1]:
            style = bold if p.cpu > 0 else plain
            lines.append(
                f"{style}{p.pid:7d} {p.user:9.9s} 20   0 {p.virt:7d} {p.res:6d} {p.shr:6d} "
                f"{'R' if p.cpu > 5 else 'S'} {p.cpu:5.1f} {p.res / 163_727:5.1f} "
                f"{int(p.seconds // 60):3d}:{p.seconds % 60:05.2f} {p.cmd:8.8s}{plain}"
            )
        return "\x1b[H" + "".join(line + "\x1b[K\r\n" for line in lines) + "\x1b[J"


def _burst(t: float, data: bytes, rate: float = 4e6) -> tuple[list[Event], float]:
    """Split bulk output into PIECE-sized events arriving at ``rate`` bytes/s."""
    events: list[Event] = []
    for i in range(0, len(data), PIECE):
        piece = data[i : i + PIECE]
        t += len(piece) / rate
        events.append((t, OUT, piece))
    return events, t


def bulk_logs(limit: int) -> Workload:
    """``journalctl --no-pager`` of a busy web server: ``limit`` bytes at 4 MB/s."""
    gen = LogGen(random.Random(1))
    text: list[str] = []
    size = 0
    while size < limit:
        line = gen.line()
        text.append(line)
        size += len(line)
    events, _ = _burst(0.5, "".join(text).encode()[:limit])
    return Workload("bulk logs", events)


def ls_listing(limit: int) -> Workload:
    """``ls -lR --color /usr``: ``limit`` bytes of coloured listings at 4 MB/s."""
    r = random.Random(2)
    packages = sorted({_name(r) for _ in range(600)})
    parts = ["\x1b[0m"]
    size = 0
    while size < limit:
        for path, entries in usr_dirs(r, packages):
            parts.append(ls_format(entries, path) + "\r\n")
            size += len(parts[-1])
    events, _ = _burst(0.5, "".join(parts).encode()[:limit])
    return Workload("ls -lR --color", events)


def top_screen(seconds: float) -> Workload:
    """``top`` left running: a full repaint every 3 s for ``seconds``."""
    gen = TopGen(random.Random(3))
    events: list[Event] = [
        (0.2, OUT, b"\x1b[?1049h\x1b[22;0;0t\x1b[1;24r\x1b(B\x1b[m\x1b[H\x1b[2J")
    ]
    t = 0.2
    while t < seconds:
        events.append((t + 0.01, OUT, gen.screen(3.0).encode()))
        t += 3.0
    events.append((t, IN, b"q"))
    events.append((t + 0.01, OUT, b"\x1b[24;1H\x1b[K\x1b[?1049l\x1b[23;0;0t"))
    return Workload("top (3 s refresh)", events)


PROMPT = "\x1b[01;32malice@web1\x1b[00m:\x1b[01;34m~/app\x1b[00m$ "
MOTD = (
    "Linux web1 6.1.0-26-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.112-1 x86_64\r\n\r\n"
    "The programs included with the Debian GNU/Linux system are free software;\r\n"
    "the exact distribution terms for each program are described in the\r\n"
    "individual files in /usr/share/doc/*/copyright.\r\n\r\n"
    "Last login: Fri Nov 29 08:12:44 2024 from 10.0.1.7\r\n"
)
COMMANDS = (
    "ls -l",
    "git status",
    "git log --oneline -15",
    "cat config.yaml",
    "grep -rn error src",
    "tail -f /var/log/syslog",
    "journalctl -u app -n 400 --no-pager",
    "df -h",
)
CONFIG = "".join(
    f"{k}:\r\n  host: {k}.internal\r\n  port: {5000 + i}\r\n  timeout_s: 30\r\n  retries: 3\r\n"
    for i, k in enumerate(("database", "redis", "queue", "auth", "metrics", "mailer", "search"))
)


def interactive(seconds: float) -> Workload:
    """A person at a shell: think, type (with typos), short outputs, ``tail -f`` trickles."""
    r = random.Random(4)
    logs = LogGen(r)
    packages = [_name(r) for _ in range(50)]
    events: list[Event] = [(0.3, OUT, MOTD.encode()), (0.31, OUT, PROMPT.encode())]
    t = 0.31
    while t < seconds:
        t += r.uniform(2.0, 20.0)  # read the last output, think
        cmd = r.choices(COMMANDS, (20, 12, 6, 8, 8, 10, 5, 6))[0]
        for ch in cmd + "\r":
            if ch != "\r" and r.random() < 0.03:  # a typo, then backspace
                t += max(0.04, r.gauss(0.14, 0.06))
                events += [(t, IN, b"x"), (t + 0.002, OUT, b"x")]
                t += max(0.1, r.gauss(0.3, 0.1))
                events += [(t, IN, b"\x7f"), (t + 0.002, OUT, b"\x08\x1b[K")]
            t += max(0.04, r.gauss(0.14, 0.06))
            events += [
                (t, IN, ch.encode()),
                (t + 0.002, OUT, b"\r\n" if ch == "\r" else ch.encode()),
            ]
        t += r.uniform(0.01, 0.2)
        if cmd.startswith("tail -f"):
            end = t + r.uniform(20.0, 240.0)
            while t < end:
                t += r.expovariate(0.8)
                logs.t = 9 * 3600.0 + t  # the log is live: its clock is the session's
                events.append((t, OUT, logs.line().encode()))
            events += [(t + 0.5, IN, b"\x03"), (t + 0.502, OUT, b"^C\r\n")]
            t += 0.51
        else:
            if cmd == "ls -l":
                text = ls_format(usr_dirs(r, packages)[0][1])
            elif cmd == "git status":
                text = (
                    "On branch main\r\nYour branch is up to date with 'origin/main'.\r\n\r\n"
                    "Changes not staged for commit:\r\n"
                    + "".join(
                        f"\t\x1b[31mmodified:   src/{_name(r)}.py\x1b[m\r\n"
                        for _ in range(r.randint(0, 4))
                    )
                    + '\r\nno changes added to commit (use "git add" and/or "git commit -a")\r\n'
                )
            elif cmd.startswith("git log"):
                text = "".join(
                    f"\x1b[33m{r.getrandbits(28):07x}\x1b[m {r.choice(('Fix', 'Add', 'Bump'))} "
                    f"{_name(r)} {r.choice(('handling', 'tests', 'timeout', 'docs'))}\r\n"
                    for _ in range(15)
                )
            elif cmd.startswith("cat"):
                text = CONFIG
            elif cmd.startswith("grep"):
                text = "".join(
                    f"\x1b[35msrc/{_name(r)}.py\x1b[m\x1b[36m:\x1b[m\x1b[32m{r.randint(1, 400)}"
                    f"\x1b[m\x1b[36m:\x1b[m        logger.\x1b[01;31merror\x1b[m"
                    f'("failed to {r.choice(("connect", "parse", "load"))} %s", exc)\r\n'
                    for _ in range(r.randint(1, 25))
                )
            elif cmd.startswith("journalctl"):
                text = "".join(logs.line() for _ in range(400))
            else:
                text = "Filesystem      Size  Used Avail Use% Mounted on\r\n" + "".join(
                    f"{dev:15s} {size:>5s} {r.randint(1, 90):4d}G {r.randint(1, 90):4d}G "
                    f"{r.randint(1, 99):3d}% {mnt}\r\n"
                    for dev, size, mnt in (("/dev/vda1", "252G", "/"), ("tmpfs", "7.8G", "/run"))
                )
            burst, t = _burst(t, text.encode())
            events += burst
        t += 0.005
        events.append((t, OUT, PROMPT.encode()))
    events.sort(key=lambda e: e[0])
    return Workload("interactive trickle", events)


def workloads(scale: Scale) -> list[Workload]:
    return [
        bulk_logs(scale.bulk_bytes),
        ls_listing(scale.ls_bytes),
        top_screen(scale.top_seconds),
        interactive(scale.interactive_seconds),
    ]


# -- recording with the real writer, on a fake clock -------------------------------------


class Sink(Protocol):
    """What ``play`` feeds: the writer or a peer."""

    def output(self, data: bytes) -> None: ...
    def input(self, data: bytes) -> None: ...
    def tick(self) -> None: ...


def play(events: Sequence[Event], clock: FakeClock, sink: Sink) -> None:
    """Feed events at their times, calling ``tick()`` every TICK seconds in between."""
    out, inp, tick = sink.output, sink.input, sink.tick
    next_tick = TICK
    for when, kind, data in events:
        while next_tick <= when:
            clock.now = next_tick
            tick()
            next_tick += TICK
        clock.now = when
        if kind == OUT:
            out(data)
        else:
            inp(data)
    end = clock.now + 2.0  # the session idles a little before it ends
    while next_tick <= end:
        clock.now = next_tick
        tick()
        next_tick += TICK


META = {"user": "alice", "target": "web1", "protocol": "ssh", "cols": COLS, "rows": ROWS}


def record(
    workload: Workload, path: Path, key: Ed25519PrivateKey, session_id: str = "bench"
) -> int:
    """Record ``workload`` with the default policy into ``path``; return the file size."""
    clock = FakeClock()
    writer = RecordingWriter.create(
        path, session_id, META, key, clock=clock, wall_clock=lambda: WALL_START + clock.now
    )
    writer.resize(COLS, ROWS)
    play(workload.events, clock, writer)
    writer.exit(0)
    return writer.close("client disconnected").stored_bytes


class NaiveStreamWriter:
    """The naive design: one zstd stream per session, block-flushed each second.

    Same durability as the writer's defaults (flush after 1 s, fsync every 5 s), but
    no chunk records, hash chain, signatures or index.
    """

    def __init__(self, path: Path, clock: FakeClock) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.stream = zstandard.ZstdCompressor(level=3).compressobj()
        self.clock = clock
        self.pending_since: float | None = None
        self.synced = clock.now

    def output(self, data: bytes) -> None:
        if self.pending_since is None:
            self.pending_since = self.clock.now
        out = self.stream.compress(data)
        if out:
            os.write(self.fd, out)

    input = output

    def tick(self) -> None:
        if self.pending_since is not None and self.clock.now - self.pending_since >= 1.0:
            os.write(self.fd, self.stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
            self.pending_since = None
            if self.clock.now - self.synced >= 5.0:
                os.fsync(self.fd)
                self.synced = self.clock.now

    def close(self) -> None:
        os.write(self.fd, self.stream.flush())
        os.close(self.fd)


# -- peers: asciicast v2 ------------------------------------------------------------------


def _cast_line(obj: object) -> str:
    # exactly what asciinema 2.x writes (asciinema/asciicast/v2.py)
    return json.dumps(obj, ensure_ascii=False, indent=None, separators=(", ", ": ")) + "\n"


def asciicast(workload: Workload) -> bytes:
    """The asciicast v2 file asciinema would write for the same events (input included)."""
    header: dict[str, object] = {"version": 2, "width": COLS, "height": ROWS}
    header["timestamp"] = int(WALL_START)
    header["env"] = {"SHELL": "/bin/bash", "TERM": "xterm-256color"}
    lines = [_cast_line(header), _cast_line([0.0, "r", f"{COLS}x{ROWS}"])]
    decoders = {
        OUT: ("o", codecs.getincrementaldecoder("utf-8")("replace")),
        IN: ("i", codecs.getincrementaldecoder("utf-8")("replace")),
    }
    for when, kind, data in workload.events:
        code, decoder = decoders[kind]
        lines.append(_cast_line([round(when, 6), code, decoder.decode(data)]))
    return "".join(lines).encode()


def asciinema_version() -> str | None:
    """The installed asciinema version if it is 2.x (the CLI this script drives)."""
    exe = shutil.which("asciinema")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(\d+)\.\d+\.\d+", done.stdout + done.stderr)
    return match.group(0) if match and match.group(1) == "2" else None


def asciinema_rec(output: bytes, work: Path) -> int | None:
    """Size of a real ``asciinema rec`` of ``cat`` of ``output``, or None if it failed.

    asciinema 2.x has no --headless flag but records fine with stdin from /dev/null.
    ``stty -opost`` keeps the pty from turning ``\\r\\n`` into ``\\r\\r\\n``; the final
    sleep keeps 2.x from dropping the tail when the child exits before it drained
    the pty. The recording is checked to hold exactly ``output``.
    """
    src, cast = work / "output.bin", work / "rec.cast"
    src.write_bytes(output)
    cmd = ["asciinema", "rec", "-q", "--overwrite", "--cols", str(COLS), "--rows", str(ROWS)]
    cmd += ["-c", f"stty -opost; cat {shlex.quote(str(src))}; sleep 0.3", str(cast)]
    env = dict(os.environ, TERM="xterm-256color", SHELL="/bin/sh")
    try:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=120)
        size = cast.stat().st_size
        lines = cast.read_text(encoding="utf-8").splitlines()
        events = [json.loads(line) for line in lines[1:]]
        seen = "".join(e[2] for e in events if e[1] == "o")
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    finally:
        src.unlink(missing_ok=True)
        cast.unlink(missing_ok=True)
    return size if seen == output.decode("utf-8", "replace") else None


# -- 1. size ------------------------------------------------------------------------------


@dataclass
class SizeRow:
    name: str
    duration: float
    events: int
    raw: int
    bastrec: int
    chunks: int
    cast: int
    cast_gz: int
    rec: int | None
    records: int
    """Bytes of recorder records (header, chunk records, checkpoints, index...)."""
    repacked: int
    """Size after ``recorder.repack`` (default RepackPolicy) of the closed file."""
    repacked_chunks: int
    repack_cpu: float
    """Process time of the repack (verify, copy, compress, verify the copy, rename)."""


SKIPPABLE_MAGIC = 0x184D2A5B


def record_bytes(data: bytes) -> int:
    """How much of a recording is recorder records rather than zstd chunk data (FORMAT.md §1)."""
    pos = total = 0
    while pos < len(data):
        magic, size = struct.unpack_from("<II", data, pos)
        if magic != SKIPPABLE_MAGIC:
            raise ValueError(f"unexpected frame magic {magic:#x} at offset {pos}")
        total += 8 + size
        if data[pos + 8 : pos + 9] == b"C":  # a chunk record; its zstd frame follows
            pos += struct.unpack_from("<I", data, pos + 8 + 29)[0]
        pos += 8 + size
    return total


def measure_repack(
    path: Path, key: Ed25519PrivateKey, events: Sequence[object]
) -> tuple[int, int, float]:
    """Repack the closed recording in place; check it still verifies and reads the same.

    Returns (file size, chunks, CPU seconds). ``min_saving=None`` so the figure is
    reported even when the repack would not be worth it.
    """
    gc.collect()
    start = time.process_time()
    done = repack(path, key, policy=RepackPolicy(min_saving=None))
    cpu = time.process_time() - start
    result = verify(path, key.public_key(), done.final_hash)
    with RecordingReader.open(path) as reader:
        same = list(reader.events()) == events
    if done.action != "repacked" or result.status != "intact" or not same:
        raise SystemExit(f"{path.name}: repacked recording does not round-trip ({result})")
    return done.bytes_after, done.chunks_after, cpu


def measure_size(loads: Iterable[Workload], work: Path, with_asciinema: bool) -> list[SizeRow]:
    """Record every workload and its asciicast peers; check the recording round-trips."""
    key = generate_signing_key()
    rows = []
    for i, load in enumerate(loads):
        path = work / f"size-{i}.bastrec"
        size = record(load, path, key)
        result = verify(path, key.public_key())
        with RecordingReader.open(path) as reader:
            events = list(reader.events())
            chunks = len(reader.index)
        out = b"".join(e.data for e in events if isinstance(e, Output))
        inp = b"".join(e.data for e in events if isinstance(e, Input))
        want_in = b"".join(d for _, k, d in load.events if k == IN)
        if result.status != "intact" or out != load.output() or inp != want_in:
            raise SystemExit(f"{load.name}: recording does not round-trip ({result})")
        records = record_bytes(path.read_bytes())
        repacked, repacked_chunks, repack_cpu = measure_repack(path, key, events)
        path.unlink()
        cast = asciicast(load)
        rec = asciinema_rec(load.output(), work) if with_asciinema else None
        rows.append(
            SizeRow(
                load.name,
                load.duration,
                len(load.events),
                load.raw_bytes,
                size,
                chunks,
                len(cast),
                len(gzip.compress(cast, 6)),
                rec,
                records,
                repacked,
                repacked_chunks,
                repack_cpu,
            )
        )
        print(f"  size: {load.name} done", file=sys.stderr)
    return rows


# -- 2. writer CPU --------------------------------------------------------------------------


@dataclass
class CpuRow:
    name: str
    raw: int
    duration: float
    writer: float
    copy: float
    naive: float


def copy_to_devnull(load: Workload) -> None:
    """The baseline: move the same pieces through os.write to /dev/null."""
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        for _, _, data in load.events:
            os.write(fd, data)
    finally:
        os.close(fd)


def record_naive(load: Workload, path: Path) -> None:
    """Record with NaiveStreamWriter, driven exactly like the real writer."""
    clock = FakeClock()
    stream = NaiveStreamWriter(path, clock)
    play(load.events, clock, stream)
    stream.close()


def cpu_seconds(fn: Callable[..., object], *args: object) -> float:
    """Process (user + system) CPU time of one call."""
    gc.collect()
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


def measure_cpu(loads: Iterable[Workload], work: Path, reps: int) -> list[CpuRow]:
    """Median CPU seconds per workload: real writer, /dev/null copy, naive zstd stream."""
    key = generate_signing_key()
    rows = []
    for load in loads:
        writer, copy, naive = [], [], []
        for rep in range(reps):
            path, naive_path = work / f"cpu-{rep}.bastrec", work / f"cpu-{rep}.zst"
            writer.append(cpu_seconds(record, load, path, key))
            copy.append(cpu_seconds(copy_to_devnull, load))
            naive.append(cpu_seconds(record_naive, load, naive_path))
            path.unlink()
            naive_path.unlink()
        med = statistics.median
        rows.append(
            CpuRow(load.name, load.raw_bytes, load.duration, med(writer), med(copy), med(naive))
        )
        print(f"  cpu: {load.name} done", file=sys.stderr)
    return rows


# -- 3. RSS per idle session (in a child process) -------------------------------------------


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def malloc_trim() -> bool:
    """Give freed heap back to the OS (glibc); False where there is no malloc_trim."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def rss_child(kind: str, n: int, directory: str) -> None:
    """Open ``n`` sessions of ``kind``, feed each ~40 KB, let them idle; print KiB each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n + 64, hard), hard))
    pool = interactive(900.0).output()
    per_session = 40_000
    clock = FakeClock()
    key = generate_signing_key()
    storage = LocalStorage(directory)
    sessions: list[object] = []

    def start(i: int) -> object:
        data = memoryview(pool)[(i * 7919) % (len(pool) - per_session) :][:per_session]
        if kind == "writer":
            writer = RecordingWriter.create(storage, f"s{i}", META, key, clock=clock)
            writer.resize(COLS, ROWS)
            for j in range(0, per_session, PIECE):
                writer.output(bytes(data[j : j + PIECE]))
            return writer
        stream = NaiveStreamWriter(Path(directory) / f"s{i}.zst", clock)
        for j in range(0, per_session, PIECE):
            stream.output(bytes(data[j : j + PIECE]))
        return stream

    # warm up: imports, the writer's shared per-thread compressor, allocator arenas
    warm = start(n)
    gc.collect()
    base = rss_kib()
    for i in range(n):
        sessions.append(start(i))
    gc.collect()
    active = rss_kib()
    clock.now += 2.0
    for s in sessions:
        s.tick()  # type: ignore[attr-defined]
    gc.collect()
    idle = rss_kib()
    trimmed = rss_kib() if malloc_trim() else None
    figures: dict[str, float | None] = {"active": (active - base) / n, "idle": (idle - base) / n}
    figures["trimmed"] = (trimmed - base) / n if trimmed is not None else None
    print(json.dumps(figures))
    for s in [warm, *sessions]:
        s.close()  # type: ignore[attr-defined]


@dataclass
class RssRow:
    what: str
    active: float
    idle: float
    trimmed: float | None
    """Idle, after malloc_trim(0): the live heap without freed-but-kept pages."""


def measure_rss(work: Path, n: int, reps: int) -> list[RssRow]:
    """Median RSS growth per session (KiB) over ``reps`` fresh child processes."""
    rows = []
    for kind, label in (("writer", "bastion RecordingWriter"), ("naive", "naive zstd stream")):
        active, idle, trimmed = [], [], []
        for rep in range(reps):
            directory = work / f"rss-{kind}-{rep}"
            directory.mkdir()
            cmd = [sys.executable, __file__, "--rss-child", kind, str(n), str(directory)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise SystemExit(f"RSS child failed:\n{done.stderr}")
            figures = json.loads(done.stdout.splitlines()[-1])
            active.append(figures["active"])
            idle.append(figures["idle"])
            if figures["trimmed"] is not None:
                trimmed.append(figures["trimmed"])
            shutil.rmtree(directory)
        med = statistics.median
        rows.append(RssRow(label, med(active), med(idle), med(trimmed) if trimmed else None))
        print(f"  rss: {label} done", file=sys.stderr)
    return rows


# -- report -------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def size_table(rows: list[SizeRow]) -> str:
    out = []
    for r in rows:
        rec = f"{r.rec / r.bastrec:.1f}x" if r.rec is not None else "n/a"
        out.append(
            [
                r.name,
                f"{r.duration / 60:.1f} min" if r.duration >= 60 else f"{r.duration:.1f} s",
                f"{r.events}/{r.chunks}",
                mb(r.raw),
                mb(r.bastrec),
                f"{100 * r.records / r.bastrec:.0f}%",
                f"{r.raw / r.bastrec:.1f}x",
                f"{r.cast / r.bastrec:.1f}x",
                f"{r.cast_gz / r.bastrec:.2f}x",
                rec,
            ]
        )
    head = ["workload", "duration", "events/chunks", "terminal bytes", ".bastrec", "records"]
    head += ["raw/.bastrec", ".cast/.bastrec", ".cast.gz/.bastrec", "rec(cat)/.bastrec"]
    return table(head, out)


def repack_table(rows: list[SizeRow]) -> str:
    """Live recording against the same file after ``recorder.repack`` (default policy)."""
    out = []
    for r in rows:
        met = "met" if r.raw / r.repacked >= SIZE_TARGET else "**missed**"
        out.append(
            [
                r.name,
                f"{r.chunks} -> {r.repacked_chunks}",
                mb(r.bastrec),
                mb(r.repacked),
                f"{r.raw / r.bastrec:.1f}x",
                f"{r.raw / r.repacked:.1f}x",
                f"{r.bastrec / r.repacked:.1f}x",
                f"{r.cast_gz / r.repacked:.2f}x",
                f"{r.raw / r.repack_cpu / 1e6:.1f} MB/s" if r.repack_cpu > 0 else "n/a",
                f"≥ {SIZE_TARGET:.0f}x: {met}",
            ]
        )
    head = ["workload", "chunks", ".bastrec", "repacked", "raw/.bastrec", "raw/repacked"]
    head += ["live/repacked", ".cast.gz/repacked", "repack CPU", "target"]
    return table(head, out)


def cpu_table(rows: list[CpuRow]) -> str:
    out = []
    for r in rows:
        out.append(
            [
                r.name,
                mb(r.raw),
                f"{r.raw / r.writer / 1e6:.0f} MB/s",
                f"{r.raw / r.copy / 1e6:.0f} MB/s",
                f"{r.writer / r.copy:.1f}x",
                f"{r.raw / r.naive / 1e6:.0f} MB/s",
                f"{r.writer / r.naive:.2f}x",
                f"{100 * r.writer / r.duration:.2g}%",
            ]
        )
    head = ["workload", "recorded", "writer", "/dev/null copy", "writer/copy CPU"]
    head += ["naive zstd stream", "writer/naive CPU", "writer core use"]
    return table(head, out)


def rss_table(rows: list[RssRow]) -> str:
    def kib(x: float | None) -> str:
        return f"{x:.1f} KiB" if x is not None else "n/a"

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.0f}x" if a is not None and b else "n/a"

    writer, naive = rows
    out = [[r.what, kib(r.active), kib(r.idle), kib(r.trimmed)] for r in rows]
    out.append(
        [
            "naive/bastion",
            ratio(naive.active, writer.active),
            ratio(naive.idle, writer.idle),
            ratio(naive.trimmed, writer.trimmed),
        ]
    )
    head = ["per session", "40 KB fed, not flushed", "idle (flushed)", "idle, after malloc_trim"]
    return table(head, out)


def compare(peer: float, ours: float, better: str, worse: str) -> str:
    """'3.1x smaller' when peer/ours >= 1, else '1.4x larger' (ours/peer)."""
    if peer >= ours:
        return f"{peer / ours:.1f}x {better}"
    return f"{ours / peer:.1f}x {worse}"


def summary(sizes: list[SizeRow], cpus: list[CpuRow], rss: list[RssRow]) -> str:
    """The headline figures as one markdown table (what bench/README.md quotes)."""
    rows = []
    for r in sizes:
        met = "met" if r.raw / r.bastrec >= SIZE_TARGET else "**missed**"
        rows.append(
            [
                f"size, {r.name}",
                mb(r.bastrec),
                f"raw {mb(r.raw)}",
                compare(r.raw, r.bastrec, "smaller", "larger"),
                f"≥ {SIZE_TARGET:.0f}x: {met}",
            ]
        )
    for r in sizes:
        met = "met" if r.raw / r.repacked >= SIZE_TARGET else "**missed**"
        rows.append(
            [
                f"size repacked, {r.name}",
                mb(r.repacked),
                f"raw {mb(r.raw)}",
                compare(r.raw, r.repacked, "smaller", "larger"),
                f"≥ {SIZE_TARGET:.0f}x: {met}",
            ]
        )
    rec = sum(r.bastrec for r in sizes)
    repacked = sum(r.repacked for r in sizes)
    for label, peer in (
        ("asciicast v2", sum(r.cast for r in sizes)),
        ("gzip'ed asciicast", sum(r.cast_gz for r in sizes)),
    ):
        rows.append(
            [
                f"size vs {label}, all",
                mb(rec),
                mb(peer),
                compare(peer, rec, "smaller", "larger"),
                "",
            ]
        )
        rows.append(
            [
                f"size repacked vs {label}, all",
                mb(repacked),
                mb(peer),
                compare(peer, repacked, "smaller", "larger"),
                "",
            ]
        )
    for c in (cpus[0], cpus[-1]):
        mbs = f"{c.raw / c.writer / 1e6:.0f} MB/s"
        rows.append(
            [
                f"writer CPU, {c.name}",
                mbs,
                f"/dev/null copy {c.raw / c.copy / 1e6:.0f} MB/s",
                compare(c.copy, c.writer, "less CPU", "more CPU"),
                "",
            ]
        )
        rows.append(
            [
                f"writer CPU, {c.name}",
                mbs,
                f"naive zstd stream {c.raw / c.naive / 1e6:.0f} MB/s",
                compare(c.naive, c.writer, "less CPU", "more CPU"),
                "",
            ]
        )
    writer, naive = rss
    met = "met" if writer.idle <= RSS_TARGET_KIB else "**missed**"
    rows.append(
        [
            "RSS per idle session",
            f"{writer.idle:.1f} KiB",
            f"naive zstd stream {naive.idle:.0f} KiB",
            compare(naive.idle, writer.idle, "less", "more"),
            f"≤ {RSS_TARGET_KIB:.0f} KiB: {met}",
        ]
    )
    return table(["figure", "bastion", "peer (same run)", "bastion is", "target"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, fewer reps")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        kind, n, directory = args.rss_child
        rss_child(kind, int(n), directory)
        return
    scale = QUICK if args.quick else FULL
    started = time.monotonic()
    version = asciinema_version()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        work = Path(tmp)
        print("generating workloads...", file=sys.stderr)
        loads = workloads(scale)
        sizes = measure_size(loads, work, version is not None)
        cpus = measure_cpu(loads, work, scale.cpu_reps)
        rss = measure_rss(work, scale.rss_sessions, scale.rss_reps)
    mode = "--quick" if args.quick else "full"
    print(f"# recording benchmark ({mode} run, Python {sys.version.split()[0]})\n")
    print("## Size (real RecordingWriter, default WriterPolicy, fake clock ticked every 0.25 s)\n")
    print(size_table(sizes))
    print()
    print("terminal bytes = output + input; ratios > 1 mean .bastrec is smaller.")
    print("records = the share of the file that is recorder records (chunk records,")
    print("  checkpoints, header, trailer, index) rather than zstd data.")
    print("Every .bastrec was read back (events identical) and verified intact first.")
    print(".cast = asciicast v2 of the same events (input included), written by this script")
    print("  exactly as asciinema 2.x writes it; .cast.gz = the same, gzip -6.")
    if version is not None:
        print(f"rec(cat) = a real `asciinema rec -c 'cat FILE'` (asciinema {version}; it has no")
        print("  --headless flag but runs with stdin from /dev/null): output only, no timing.")
    else:
        print("rec(cat): asciinema 2.x is not installed, so the real CLI was not run;")
        print("  the .cast columns are generated by this script.")
    print("\n## Size after repack (recorder.repack, default RepackPolicy, of the same files)\n")
    print(repack_table(sizes))
    print()
    print("repacked = the closed .bastrec rewritten by recorder.repack: chunks of up to 2 MiB")
    print("  raw at zstd level 19, same events, fresh chain and signatures; read back (events")
    print("  identical) and verified intact. live/repacked = how much the repack saves.")
    print("repack CPU = terminal bytes / process time of the whole repack (verify the original,")
    print("  copy, compress, verify the copy, rename): it runs once per closed session.")
    print(f"\n## Writer CPU (median of {scale.cpu_reps}, time.process_time)\n")
    print(cpu_table(cpus))
    print()
    print("writer = create + events + ticks + close (compress, hash, sign, write, fsync).")
    print("copy = os.write of the same pieces to /dev/null.")
    print("naive = one ZstdCompressor(level=3).compressobj() per session, driven the same way:")
    print("  block-flushed after 1 s, fsynced every 5 s; no chain, signatures or index.")
    print("writer core use = writer CPU / session duration: the share of one core that one")
    print("  such session costs at the workload's own pace.")
    print(
        f"\n## RSS per session ({scale.rss_sessions} sessions in a fresh process, "
        f"median of {scale.rss_reps}, VmRSS growth)\n"
    )
    print(rss_table(rss))
    print()
    print("Every session got ~40 KB of interactive output in 4 KiB pieces, then ticks flushed")
    print("them all at once. VmRSS keeps the heap pages of those freed buffers (glibc does not")
    print("return them; a server reuses them for the next bursts); malloc_trim(0) shows what")
    print("stays live. The naive contexts stay live whatever the allocator does.")
    print(f"\n## Summary\n\n{summary(sizes, cpus, rss)}")
    sys.stdout.flush()
    print(f"\n({time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
