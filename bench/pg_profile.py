"""Where the PostgreSQL proxy's time goes, next to the Python floor relay (issue 17).

``bench/pg.py`` says how far the bastion is from ``bench/pg_floor_relay.py``;
this script says why. For each workload it runs pgbench (8 clients) through the
floor and through the bastion and measures, per transaction:

* CPU of the relay process (``/proc/PID/stat`` utime+stime, all its threads),
  of pgbench (``RUSAGE_CHILDREN``) and of the PostgreSQL backends (their
  ``/proc`` counters sampled until they exit);
* context switches of the relay (voluntary and involuntary, all threads);
* with ``--strace``: system calls of the relay per transaction (``strace -c -f``
  attached for a separate, shorter run: strace slows the relay, so its TPS is
  not reported, only the counts);
* the latency a single client sees (``pgbench -c 1``), direct, floor and bastion:
  what each hop adds per statement without contention;
* with ``--py-spy DIR``: a py-spy profile of the node (speedscope JSON) per workload.

Run from the repository root::

    PYTHONPATH=. python bench/pg_profile.py [--seconds 5] [--strace] [--py-spy DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from node import make_harness, production_config
from pg import Peer, bastion_token, bench_server, direct_libpq_env, floor_relay, pgbench_bin, say

TICK = os.sysconf("SC_CLK_TCK")
TPS = re.compile(r"tps = ([0-9.]+) \(without")
LATENCY = re.compile(r"latency average = ([0-9.]+) ms")
STRACE_ROW = re.compile(r"^\s*[0-9.]+\s+[0-9.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all threads), in seconds; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches over all threads of ``pid``."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol += int(line.split()[1])
    return vol, invol


def children(ppid: int) -> list[int]:
    """The processes whose parent is ``ppid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat[1]) == ppid:
                found.append(int(entry.name))
    return found


