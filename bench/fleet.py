"""Scale-out figures: one node with 1 and 2 workers, two nodes behind HAProxy, next to OpenSSH.

Five paths to the same kind of OpenSSH target, measured side by side in one run
(rounds interleaved so a busy machine loads them alike):

- ``direct``: OpenSSH client to sshd; ``ProxyJump``: through an OpenSSH jump host;
- ``bastion w=1``: one node, ``[node] workers = 1`` (PostgreSQL state);
- ``bastion w=2``: one node, ``[node] workers = 2`` (PostgreSQL state);
- ``2 nodes+HAProxy``: two nodes on one PostgreSQL state behind HAProxy 2.6 (TCP
  mode, round-robin, PROXY v2).

Figures: login time (one at a time), login rate with 16 at once, PTY throughput
of one stream and of 4 streams at once (``head -c N /dev/zero``), keystroke echo.
Workers help what runs in parallel (many logins, many streams); one session
stays on one process, so single-stream and echo figures should not move.

    PYTHONPATH=. python bench/fleet.py            # ~6 min on 2 cores
    PYTHONPATH=. python bench/fleet.py --quick    # ~3 min
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion.openssh_target import OpenSSHTarget
from bastion.store.models import TargetKind
from bastion.target_setup import default_principal
from node import LOGIN, BastionHarness, make_harness, production_config
from report import percentile, say, table
from ssh_measure import measure_echo, measure_setup, measure_stream
from ssh_peers import (
    TARGET,
    BastionPeer,
    FloorPeer,
    OpenSSHPeer,
    Peer,
    restart_node_info_logging,
    rotated,
    ssh_configs,
    start_sshd,
)
from ssh_procs import BenchError, err_tail, reap, reap_all, spawn
from tests.bastion.test_proxy_haproxy import PROXY_ON, second_node
from tests.peers.haproxy import HAProxy, start_haproxy
from tests.peers.postgres import PgServer, find_pg_bin, start_pg_server

PARALLEL_LOGINS = 16
PARALLEL_STREAMS = 4


class RoutedPeer(BastionPeer):
    """A bastion peer reached on another port (HAProxy's), under its own name."""

    def __init__(self, harness: BastionHarness, name: str, port: int) -> None:
        super().__init__(harness)
        self.name = name
        self.port = port

    def command(
        self, remote: str, tty_: bool = False, same_kex: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command(remote, tty_, same_kex)
        i = argv.index("-p")
        argv[i + 1] = str(self.port)
        return argv, env


def named(peer: BastionPeer, name: str) -> BastionPeer:
    """``peer`` reported as ``name``."""
    peer.name = name
    return peer


def set_workers(h: BastionHarness, workers: int) -> None:
    """Production values (``production_config``), then ``workers``; restart the node."""
    h.stop()
    production_config(h)
    text = h.config.path.read_text()
    h.config.path.write_text(text.replace('workers = "auto"', f"workers = {workers}"))
    restart_node_info_logging(h)


def add_target(h: BastionHarness, work: Path) -> OpenSSHTarget:
    """An sshd trusting this node's CA, registered as the bench target."""
    t = start_sshd(work, h.ca, TARGET)
    h.targets["bench"] = t  # stopped with the harness
    h.store.add_target(
        name=TARGET,
        kind=TargetKind.SSH,
        host=t.host,
        port=t.port,
        logins=[LOGIN],
        principal=default_principal(TARGET),
        host_keys=[t.host_key_line],
        now=time.time(),
    )
    return t


def parallel_logins(
    peers: Sequence[Peer], n: int, rounds: int, work: Path
) -> dict[str, list[float]]:
    """Logins per second with ``n`` ``ssh ... true`` started at once."""
    out: dict[str, list[float]] = {p.name: [] for p in peers}
    err = work / "parallel.err"
    for i in range(rounds):
        for peer in rotated(peers, i):
            commands = [peer.command("true") for _ in range(n)]
            with open(err, "wb") as e:
                start = time.perf_counter()
                procs = []
                for argv, env in commands:
                    peer.before_spawn(env)
                    procs.append(spawn(argv, env=env, stdin=subprocess.DEVNULL, stdout=e, stderr=e))
                codes = [reap(p, timeout=120) for p in procs]
                wall = time.perf_counter() - start
            if any(codes):
                raise BenchError(f"{peer.name}: {codes.count(0)}/{n} logins: {err_tail(err)}")
            out[peer.name].append(n / wall)
            say(f"  {peer.name}: {n / wall:.1f} logins/s")
    return out


def _drain(proc: subprocess.Popen[bytes], sizes: list[int], k: int) -> None:
    """Read one stream to its end, counting into ``sizes[k]``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while chunk := os.read(fd, 1 << 20):
        sizes[k] += len(chunk)


def parallel_streams(
    peers: Sequence[Peer], streams: int, mib: int, rounds: int, work: Path
) -> dict[str, list[float]]:
    """Aggregate MB/s of ``streams`` PTY streams of ``mib`` MiB each, started together."""
    out: dict[str, list[float]] = {p.name: [] for p in peers}
    err = work / "streams.err"
    for i in range(rounds):
        for peer in rotated(peers, i):
            commands = [
                peer.command(f"head -c {mib}M /dev/zero", tty_=True) for _ in range(streams)
            ]
            with open(err, "wb") as e:
                procs = []
                for argv, env in commands:
                    peer.before_spawn(env)
                    procs.append(
                        spawn(
                            argv,
                            env=env,
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=e,
                        )
                    )
                start = time.perf_counter()
                sizes = [0] * len(procs)
                readers = [
                    threading.Thread(target=_drain, args=(p, sizes, k)) for k, p in enumerate(procs)
                ]
                for t in readers:
                    t.start()
                for t in readers:
                    t.join()
                wall = time.perf_counter() - start
                total = sum(sizes)
                codes = [reap(p, timeout=60) for p in procs]
            if any(codes) or total < streams * (mib << 20):
                raise BenchError(f"{peer.name}: streams {codes}, {total} bytes: {err_tail(err)}")
            out[peer.name].append(total / wall / 1e6)
            say(f"  {peer.name}: {total / wall / 1e6:.0f} MB/s over {streams} streams")
    return out


@dataclass
class Fleet:
    """What the run started, for the report and the clean-up."""

    nodes: list[BastionHarness]
    haproxy: HAProxy | None = None


@contextlib.contextmanager
def started(work: Path, server: PgServer) -> Iterator[tuple[list[Peer], Fleet]]:
    """Targets, the three bastion set-ups and the OpenSSH peers."""
    fleet = Fleet([])
    try:
        say("bastion w=1, w=2 and the HAProxy pair, each on its own PostgreSQL state")
        w1 = make_harness(work / "w1", state_url=server.dsn(server.create_database()))
        fleet.nodes.append(w1)
        set_workers(w1, 1)
        w2 = make_harness(work / "w2", state_url=server.dsn(server.create_database()))
        fleet.nodes.append(w2)
        set_workers(w2, 2)
        a = make_harness(
            work / "a", state_url=server.dsn(server.create_database()), overrides=PROXY_ON
        )
        fleet.nodes.append(a)
        set_workers(a, 1)
        b = second_node(a, work / "b")
        fleet.nodes.append(b)
        fleet.haproxy = start_haproxy(work / "haproxy", [a.port, b.port], [a.pg_port, b.pg_port])
        host_key = a.known_hosts.read_text().split(" ", 1)[1]
        a.known_hosts.write_text(f"[127.0.0.1]:{fleet.haproxy.ssh_port} {host_key}")
        target = add_target(w1, w1.dir / "bench-target")
        for h in (w2, a):
            add_target(h, h.dir / "bench-target")
        say("OpenSSH jump host (w=1's CA)")
        jump = start_sshd(work, w1.ca, "jump")
        w1.targets["jump"] = jump
        floor = FloorPeer(work)
        configs = ssh_configs(work, target, jump, w1.ca, floor)
        peers: list[Peer] = [
            OpenSSHPeer("direct", configs, "direct", target),
            OpenSSHPeer("ProxyJump", configs, "viajump", jump),
            named(BastionPeer(w1), "bastion w=1"),
            named(BastionPeer(w2), "bastion w=2"),
            RoutedPeer(a, "2 nodes+HAProxy", fleet.haproxy.ssh_port),
        ]
        yield peers, fleet
    finally:
        reap_all()
        if fleet.haproxy is not None:
            fleet.haproxy.stop()
        for h in reversed(fleet.nodes):
            if h.targets:
                h.close()
            else:
                h.stop()  # b: a's store, no targets of its own


def row(name: str, values: Sequence[float], ref: float, unit: str) -> list[str]:
    """median, and the ratio to ``ref`` (the direct path)."""
    med = statistics.median(values)
    return [name, f"{med:.1f} {unit}", f"{med / ref:.2f}x" if ref else "-"]


def report(res: dict[str, dict[str, list[float]]], peers: Sequence[Peer]) -> str:
    names = [p.name for p in peers]
    out = []
    for key, title, unit, higher in (
        ("setup", "login, one at a time (median wall s)", "s", False),
        ("logins", f"logins per second, {PARALLEL_LOGINS} at once", "/s", True),
        ("stream", "PTY throughput, one stream (MB/s)", "MB/s", True),
        ("streams", f"PTY throughput, {PARALLEL_STREAMS} streams at once (MB/s)", "MB/s", True),
    ):
        ref = statistics.median(res[key]["direct"])
        rows = [row(n, res[key][n], ref, unit) for n in names]
        out.append(f"\n**{title}** ({'higher' if higher else 'lower'} is better; vs direct)\n")
        out.append(table(["path", "median", "vs direct"], rows))
    echo = res["echo"]
    rows = [
        [n, f"{percentile(echo[n], 50) * 1e3:.2f} ms", f"{percentile(echo[n], 99) * 1e3:.2f} ms"]
        for n in names
    ]
    out.append("\n**keystroke echo** (round trip of one byte)\n")
    out.append(table(["path", "p50", "p99"], rows))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller streams")
    args = parser.parse_args(argv)
    rounds, mib, echo = (2, 32, 100) if args.quick else (4, 64, 300)
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries not found (set BASTION_PG_BIN)")
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    os.chmod(work, 0o755)  # noqa: S103  postgres and sshd must reach it
    res: dict[str, dict[str, list[float]]] = {}
    try:
        with start_pg_server(bin_dir) as server, started(work, server) as (peers, _fleet):
            say(f"1/5 logins one at a time x{rounds * 3}")
            res["setup"] = measure_setup(peers, rounds * 3, work)
            say(f"2/5 {PARALLEL_LOGINS} logins at once x{rounds}")
            res["logins"] = parallel_logins(peers, PARALLEL_LOGINS, rounds, work)
            say(f"3/5 one PTY stream of {mib * 4} MiB x{rounds}")
            res["stream"], _cpu = measure_stream(
                peers, f"head -c {mib * 4}M /dev/zero", (mib * 4) << 20, rounds, work
            )
            say(f"4/5 {PARALLEL_STREAMS} PTY streams of {mib} MiB at once x{rounds}")
            res["streams"] = parallel_streams(peers, PARALLEL_STREAMS, mib, rounds, work)
            say(f"5/5 keystroke echo, {echo} samples per path")
            res["echo"] = measure_echo(peers, echo)
            print(report(res, peers))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
