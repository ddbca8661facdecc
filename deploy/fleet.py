#!/usr/bin/env python3
"""A bastion fleet on one machine: PostgreSQL, an S3 server, HAProxy and two nodes.

What an operator needs to try the multi-node set-up before building it for real,
with the same parts: state in PostgreSQL, recordings in S3-compatible storage,
HAProxy in TCP mode in front with the PROXY protocol (v2), and two nodes sharing
one ``keys/`` directory. Everything lives under one directory and runs as
ordinary processes; ``down`` stops them all.

    python3 deploy/fleet.py up   [--dir DIR] [--ssh-port 2222] [--pg-port 6432]
    python3 deploy/fleet.py status [--dir DIR]
    python3 deploy/fleet.py down [--dir DIR]

The S3 server is moto's (``pip install 'moto[server]'``; MinIO, Ceph RGW or AWS S3
in production, see deploy/OPERATIONS.md). As root, PostgreSQL runs as the
``postgres`` user. Needs the Debian packages postgresql and haproxy
(``scripts/install-deps`` installs both).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NODES = ("node-a", "node-b")
BUCKET = "bastion-recordings"
S3_ENV = {
    # moto accepts any key; real stores take these from the standard chain
    "AWS_ACCESS_KEY_ID": "fleet-demo",
    "AWS_SECRET_ACCESS_KEY": "fleet-demo",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SHARED_KEYS = (
    "ssh_host_ed25519_key",
    "ssh_host_ed25519_key.pub",
    "user_ca",
    "user_ca.pub",
    "secret.key",
    "recording_signing_key",
    "recording_signing_key.pub",
)


def say(msg: str) -> None:
    """Progress on stderr."""
    print(f"fleet: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, what: str, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    """Wait until ``port`` accepts on loopback, or fail with the log's tail."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise SystemExit(f"fleet: {what} did not listen on {port}; {log}:\n{tail}")


def pg_bin() -> Path:
    """Debian's PostgreSQL server binaries (newest installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise SystemExit("fleet: PostgreSQL server not found: apt-get install postgresql")
    return found[-1].parent


def run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a command built here from fixed parts, its output captured; name it if it fails."""
    done = subprocess.run(list(argv), check=False, capture_output=True)  # noqa: S603  fixed argv
    if check and done.returncode != 0:
        raise SystemExit(
            f"fleet: {' '.join(argv)} failed ({done.returncode}):\n"
            + done.stderr.decode(errors="replace")[-2000:]
        )
    return done


def as_postgres(argv: Sequence[str]) -> list[str]:
    """Run as the postgres user when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


def spawn(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a process in its own session, output to ``log``; return its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603  fixed argv built here
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def start_postgres(base: Path, port: int) -> dict[str, Any]:
    """initdb + pg_ctl start in ``base/postgres``; a ``bastion`` database for the state."""
    bindir = pg_bin()
    data = base / "postgres"
    if os.geteuid() == 0:
        # the postgres user must reach its data directory, and root's fleet directory
        # may sit under a path it cannot traverse: keep the cluster in /tmp then
        data = Path(tempfile.mkdtemp(prefix="bastion-fleet-pg-")) / "data"
        pw = pwd.getpwnam("postgres")
        os.chown(data.parent, pw.pw_uid, pw.pw_gid)
        data.mkdir(mode=0o700)
        os.chown(data, pw.pw_uid, pw.pw_gid)
    else:
        data.mkdir(mode=0o700)
    run(as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "bastion", "--auth=trust"]))
    log = data / "server.log"
    run(
        as_postgres(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-w",
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            ]
        )
    )
    run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "bastion", "bastion"])
    return {"data": str(data), "bin": str(bindir), "port": port}


def start_s3(base: Path, port: int) -> int:
    """moto's S3 server on loopback, with the recordings bucket."""
    moto = shutil.which("moto_server")
    if moto is None:
        raise SystemExit("fleet: moto_server not found: pip install 'moto[server]'")
    log = base / "s3.log"
    pid = spawn([moto, "-H", "127.0.0.1", "-p", str(port)], log)
    wait_port(port, "the S3 server", None, log)
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )
    s3.create_bucket(Bucket=BUCKET)
    return pid


