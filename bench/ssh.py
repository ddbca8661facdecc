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
  relay with no recording, in its own process (``ssh_floor.py``),
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
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import ssh_floor
from bastion.store.models import TargetKind
from bastion.target_setup import default_principal
from node import LOGIN
from report import say
from ssh_concurrency import Verified, measure_concurrency, verify_recordings
from ssh_measure import (
    measure_echo,
    measure_setup,
    measure_stream,
    remote_shell_start,
    write_log_file,
)
from ssh_peers import (
    FLOOR,
    SAME_KEX,
    TARGET,
    BastionPeer,
    FloorPeer,
    OpenSSHPeer,
    Peer,
    restart_node_info_logging,
    ssh_configs,
    start_node,
    start_sshd,
)
from ssh_procs import BenchError, reap_all
from ssh_report import FULL, QUICK, Results, Scale, conc_details, details, summary


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
    h = start_node(work / "node")
    target = jump = None
    try:
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
        ssh_floor.main(args.asyncssh_floor)
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
    print("has ML-KEM but no sntrup761 without liboqs, OpenSSH 9.2 the reverse: the bastion's")
    print("two legs use curve25519).")
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
