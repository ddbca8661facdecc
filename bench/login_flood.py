"""Keystroke echo of a live session while failing logins flood the node.

One run, one node (production config values, ``bench/node.py``), one live
``ssh -tt`` session through it running ``dd`` in a raw PTY (``EchoSession``, as
``bench/ssh.py``'s echo figure). Echo round trips are sampled three times: before
the flood, during it, and after it. The flood is ``--procs`` worker processes of
asyncssh clients, together offering ``--rate`` failing logins a second (default
200): a full key exchange, then a public key for a user that does not exist. Each
attempt comes from its own source address in 127.2.0.0/16 (all of 127/8 is local),
a spray the per-address limit and the penalties cannot stop, so the node does the
whole work of every attempt the caps let in. The report gives echo p50/p99 for
each phase and what became of the attempts (failed at authentication, dropped at
``max_startups``, timed out).

    PYTHONPATH=. python bench/login_flood.py              # 200/s for 20 s, ~1.5 min
    PYTHONPATH=. python bench/login_flood.py --rate 100 --seconds 10 --samples 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from node import BastionHarness
from report import percentile, say, table
from ssh_measure import EchoSession
from ssh_peers import Peer, restart_node_info_logging, start_node
from ssh_procs import reap_all


async def _flood(port: int, rate: float, seconds: float, worker: int) -> dict[str, int]:
    """Offer ``rate`` failing logins a second for ``seconds``; count the outcomes."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    outcomes: Counter[str] = Counter()
    in_flight = asyncio.Semaphore(400)

    async def attempt(i: int) -> None:
        n = worker * 30_000 + i
        source = f"127.2.{n // 250 % 250 + 1}.{n % 250 + 1}"
        async with in_flight:
            try:
                async with asyncssh.connect(
                    "127.0.0.1",
                    port,
                    local_addr=(source, 0),
                    username=f"guess{n}",
                    client_keys=[key],
                    known_hosts=None,
                    preferred_auth="publickey",
                    connect_timeout=15,
                ):
                    outcomes["logged in (!)"] += 1
            except asyncssh.PermissionDenied:
                outcomes["failed at authentication"] += 1
            except (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError):
                outcomes["dropped at accept (max_startups)"] += 1
            except TimeoutError:
                outcomes["timed out"] += 1
            except (OSError, asyncssh.Error) as e:
                outcomes[f"other: {type(e).__name__}"] += 1

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks: list[asyncio.Task[None]] = []
    while (elapsed := loop.time() - t0) < seconds:
        while len(tasks) < int(elapsed * rate):
            tasks.append(asyncio.create_task(attempt(len(tasks))))
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    outcomes["offered"] = len(tasks)
    return dict(outcomes)


class LiveSession(Peer):
    """A contractor's ``ssh -tt`` to web1 through the node (key + TOTP, as in production)."""

    name = "bastion"

    def __init__(self, harness: BastionHarness) -> None:
        self.harness = harness

    def command(
        self, remote: str, tty_: bool = False, same_kex: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        h = self.harness
        who = h.contractor("live")
        h.grant(who, "web1", seconds=4 * 3600)
        argv = ["ssh", *who.ssh_args(), "-p", str(h.port), "-tt", f"{who.name}%web1@127.0.0.1"]
        return [*argv, remote], who.ssh_env()


def _worker(args: argparse.Namespace) -> int:
    result = asyncio.run(_flood(args.port, args.rate, args.seconds, args.worker))
    Path(args.out).write_text(json.dumps(result))
    return 0


def _sample(session: EchoSession, n: int, rng: random.Random) -> list[float]:
    out = []
    for i in range(n):
        out.append(session.sample(bytes([97 + i % 26])))
        time.sleep(rng.uniform(0.01, 0.03))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=200, help="failing logins a second (all workers)")
    p.add_argument("--seconds", type=float, default=20, help="how long the flood lasts")
    p.add_argument("--procs", type=int, default=2, help="flood worker processes")
    p.add_argument("--samples", type=int, default=300, help="echo samples per phase")
    p.add_argument(
        "--no-address-limit",
        action="store_true",
        help="[login_limits] address_max_failures = 0 (no failure rows: what they cost)",
    )
    p.add_argument("--flood-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.flood_worker:
        return _worker(args)
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="login-flood-") as tmp:
        work = Path(tmp)
        h = start_node(work)
        try:
            if args.no_address_limit:
                text = h.config.path.read_text()
                h.config.path.write_text(
                    text.replace("address_max_failures = 20", "address_max_failures = 0")
                )
                restart_node_info_logging(h)
            session = EchoSession(LiveSession(h), 10_000_000)
            for _ in range(20):  # warm-up
                session.sample(b"w")
            say(f"echo without the flood ({args.samples} samples)")
            quiet = _sample(session, args.samples, rng)
            say(f"flood: {args.rate:g}/s for {args.seconds:g} s from {args.procs} processes")
            outs = [work / f"flood-{w}.json" for w in range(args.procs)]
            workers = [
                subprocess.Popen(
                    [sys.executable, __file__, "--flood-worker", "--port", str(h.port)]
                    + ["--rate", str(args.rate / args.procs), "--seconds", str(args.seconds)]
                    + ["--worker", str(w), "--out", str(out)]
                )
                for w, out in enumerate(outs)
            ]
            time.sleep(min(3.0, args.seconds / 4))  # let the flood reach its rate
            flooded: list[float] = []
            while len(flooded) < args.samples and all(w.poll() is None for w in workers):
                flooded += _sample(session, 10, rng)
            for w in workers:
                w.wait(timeout=args.seconds + 120)
            after = _sample(session, args.samples, rng)
            outcomes: Counter[str] = Counter()
            for out in outs:
                outcomes.update(json.loads(out.read_text()))
            session.close()  # dd is still reading: the ssh client is ended here
        finally:
            h.close()
            reap_all()
    ms = 1000.0
    rows = [
        [name, str(len(v)), f"{percentile(v, 50) * ms:.2f}", f"{percentile(v, 99) * ms:.2f}"]
        for name, v in (("no flood", quiet), ("during the flood", flooded), ("after", after))
        if v
    ]
    print()
    print(table(["phase", "samples", "echo p50 ms", "echo p99 ms"], rows))
    print()
    offered = outcomes.pop("offered", 0)
    print(
        f"flood: {offered} attempts offered in {args.seconds:g} s ({offered / args.seconds:.0f}/s)"
    )
    for name, count in sorted(outcomes.items()):
        print(f"  {name}: {count} ({count / args.seconds:.0f}/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