def configure_node(
    base: Path, name: str, state_url: str, s3_port: int, ports: dict[str, int]
) -> Path:
    """``bastion init`` a node, share node-a's keys, point it at PostgreSQL, S3 and HAProxy."""
    directory = base / name
    run(
        [sys.executable, "-m", "bastion", "init", "--dir", str(directory)]
        + ["--listen", f"127.0.0.1:{ports['ssh']}", "--state-url", state_url, "--node", name]
    )
    if name != NODES[0]:  # one CA, host key, secret key and signing key for the fleet
        for key in SHARED_KEYS:
            shutil.copy2(base / NODES[0] / "keys" / key, directory / "keys" / key)
    path = directory / "bastion.toml"
    text = path.read_text()
    edits = {
        'storage = "local"': (
            f'storage = "s3://{BUCKET}/{name}"\n\n[recording.s3]\n'
            f'endpoint_url = "http://127.0.0.1:{s3_port}"\nregion = "us-east-1"'
        ),
        'listen = "0.0.0.0:6432"': f'listen = "127.0.0.1:{ports["pg"]}"',
        "proxy_protocol = false\ntrusted_proxies = []": (
            'proxy_protocol = true\ntrusted_proxies = ["127.0.0.1/32"]'
        ),
        'listen = ""': f'listen = "127.0.0.1:{ports["metrics"]}"',
        '# listen = "0.0.0.0:7443"': f'listen = "127.0.0.1:{ports["control"]}"',
        'workers = "auto"': "workers = 1",
    }
    for old, new in edits.items():
        if old not in text:
            raise SystemExit(f"fleet: {path} has no line {old!r}; bastion's template changed")
        text = text.replace(old, new)
    path.write_text(text)
    return path


def haproxy_config(
    ssh: int, pg: int, nodes: dict[str, dict[str, int]], stats: Path | None = None
) -> str:
    """TCP mode, PROXY v2 to the nodes, health from each node's /healthz; ``stats``: a
    UNIX socket for ``show stat`` (what ``up`` waits on)."""

    def servers(kind: str) -> str:
        return "".join(
            f"    server {n} 127.0.0.1:{p[kind]} send-proxy-v2 check port {p['metrics']}\n"
            for n, p in nodes.items()
        )

    stats_line = f"    stats socket {stats} mode 600 level user\n" if stats is not None else ""
    return f"""global
    maxconn 2000
{stats_line}
defaults
    mode tcp
    timeout connect 5s
    timeout client 8h
    timeout server 8h
    retries 3
    option redispatch

frontend bastion_ssh
    bind 127.0.0.1:{ssh}
    default_backend bastion_ssh_nodes

backend bastion_ssh_nodes
    balance leastconn
    option httpchk GET /healthz
    default-server inter 1s fall 2 rise 2
{servers("ssh")}
frontend bastion_pg
    bind 127.0.0.1:{pg}
    default_backend bastion_pg_nodes

backend bastion_pg_nodes
    balance leastconn
    option httpchk GET /healthz
    default-server inter 1s fall 2 rise 2
{servers("pg")}"""


def up(base: Path, ssh_port: int, pg_port: int) -> dict[str, Any]:
    """Start everything; write ``fleet.json``; return it."""
    if (base / "fleet.json").exists():
        raise SystemExit(f"fleet: {base} already holds a fleet; run 'down' first")
    base.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"dir": str(base), "pids": {}}

    def save() -> None:
        (base / "fleet.json").write_text(json.dumps(state, indent=2))

    save()
    say("PostgreSQL (state)")
    pg = start_postgres(base, free_port())
    state["postgres"] = pg
    save()
    state_url = f"postgresql://bastion@127.0.0.1:{pg['port']}/bastion"
    say("S3 server (recordings)")
    s3_port = free_port()
    state["pids"]["s3"] = start_s3(base, s3_port)
    state["s3"] = f"http://127.0.0.1:{s3_port}"
    save()
    nodes = {n: {k: free_port() for k in ("ssh", "pg", "metrics", "control")} for n in NODES}
    configs = {n: configure_node(base, n, state_url, s3_port, p) for n, p in nodes.items()}
    for name, config in configs.items():
        say(f"bastion node {name}")
        log = base / f"{name}.log"
        env = {**os.environ, **S3_ENV}
        state["pids"][name] = spawn(
            [sys.executable, "-m", "bastion", "serve", "--config", str(config)], log, env
        )
        save()
        wait_port(nodes[name]["ssh"], f"node {name}", None, log)
    say("HAProxy")
    cfg = base / "haproxy.cfg"
    cfg.write_text(haproxy_config(ssh_port, pg_port, nodes, base / "haproxy.sock"))
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    state["pids"]["haproxy"] = spawn([haproxy, "-db", "-f", str(cfg)], base / "haproxy.log")
    state.update(nodes=nodes, ssh_port=ssh_port, pg_port=pg_port, state_url=state_url)
    state["configs"] = {n: str(c) for n, c in configs.items()}
    save()
    wait_port(ssh_port, "HAProxy", None, base / "haproxy.log")
    wait_servers_up(base / "haproxy.sock", base / "haproxy.log")
    return state