class BackendCpu:
    """Samples the CPU of a postmaster's backends until they exit (they die with pgbench)."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster
        self.before = {pid: cpu_seconds(pid) for pid in children(postmaster)}
        self.last: dict[int, float] = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for pid in children(self.postmaster):
                cpu = cpu_seconds(pid)
                if cpu:
                    self.last[pid] = max(cpu, self.last.get(pid, 0.0))

    def total(self) -> float:
        """CPU seconds the backends used since this started (stops sampling)."""
        self._stop.set()
        self._thread.join()
        return sum(v - self.before.get(pid, 0.0) for pid, v in self.last.items())


@dataclass
class Measure:
    """One pgbench run through one relay."""

    tps: float
    tx: int
    relay_cpu: float
    pgbench_cpu: float
    backend_cpu: float
    vol: int
    invol: int

    def row(self, name: str, workload: str) -> str:
        """A markdown row: per-transaction figures in microseconds and switches."""
        per = 1e6 / self.tx if self.tx else 0.0
        return (
            f"| {workload} | {name} | {self.tps:,.0f} | {self.relay_cpu * per:.0f} | "
            f"{self.pgbench_cpu * per:.0f} | {self.backend_cpu * per:.0f} | "
            f"{self.vol / self.tx:.1f} | {self.invol / self.tx:.2f} |"
        )


def pgbench(exe: str, peer: Peer, args: Sequence[str]) -> str:
    """Run pgbench; its stdout (raises on failure)."""
    database = peer.env.get("PGDATABASE", "bench")
    result = subprocess.run(
        [exe, *args, "-n", database], env=peer.env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"pgbench via {peer.name} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def measure(exe: str, peer: Peer, pid: int, postmaster: int, args: Sequence[str]) -> Measure:
    """One pgbench run with the relay's, pgbench's and the backends' CPU around it."""
    backends = BackendCpu(postmaster)
    cpu0, (vol0, invol0) = cpu_seconds(pid), switches(pid)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = pgbench(exe, peer, args)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1, (vol1, invol1) = cpu_seconds(pid), switches(pid)
    tps = float(TPS.search(out).group(1))  # type: ignore[union-attr]
    tx = int(re.search(r"actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    bench_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    return Measure(tps, tx, cpu1 - cpu0, bench_cpu, backends.total(), vol1 - vol0, invol1 - invol0)


def strace_counts(exe: str, peer: Peer, pid: int, args: Sequence[str], work: Path) -> str:
    """System calls of ``pid`` per transaction during one pgbench run, as a short list."""
    out = work / f"strace-{pid}-{secrets.token_hex(3)}.txt"
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-q", "-o", str(out), "-p", str(pid)], stderr=subprocess.DEVNULL
    )
    time.sleep(1.0)  # attached to every thread before the run starts
    text = pgbench(exe, peer, args)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(30)
    tx = int(re.search(r"actually processed: (\d+)", text).group(1))  # type: ignore[union-attr]
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        found = STRACE_ROW.match(line)
        if found and found.group(2) != "total":
            calls[found.group(2)] = int(found.group(1))
    total = sum(calls.values())
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
    listed = ", ".join(f"{name} {n / tx:.2f}" for name, n in top)
    return f"{total / tx:.1f} per tx ({listed})"


def main(argv: Sequence[str] | None = None) -> None:
    """Start the peers, measure each workload, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--strace", action="store_true", help="count system calls (a separate run)")
    ap.add_argument("--py-spy", type=Path, default=None, help="write py-spy profiles here")
    ap.add_argument("--log-level", default=None, help="[node] log_level for the bastion")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-pgprof-"))
    os.chmod(work, 0o755)  # noqa: S103  postgres must reach it
    try:
        with ExitStack() as stack:
            server, user, password = stack.enter_context(bench_server())
            postmaster = int((Path(server.data_dir) / "postmaster.pid").read_text().split()[0])
            exe = pgbench_bin(server)
            direct_env = direct_libpq_env(server, user, password)
            subprocess.run(
                [exe, "-i", "-q", "-s", "1", "bench"],
                env=direct_env,
                check=True,
                capture_output=True,
            )
            floor_port, floor_pid = stack.enter_context(floor_relay(work, server))
            h = make_harness(work / "bastion")
            stack.callback(h.close)
            h.stop()
            production_config(h)
            if args.log_level:
                text = h.config.path.read_text()
                h.config.path.write_text(
                    text.replace("[node]\n", f'[node]\nlog_level = "{args.log_level}"\n', 1)
                )
            h.start()
            name, token = bastion_token(h, server, user, password)
            assert h.proc is not None
            tls = {"PGHOST": "127.0.0.1", "PGSSLMODE": "require"}
            relays = [
                (Peer("floor", {**direct_env, **tls, "PGPORT": str(floor_port)}), 0),
                (
                    Peer(
                        "bastion",
                        {
                            **direct_env,
                            **tls,
                            "PGPORT": str(h.pg_port),
                            "PGUSER": name,
                            "PGPASSWORD": token,
                        },
                    ),
                    h.proc.pid,
                ),
            ]
            relays[0] = (relays[0][0], floor_pid)
            direct = Peer("direct", direct_env)
            workloads = {
                "select-only simple": ["-S", "-M", "simple"],
                "select-only extended": ["-S", "-M", "extended"],
                "select-only prepared": ["-S", "-M", "prepared"],
                "tpcb-like simple": ["-M", "simple"],
            }
            load = ["-c", str(args.clients), "-j", "2", "-T", str(args.seconds)]
            rows = [
                "| workload | relay | TPS | relay CPU µs/tx | pgbench CPU µs/tx | "
                "backends CPU µs/tx | relay vol. switches/tx | invol./tx |",
                "|---|---|---|---|---|---|---|---|",
            ]
            lat = ["| workload | direct ms | floor ms | bastion ms |", "|---|---|---|---|"]
            sys_rows = ["| workload | floor syscalls | bastion syscalls |", "|---|---|---|"]
            for w, wargs in workloads.items():
                for peer, pid in relays:
                    m = measure(exe, peer, pid, postmaster, [*wargs, *load])
                    say(f"{w:<22} {peer.name:<8} {m.tps:>9,.0f} tps")
                    rows.append(m.row(peer.name, w))
                one = ["-c", "1", "-j", "1", "-T", str(args.seconds)]
                cells = []
                for peer in (direct, relays[0][0], relays[1][0]):
                    found = LATENCY.search(pgbench(exe, peer, [*wargs, *one]))
                    cells.append(found.group(1) if found else "?")
                lat.append(f"| {w} | " + " | ".join(cells) + " |")
                if args.strace:
                    short = ["-c", str(args.clients), "-j", "2", "-T", "3"]
                    counts = [
                        strace_counts(exe, p, pid, [*wargs, *short], work) for p, pid in relays
                    ]
                    sys_rows.append(f"| {w} | " + " | ".join(counts) + " |")
                if args.py_spy is not None:
                    args.py_spy.mkdir(parents=True, exist_ok=True)
                    out = args.py_spy / (w.replace(" ", "-") + ".txt")
                    spy = subprocess.Popen(
                        ["py-spy", "record", "-p", str(h.proc.pid), "-d", str(args.seconds)]
                        + ["-r", "250", "-f", "raw", "-o", str(out), "--nonblocking"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    pgbench(exe, relays[1][0], [*wargs, *load])
                    spy.wait(60)
            print("\n".join(rows) + "\n")
            print("Single client (pgbench -c 1), average latency per transaction:\n")
            print("\n".join(lat) + "\n")
            if args.strace:
                print("System calls of the relay per transaction (strace -c -f, 3 s run):\n")
                print("\n".join(sys_rows) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
