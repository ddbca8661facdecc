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
* **bastion w=1**, **bastion w=2** (``--cases workers``) - two more nodes on a
  PostgreSQL state database with ``[node] workers = 1`` and ``2``, select-only
  workloads only: the aggregate TPS a second worker process buys on this host.

Bulk results (``--cases bulk``, ``bench/pg_bulk.py``): ``COPY (…) TO STDOUT`` of
about ``--bulk-mb`` MB and a ``SELECT`` of ``--bulk-mb`` x 3000 rows, read to the
end by psql through direct, pgbouncer+TLS, the python floor and the bastion, in
MB/s, with the bastion's ratio to the floor (issue 17: at least 0.85x).

Workloads: ``pgbench -S`` (select-only) with ``-M simple`` and ``-M extended``,
and the TPC-B-like default, each with ``--clients`` clients and 2 threads for
``--seconds`` seconds. Peers are interleaved round by round and the median TPS
of ``--rounds`` rounds is reported, with each peer's ratio to pgbouncer's.

Run from the repository root::

    PYTHONPATH=. python bench/pg.py [--quick] [--rounds 3] [--seconds 10]
        [--bulk-mb 1000] [--cases pgbench,workers,bulk]

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
from pg_bulk import BulkCase, bulk_cases, run_bulk
from ssh_peers import restart_node_info_logging
from tests.peers.postgres import PgServer, find_pg_bin, start_pg_server

TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
CONNECT = re.compile(r"initial connection time = ([0-9.]+) ms")