def server_states(sock: Path) -> dict[str, str]:
    """HAProxy's view of each node, ``backend/server`` -> status (``show stat``)."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(5)
        conn.connect(str(sock))
        conn.sendall(b"show stat\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    header = lines[0][2:].split(",")
    states = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname") not in (None, "FRONTEND", "BACKEND"):
            states[f"{row['pxname']}/{row['svname']}"] = row.get("status", "")
    return states


def wait_servers_up(sock: Path, log: Path, timeout: float = 60.0) -> None:
    """Until HAProxy's health checks pass for every node: "fleet up" means traffic
    reaches both (a node still starting, or a slow first check, would leave one out
    of the balancing)."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            states = server_states(sock)
        except OSError:
            states = {}
        if states and all(status.startswith("UP") for status in states.values()):
            return
        time.sleep(0.3)
    raise SystemExit(f"fleet: HAProxy does not see every node up: {states}; see {log}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down(base: Path) -> None:
    """Stop HAProxy, the nodes (a routine stop), the S3 server and PostgreSQL."""
    path = base / "fleet.json"
    if not path.exists():
        raise SystemExit(f"fleet: no fleet in {base}")
    state = json.loads(path.read_text())
    pids: dict[str, int] = state.get("pids", {})
    for name in ("haproxy", *NODES, "s3"):
        pid = pids.get(name)
        if pid is None or not _alive(pid):
            continue
        say(f"stopping {name}")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    pg = state.get("postgres")
    if pg:
        say("stopping PostgreSQL")
        run(
            as_postgres([f"{pg['bin']}/pg_ctl", "stop", "-D", pg["data"], "-m", "fast", "-w"]),
            check=False,
        )
        if Path(pg["data"]).parent.name.startswith("bastion-fleet-pg-"):
            shutil.rmtree(Path(pg["data"]).parent, ignore_errors=True)
    path.unlink()


def status(base: Path) -> int:
    """What runs, and the nodes as the state store sees them."""
    path = base / "fleet.json"
    if not path.exists():
        print(f"no fleet in {base}")
        return 1
    state = json.loads(path.read_text())
    for name, pid in state.get("pids", {}).items():
        print(f"{name:<10} pid {pid:<8} {'running' if _alive(pid) else 'GONE'}")
    config = state.get("configs", {}).get(NODES[0])
    if config:
        listed = run([sys.executable, "-m", "bastion", "nodes", "list", "--config", config], False)
        print(listed.stdout.decode(), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", default="fleet", help="where everything lives (default ./fleet)")
    parser.add_argument("--ssh-port", type=int, default=2222, help="HAProxy's SSH port")
    parser.add_argument("--pg-port", type=int, default=6432, help="HAProxy's PostgreSQL port")
    args = parser.parse_args(argv)
    base = Path(args.dir).resolve()
    if args.action == "up":
        try:
            state = up(base, args.ssh_port, args.pg_port)
        except BaseException:
            if (base / "fleet.json").exists():
                down(base)
            raise
        a = state["configs"][NODES[0]]
        print(
            f"fleet up in {base}:\n"
            f"  contractors: ssh -p {state['ssh_port']} USER%TARGET@127.0.0.1"
            f"   psql 'host=127.0.0.1 port={state['pg_port']} sslmode=require ...'\n"
            f"  admin (any node): bastion --help; e.g. bastion nodes list --config {a}\n"
            f"    (set {' '.join(f'{k}={v}' for k, v in S3_ENV.items())} for verify/export)\n"
            f"  stop: python3 deploy/fleet.py down --dir {args.dir}"
        )
        return 0
    if args.action == "down":
        down(base)
        return 0
    return status(base)


if __name__ == "__main__":
    sys.exit(main())
