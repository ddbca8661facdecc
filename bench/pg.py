"""Side-by-side PostgreSQL benchmark: bastion against direct and pgbouncer.

Peers, all on loopback and started by this script, in front of one PostgreSQL 15
(a throwaway cluster, ``pgbench -i`` at the chosen scale):

* **direct** - pgbench to PostgreSQL (scram-sha-256, no TLS);
* **pgbouncer** - the Debian package in session mode, scram auth, no TLS;
* **pgbouncer+TLS** - the same with ``client_tls_sslmode = require`` (what a
  deployment that carries passwords over a network would run);
* **python floor** - ``bench/pg_floor_relay.py``: the cheapest hop Python can
  make, a uvloop relay that terminates TLS like the bastion and then only copies
  bytes (no parsing, tracking or recording): the ceiling for any Python relay
  with TLS on this machine;
* **bastion** - ``bastion serve`` (a real subprocess from the test harness),
  TLS required as always, every query recorded; the password is a database
  token fetched with ``ssh ... db-token`` (public key + TOTP) like a contractor.
* **bastion+rules** - the same node and database through a second target that
  20 SQL guardrail rules apply to (``GUARD_RULES``: drop, truncate, bulk
  delete/update, COPY to a program, ALTER SYSTEM... none matching pgbench), so
  every statement is judged; reported as a ratio to **bastion** (issue 17: at
  least 0.9x).

Workloads: ``pgbench -S`` (select-only) with ``-M simple`` and ``-M extended``,
and the TPC-B-like default, each with ``--clients`` clients and 2 threads for
``--seconds`` seconds. Peers are interleaved round by round and the median TPS
of ``--rounds`` rounds is reported, with each peer's ratio to pgbouncer's.

Run from the repository root::

    PYTHONPATH=. python bench/pg.py [--quick] [--rounds 3] [--seconds 10]

Tables (markdown) go to stdout, progress to stderr. Everything started is
stopped and the temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bastion.openssh_target import free_port
from bastion.store.models import Credset, TargetKind
from node import BastionHarness, make_harness, production_config
from tests.peers.postgres import PgServer, find_pg_bin, start_pg_server

TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")


def say(msg: str) -> None:
    """Progress to stderr."""
    print(f"[bench/pg {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Peer:
    """One way to reach the database with pgbench."""

    name: str
    env: dict[str, str]
    tps: dict[str, list[float]] = field(default_factory=dict)


def pgbench_bin(server: PgServer) -> str:
    """The pgbench matching the server, else the one on PATH."""
    exe = server.bin_dir / "pgbench"
    return str(exe) if exe.exists() else "pgbench"


def run_pgbench(exe: str, peer: Peer, args: Sequence[str], seconds: int) -> float:
    """One pgbench run; its TPS (excluding connection time)."""
    database = peer.env.get("PGDATABASE", "bench")  # through the bastion: the target's name
    cmd = [exe, *args, "-T", str(seconds), "-j", "2", "-n", database]
    result = subprocess.run(
        cmd, env=peer.env, capture_output=True, text=True, timeout=seconds + 120
    )
    found = TPS.search(result.stdout)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench via {peer.name} failed:\n{result.stdout}\n{result.stderr}")
    return float(found.group(1))


def stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def pgbouncer(work: Path, server: PgServer, user: str, password: str, tls: bool) -> Iterator[int]:
    """pgbouncer in session mode in front of ``server``; yields its port."""
    port = free_port()
    base = work / ("pgbouncer-tls" if tls else "pgbouncer")
    base.mkdir()
    (base / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    lines = [
        "[databases]",
        f"bench = host={server.host} port={server.port} dbname=bench",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        f"unix_socket_dir = {base}",
        "auth_type = scram-sha-256",
        f"auth_file = {base / 'userlist.txt'}",
        "pool_mode = session",
        "max_client_conn = 200",
        "default_pool_size = 50",
        f"logfile = {base / 'pgbouncer.log'}",
        f"pidfile = {base / 'pgbouncer.pid'}",
    ]
    if tls:
        from bastion.pg.tls_cert import make_node_certificate

        make_node_certificate(base / "tls.crt", base / "tls.key", "localhost")
        lines += [
            "client_tls_sslmode = require",
            f"client_tls_cert_file = {base / 'tls.crt'}",
            f"client_tls_key_file = {base / 'tls.key'}",
        ]
    ini = base / "pgbouncer.ini"
    ini.write_text("\n".join(lines) + "\n")
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        pw = pwd.getpwnam("postgres")
        for path in [base, *base.iterdir()]:
            os.chown(path, pw.pw_uid, pw.pw_gid)
        kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    proc = subprocess.Popen(
        ["pgbouncer", str(ini)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **kwargs,  # type: ignore[call-overload]
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                sslmode = "require" if tls else "disable"
                dsn = f"host=127.0.0.1 port={port} user={user} password={password} dbname=bench"
                with psycopg.connect(dsn, sslmode=sslmode, connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(
                        "pgbouncer did not start: "
                        + (base / "pgbouncer.log").read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.2)
        yield port
    finally:
        stop(proc)


@contextmanager
def floor_relay(work: Path, server: PgServer) -> Iterator[int]:
    """``bench/pg_floor_relay.py`` in front of ``server``; yields its port."""
    from bastion.pg.tls_cert import make_node_certificate

    base = work / "floor"
    base.mkdir()
    make_node_certificate(base / "tls.crt", base / "tls.key", "localhost")
    port = free_port()
    script = Path(__file__).with_name("pg_floor_relay.py")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--listen",
            str(port),
            "--upstream",
            f"{server.host}:{server.port}",
            "--cert",
            str(base / "tls.crt"),
            "--key",
            str(base / "tls.key"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the floor relay did not start")
        yield port
    finally:
        stop(proc)


GUARD_RULES: list[tuple[str, ...]] = [
    ("no-drop", "--sql", "drop"),
    ("no-truncate", "--sql", "truncate"),
    ("no-bulk-delete", "--sql", "delete-without-where"),
    ("no-bulk-update", "--sql", "update-without-where"),
    ("no-copy-program", "--sql", "copy-program"),
    ("no-copy-file", "--sql", "copy-file"),
    ("no-alter-system", "--sql", "alter-system"),
    ("no-grant", "--sql", "grant"),
    ("no-roles", "--sql", "role"),
    ("no-set-role", "--sql", "set-role"),
    ("no-do", "--sql", "do-block"),
    ("no-ddl-accounts", "--sql", "ddl", "--tables", "pgbench_accounts"),
    ("no-ddl-branches", "--sql", "ddl", "--tables", "pgbench_branches"),
    ("no-delete-history", "--sql", "delete", "--tables", "pgbench_history"),
    ("no-secrets", "--sql", "select", "--tables", "secret*"),
    ("no-pii", "--sql", "select,update", "--tables", "pii.*"),
    ("no-audit-writes", "--sql", "insert,update,delete", "--tables", "audit_*"),
    ("no-lock-tellers", "--sql", "lock", "--tables", "pgbench_tellers"),
    ("no-unparsable", "--sql", "unparsable"),
    ("try-maintenance", "--sql", "maintenance", "--shadow"),
]
"""20 SQL rules as an admin would write them, none matching what pgbench sends."""


def guard(h: BastionHarness, target: str) -> None:
    """Put ``GUARD_RULES`` on ``target`` only (other targets keep no SQL rules)."""
    for name, *spec in GUARD_RULES:
        r = h.cli("policy", "add", name, *spec, "--action", "deny", "--target", target)
        if r.returncode != 0:
            raise RuntimeError(f"policy add {name} failed: {r.stderr}")


def bastion_token(
    h: BastionHarness, server: PgServer, user: str, password: str, target: str = "bench"
) -> tuple[str, str]:
    """Register the target, grant a fresh contractor, fetch a token over SSH."""
    now = time.time()
    h.store.add_target(
        name=target,
        kind=TargetKind.POSTGRES,
        host=server.host,
        port=server.port,
        logins=[],
        principal="bench",
        database="bench",
        credsets=[Credset("rw", user, password)],
        now=now,
    )
    who = h.contractor("bench")
    h.store.add_grant(
        user_id=who.user.id,
        target_id=h.target(target).id,
        login=None,
        credset="rw",
        not_before=now,
        not_after=now + 6 * 3600,
        reason="bench",
        requested_by="bench",
        approved_by="bench",
        options=(),
        now=now,
    )
    result = who.ssh("db-token", target)
    found = re.search(rb"token:\s*(\S+)", result.stdout)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"db-token failed: {result.stdout!r} {result.stderr!r}")
    return who.name, found.group(1).decode()


def median(values: Sequence[float]) -> float:
    """Median (0 for none)."""
    return statistics.median(values) if values else 0.0


def _verdict(bastion: float, bouncer: float) -> str:
    """The issue's target for pgbench -S: at least pgbouncer's TPS, recording every query."""
    met = bouncer > 0 and bastion >= bouncer
    return "≥ 1.0x pgbouncer: " + ("met" if met else "**missed**")


def report(peers: Sequence[Peer], workloads: Sequence[str], args: argparse.Namespace) -> str:
    """Markdown table: median TPS per peer and the ratios that matter per workload."""

    def tps(name: str, w: str) -> float:
        return median(next(p for p in peers if p.name == name).tps[w])

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    ratios = (
        "bastion / pgbouncer",
        "bastion / pgbouncer+TLS",
        "python floor / pgbouncer",
        "bastion+rules / bastion",
    )
    head = "| workload | " + " | ".join([*(p.name for p in peers), *ratios, "target"]) + " |"
    sep = "|" + "---|" * (len(peers) + 2 + len(ratios))
    rows = [head, sep]
    for w in workloads:
        cells = [f"{median(p.tps[w]):,.0f}" for p in peers]
        bastion, bouncer = tps("bastion", w), tps("pgbouncer", w)
        cells += [
            ratio(bastion, bouncer),
            ratio(bastion, tps("pgbouncer+TLS", w)),
            ratio(tps("python floor", w), bouncer),
            ratio(tps("bastion+rules", w), bastion),
            _verdict(bastion, bouncer) if w.startswith("select-only") else "",
        ]
        rows.append(f"| {w} | " + " | ".join(cells) + " |")
    note = (
        f"\nMedian TPS of {args.rounds} interleaved rounds, {args.clients} clients, "
        f"2 pgbench threads, {args.seconds} s each, scale {args.scale}; "
        "the bastion records every query.\n"
    )
    return "\n".join(rows) + note


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.scale = 1, 3, 1
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries not found (set BASTION_PG_BIN)")
    work = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    os.chmod(work, 0o755)  # noqa: S103  postgres must reach it
    try:
        with ExitStack() as stack:
            say("starting PostgreSQL")
            server = stack.enter_context(start_pg_server(bin_dir))
            server.execute("ALTER SYSTEM SET max_connections = 200")
            user, password = "bench_user", secrets.token_urlsafe(12)
            server.create_role(user, password)
            server.execute(f"CREATE DATABASE bench OWNER {user}")
            exe = pgbench_bin(server)
            direct_env = {
                **os.environ,
                "PGHOST": server.host,
                "PGPORT": str(server.port),
                "PGUSER": user,
                "PGPASSWORD": password,
                "PGSSLMODE": "disable",
            }
            say(f"pgbench -i -s {args.scale}")
            subprocess.run(
                [exe, "-i", "-q", "-s", str(args.scale), "bench"],
                env=direct_env,
                check=True,
                capture_output=True,
            )
            say("starting pgbouncer (plain and TLS)")
            bouncer = stack.enter_context(pgbouncer(work, server, user, password, tls=False))
            bouncer_tls = stack.enter_context(pgbouncer(work, server, user, password, tls=True))
            say("starting the python floor relay")
            floor = stack.enter_context(floor_relay(work, server))
            say("starting the bastion")
            h = make_harness(work / "bastion")
            stack.callback(h.close)
            h.stop()
            production_config(h)
            h.start()
            name, token = bastion_token(h, server, user, password)
            g_name, g_token = bastion_token(h, server, user, password, "guarded")
            guard(h, "guarded")
            peers = [
                Peer("direct", direct_env),
                Peer("pgbouncer", {**direct_env, "PGPORT": str(bouncer), "PGHOST": "127.0.0.1"}),
                Peer(
                    "pgbouncer+TLS",
                    {**direct_env, "PGPORT": str(bouncer_tls), "PGSSLMODE": "require"},
                ),
                Peer(
                    "python floor",
                    {**direct_env, "PGHOST": "127.0.0.1", "PGPORT": str(floor)}
                    | {"PGSSLMODE": "require"},
                ),
                Peer(
                    "bastion",
                    {
                        **direct_env,
                        "PGHOST": "127.0.0.1",
                        "PGPORT": str(h.pg_port),
                        "PGUSER": name,
                        "PGPASSWORD": token,
                        "PGSSLMODE": "require",
                    },
                ),
                Peer(
                    "bastion+rules",
                    {
                        **direct_env,
                        "PGHOST": "127.0.0.1",
                        "PGPORT": str(h.pg_port),
                        "PGUSER": g_name,
                        "PGPASSWORD": g_token,
                        "PGSSLMODE": "require",
                        "PGDATABASE": "guarded",
                    },
                ),
            ]
            workloads = {
                "select-only simple": ["-S", "-M", "simple"],
                "select-only extended": ["-S", "-M", "extended"],
                "tpcb-like simple": ["-M", "simple"],
            }
            for p in peers:
                p.tps = {w: [] for w in workloads}
            for rnd in range(args.rounds):
                for w, wargs in workloads.items():
                    order = peers[rnd % len(peers) :] + peers[: rnd % len(peers)]
                    for p in order:
                        tps = run_pgbench(exe, p, [*wargs, "-c", str(args.clients)], args.seconds)
                        p.tps[w].append(tps)
                        say(f"round {rnd + 1} {w:<22} {p.name:<14} {tps:>9,.0f} tps")
            print(report(peers, list(workloads), args))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