def say(msg: str) -> None:
    """Progress to stderr."""
    print(f"[bench/pg {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Peer:
    """One way to reach the database with pgbench."""

    name: str
    env: dict[str, str]
    tps: dict[str, list[float]] = field(default_factory=dict)
    only: frozenset[str] | None = None
    """The workloads this peer runs (None: all)."""
    mbps: dict[str, list[float]] = field(default_factory=dict)
    """Bulk case name -> MB/s per round."""
    cpu_pid: int | None = None
    """The hop's process (pgbouncer, the floor, a bastion node with its workers as
    children), whose CPU is measured."""
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    """Workload -> the hop's CPU microseconds per transaction, per round."""


def pgbench_bin(server: PgServer) -> str:
    """The pgbench matching the server, else the one on PATH."""
    exe = server.bin_dir / "pgbench"
    return str(exe) if exe.exists() else "pgbench"


def run_pgbench(exe: str, peer: Peer, args: Sequence[str], seconds: int) -> tuple[float, float]:
    """One pgbench run; its TPS (excluding connection time) and its connection time (ms)."""
    database = peer.env.get("PGDATABASE", "bench")  # through the bastion: the target's name
    cmd = [exe, *args, "-T", str(seconds), "-j", "2", "-n", database]
    result = subprocess.run(
        cmd, env=peer.env, capture_output=True, text=True, timeout=seconds + 120
    )
    found = TPS.search(result.stdout)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench via {peer.name} failed:\n{result.stdout}\n{result.stderr}")
    connect = CONNECT.search(result.stdout)
    return float(found.group(1)), float(connect.group(1)) if connect else 0.0


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants (a node's worker processes)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # exited meanwhile
            continue
    return total


def settle(pid: int, busy: float = 0.05, longest: float = 30.0) -> float:
    """Wait until ``pid``'s process tree uses under ``busy`` of a core; the seconds waited.

    After a run the node still works on it (recordings closed and indexed by the search
    indexer, repacks): measured in the next run of the same node, that work went to
    whichever peer came next (bastion+rules, always right after bastion: its CPU per
    transaction and TPS carried bastion's leftovers; with the order swapped the gap
    swapped too).
    """
    start = time.monotonic()
    while time.monotonic() - start < longest:
        cpu0 = tree_cpu_seconds(pid)
        time.sleep(0.5)
        if tree_cpu_seconds(pid) - cpu0 < busy * 0.5:
            break
    return time.monotonic() - start


def stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def pgbouncer(
    work: Path, server: PgServer, user: str, password: str, tls: bool
) -> Iterator[tuple[int, int]]:
    """pgbouncer in session mode in front of ``server``; yields its port and process id."""
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
        yield port, proc.pid
    finally:
        stop(proc)


@contextmanager
def floor_relay(work: Path, server: PgServer) -> Iterator[tuple[int, int]]:
    """``bench/pg_floor_relay.py`` in front of ``server``; yields its port and process id."""
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
        yield port, proc.pid
    finally:
        stop(proc)


GUARD_RULES: list[tuple[str, ...]] = [
    ("no-drop", "deny", "--sql", "drop"),
    ("no-truncate", "deny", "--sql", "truncate"),
    ("no-bulk-delete", "deny", "--sql", "delete-without-where"),
    ("no-bulk-update", "deny", "--sql", "update-without-where"),
    ("no-copy-program", "deny", "--sql", "copy-program"),
    ("no-copy-file", "deny", "--sql", "copy-file"),
    ("no-alter-system", "deny", "--sql", "alter-system"),
    ("approve-grant", "hold", "--sql", "grant"),
    ("approve-roles", "hold", "--sql", "role"),
    ("no-set-role", "deny", "--sql", "set-role"),
    ("warn-do", "warn", "--sql", "do-block"),
    ("approve-ddl-accounts", "hold", "--sql", "ddl", "--tables", "pgbench_accounts"),
    ("no-ddl-branches", "deny", "--sql", "ddl", "--tables", "pgbench_branches"),
    ("no-delete-history", "deny", "--sql", "delete", "--tables", "pgbench_history"),
    ("no-secrets", "deny", "--sql", "select", "--tables", "secret*"),
    ("no-pii", "deny", "--sql", "select,update", "--tables", "pii.*"),
    ("warn-audit-writes", "warn", "--sql", "insert,update,delete", "--tables", "audit_*"),
    ("approve-lock-tellers", "hold", "--sql", "lock", "--tables", "pgbench_tellers"),
    ("no-unparsable", "deny", "--sql", "unparsable"),
    ("try-maintenance", "deny", "--sql", "maintenance", "--shadow"),
]
"""20 SQL rules as an admin would write them (deny, hold for approval, warn, one
shadow rule), none matching what pgbench sends. Column masking needs no rule: it
applies to captured rows, and the benchmark runs with row capture off (the default)."""


def guard(h: BastionHarness, target: str) -> None:
    """Put ``GUARD_RULES`` on ``target`` only (other targets keep no SQL rules)."""
    for name, action, *spec in GUARD_RULES:
        r = h.cli("policy", "add", name, *spec, "--action", action, "--target", target)
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


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _verdict(bastion: float, bouncer: float) -> str:
    """The issue's target for pgbench -S: at least pgbouncer's TPS, recording every query."""
    met = bouncer > 0 and bastion >= bouncer
    return "≥ 1.0x pgbouncer: " + ("met" if met else "**missed**")


def _median_of(peers: Sequence[Peer], name: str, w: str) -> float:
    """Median TPS of peer ``name`` on workload ``w`` (0 if that peer did not run)."""
    return next((median(p.tps.get(w, [])) for p in peers if p.name == name), 0.0)


def report(peers: Sequence[Peer], workloads: Sequence[str], args: argparse.Namespace) -> str:
    """Markdown table: median TPS per peer and the ratios that matter per workload."""

    def tps(name: str, w: str) -> float:
        return _median_of(peers, name, w)

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
            _ratio(bastion, bouncer),
            _ratio(bastion, tps("pgbouncer+TLS", w)),
            _ratio(tps("python floor", w), bouncer),
            _ratio(tps("bastion+rules", w), bastion),
            _verdict(bastion, bouncer) if w.startswith("select-only") else "",
        ]
        rows.append(f"| {w} | " + " | ".join(cells) + " |")
    note = (
        f"\nMedian TPS of {args.rounds} interleaved rounds, {args.clients} clients, "
        f"2 pgbench threads, {args.seconds} s each, scale {args.scale}; "
        "the bastion records every query.\n"
    )
    return "\n".join(rows) + note


def workers_report(peers: Sequence[Peer], workers: Sequence[Peer], args: argparse.Namespace) -> str:
    """Aggregate TPS of one node with 1 and 2 worker processes, next to pgbouncer."""
    rows = [
        "| workload | pgbouncer | bastion | bastion w=1 | bastion w=2 "
        "| w=2 / w=1 | w=2 / pgbouncer |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in WORKER_WORKLOADS:
        bouncer, w1, w2 = (
            _median_of(peers, "pgbouncer", w),
            _median_of(workers, "bastion w=1", w),
            _median_of(workers, "bastion w=2", w),
        )
        cells = [f"{v:,.0f}" if v else "-" for v in (bouncer, _median_of(peers, "bastion", w))]
        cells += [f"{w1:,.0f}", f"{w2:,.0f}", _ratio(w2, w1), _ratio(w2, bouncer)]
        rows.append(f"| {w} | " + " | ".join(cells) + " |")
    note = (
        f"\n**bastion w=1** and **w=2**: nodes on a PostgreSQL state database with "
        f"`[node] workers` = 1 and 2 (the **bastion** column: SQLite state, one process); "
        f"same rounds, clients and seconds as above; {os.cpu_count()} cores on this host.\n"
    )
    return "\n".join(rows) + note


def cpu_report(peers: Sequence[Peer], workloads: Sequence[str]) -> str:
    """Each hop's CPU per transaction: steadier than TPS on a shared machine."""
    rows = [
        "| workload | " + " | ".join(p.name for p in peers) + " |",
        "|" + "---|" * (len(peers) + 1),
    ]
    for w in workloads:
        cells = [f"{median(p.cpu_us[w]):.0f}" if p.cpu_us.get(w) else "-" for p in peers]
        rows.append(f"| {w} | " + " | ".join(cells) + " |")
    note = (
        "\nThe hop's CPU (user + system; a node with all its worker processes) in µs per "
        "transaction, median of the rounds, the run's logins included. For a node that is "
        "the whole node: SSH, the recorder's threads and the search indexer are in it.\n"
    )
    return "\n".join(rows) + note


def bulk_report(peers: Sequence[Peer], cases: Sequence[BulkCase], args: argparse.Namespace) -> str:
    """MB/s per path and case, with the bastion's ratio to the floor."""
    rows = [
        "| case | " + " | ".join(p.name for p in peers) + " | bastion / python floor | target |",
        "|" + "---|" * (len(peers) + 3),
    ]
    for case in cases:

        def mbps(name: str, case: BulkCase = case) -> float:
            return next(median(p.mbps[case.name]) for p in peers if p.name == name)

        bastion, floor = mbps("bastion"), mbps("python floor")
        met = floor > 0 and bastion >= 0.85 * floor
        cells = [f"{median(p.mbps[case.name]):,.0f}" for p in peers]
        cells += [_ratio(bastion, floor), "≥ 0.85x floor: " + ("met" if met else "**missed**")]
        rows.append(f"| {case.name} | " + " | ".join(cells) + " |")
    note = (
        f"\nMB/s (10^6 bytes of the result as psql writes it, over the statement's own time), "
        f"median of {args.rounds} interleaved rounds; COPY of about {args.bulk_mb} MB, "
        "one psql client; the bastion records the session as in production.\n"
    )
    return "\n".join(rows) + note


WORKER_WORKLOADS = ("select-only simple", "select-only extended")
CASES = ("pgbench", "workers", "bulk")


def _cases(text: str) -> frozenset[str]:
    chosen = frozenset(c.strip() for c in text.split(",") if c.strip())
    if not chosen or chosen - set(CASES):
        raise argparse.ArgumentTypeError(f"cases are a comma list of {', '.join(CASES)}")
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (``--quick`` shrinks everything for a smoke run)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument(
        "--bulk-mb", type=int, help="size of the COPY case in MB (default 1000, 50 with --quick)"
    )
    ap.add_argument(
        "--cases",
        type=_cases,
        default=frozenset(CASES),
        help="comma list of pgbench (the TPS table), workers (1 and 2 worker processes), "
        "bulk (COPY and SELECT in MB/s); default: all",
    )
    ap.add_argument(
        "--quick", action="store_true", help="1 round of 3 s, scale 1, 50 MB bulk (a smoke run)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.scale = 1, 3, 1
    if args.bulk_mb is None:
        args.bulk_mb = 50 if args.quick else 1000
    return args


def start_bastion(
    work: Path, name: str, state_url: str | None = None, workers: int | None = None
) -> BastionHarness:
    """A node with production config values and log level; ``workers`` if given."""
    h = make_harness(work / name, state_url=state_url)
    h.stop()
    production_config(h)
    if workers is not None:
        text = h.config.path.read_text()
        h.config.path.write_text(text.replace('workers = "auto"', f"workers = {workers}"))
    restart_node_info_logging(h)
    return h


def node_pid(h: BastionHarness) -> int:
    """The node's (supervisor's) process id."""
    if h.proc is None:
        raise RuntimeError("the bastion node is not running")
    return h.proc.pid


def bastion_env(base: dict[str, str], h: BastionHarness, user: str, token: str) -> dict[str, str]:
    """libpq environment for a contractor reaching the node's PostgreSQL listener."""
    return base | {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(h.pg_port),
        "PGUSER": user,
        "PGPASSWORD": token,
        "PGSSLMODE": "require",
    }


def direct_libpq_env(server: PgServer, user: str, password: str) -> dict[str, str]:
    """The environment that points libpq clients straight at the bench's PostgreSQL."""
    return {
        **os.environ,
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": user,
        "PGPASSWORD": password,
        "PGSSLMODE": "disable",
    }


@contextmanager
def bench_server() -> Iterator[tuple[PgServer, str, str]]:
    """A throwaway PostgreSQL with room for the peers' connections and the bench role
    and database; yields (server, user, password). Shared with ``bench/pg_profile.py``."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries not found (set BASTION_PG_BIN)")
    with start_pg_server(bin_dir) as server:
        server.execute("ALTER SYSTEM SET max_connections = 200")
        user, password = "bench_user", secrets.token_urlsafe(12)
        server.create_role(user, password)
        server.execute(f"CREATE DATABASE bench OWNER {user}")
        yield server, user, password


def main(argv: Sequence[str] | None = None) -> None:  # noqa: C901  one linear script
    """Run the benchmark and print the tables."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    os.chmod(work, 0o755)  # noqa: S103  postgres must reach it
    try:
        with ExitStack() as stack:
            say("starting PostgreSQL")
            server, user, password = stack.enter_context(bench_server())
            exe = pgbench_bin(server)
            psql = str(server.bin_dir / "psql") if (server.bin_dir / "psql").exists() else "psql"
            direct_env = direct_libpq_env(server, user, password)
            say(f"pgbench -i -s {args.scale}")
            subprocess.run(
                [exe, "-i", "-q", "-s", str(args.scale), "bench"],
                env=direct_env,
                check=True,
                capture_output=True,
            )
            say("starting pgbouncer (plain and TLS)")
            bouncer, bouncer_pid = stack.enter_context(
                pgbouncer(work, server, user, password, tls=False)
            )
            bouncer_tls, bouncer_tls_pid = stack.enter_context(
                pgbouncer(work, server, user, password, tls=True)
            )
            say("starting the python floor relay")
            floor, floor_pid = stack.enter_context(floor_relay(work, server))
            say("starting the bastion")
            h = start_bastion(work, "bastion")
            stack.callback(h.close)
            name, token = bastion_token(h, server, user, password)
            g_name, g_token = bastion_token(h, server, user, password, "guarded")
            guard(h, "guarded")
            peers = [
                Peer("direct", direct_env),
                Peer(
                    "pgbouncer",
                    {**direct_env, "PGPORT": str(bouncer), "PGHOST": "127.0.0.1"},
                    cpu_pid=bouncer_pid,
                ),
                Peer(
                    "pgbouncer+TLS",
                    {**direct_env, "PGPORT": str(bouncer_tls), "PGSSLMODE": "require"},
                    cpu_pid=bouncer_tls_pid,
                ),
                Peer(
                    "python floor",
                    {**direct_env, "PGHOST": "127.0.0.1", "PGPORT": str(floor)}
                    | {"PGSSLMODE": "require"},
                    cpu_pid=floor_pid,
                ),
                Peer("bastion", bastion_env(direct_env, h, name, token), cpu_pid=node_pid(h)),
                Peer(
                    "bastion+rules",
                    bastion_env(direct_env, h, g_name, g_token) | {"PGDATABASE": "guarded"},
                    cpu_pid=node_pid(h),
                ),
            ]
            workers: list[Peer] = []
            if "workers" in args.cases:
                for n in (1, 2):
                    say(f"starting a bastion with {n} worker(s) on PostgreSQL state")
                    wh = start_bastion(
                        work, f"w{n}", server.dsn(server.create_database()), workers=n
                    )
                    stack.callback(wh.close)
                    w_name, w_token = bastion_token(wh, server, user, password)
                    env = bastion_env(direct_env, wh, w_name, w_token)
                    only = frozenset(WORKER_WORKLOADS)
                    workers.append(Peer(f"bastion w={n}", env, only=only, cpu_pid=node_pid(wh)))
            workloads = {
                "select-only simple": ["-S", "-M", "simple"],
                "select-only extended": ["-S", "-M", "extended"],
                "tpcb-like simple": ["-M", "simple"],
            }
            pgbench_peers = (peers if "pgbench" in args.cases else []) + workers
            cases = bulk_cases(args.bulk_mb) if "bulk" in args.cases and args.bulk_mb > 0 else []
            bulk_names = ("direct", "pgbouncer+TLS", "python floor", "bastion")
            bulk_peers = [p for p in peers if p.name in bulk_names]
            for p in pgbench_peers:
                p.tps = {w: [] for w in workloads if p.only is None or w in p.only}
            for p in bulk_peers:
                p.mbps = {c.name: [] for c in cases}
            for rnd in range(args.rounds):
                for w, wargs in workloads.items():
                    k = rnd % max(len(pgbench_peers), 1)
                    for p in pgbench_peers[k:] + pgbench_peers[:k]:
                        if w not in p.tps:
                            continue
                        if p.cpu_pid:
                            settle(p.cpu_pid)
                        cpu0 = tree_cpu_seconds(p.cpu_pid) if p.cpu_pid else 0.0
                        tps, connect_ms = run_pgbench(
                            exe, p, [*wargs, "-c", str(args.clients)], args.seconds
                        )
                        p.tps[w].append(tps)
                        if p.cpu_pid:
                            cpu = tree_cpu_seconds(p.cpu_pid) - cpu0
                            p.cpu_us.setdefault(w, []).append(cpu / (tps * args.seconds) * 1e6)
                        say(
                            f"round {rnd + 1} {w:<22} {p.name:<14} {tps:>9,.0f} tps "
                            f"(connecting {connect_ms:,.0f} ms)"
                        )
                for case in cases:
                    k = rnd % len(bulk_peers)
                    for p in bulk_peers[k:] + bulk_peers[:k]:
                        size, seconds = run_bulk(
                            psql, p.env, p.env.get("PGDATABASE", "bench"), case.sql
                        )
                        p.mbps[case.name].append(size / seconds / 1e6)
                        say(
                            f"round {rnd + 1} {case.name:<22} {p.name:<14} "
                            f"{size / seconds / 1e6:>7,.1f} MB/s ({size / 1e6:,.0f} MB)"
                        )
            out = []
            if "pgbench" in args.cases:
                out.append(report(peers, list(workloads), args))
            measured = [p for p in pgbench_peers if p.cpu_us]
            if measured:
                out.append(cpu_report(measured, list(workloads)))
            if workers:
                out.append(workers_report(peers if "pgbench" in args.cases else [], workers, args))
            if cases:
                out.append(bulk_report(bulk_peers, cases, args))
            print("\n".join(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
