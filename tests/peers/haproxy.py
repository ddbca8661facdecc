"""A real HAProxy (Debian ``haproxy``) in TCP mode in front of bastion nodes, for tests.

``start_haproxy`` writes a config with one frontend per listener (SSH, PostgreSQL)
on loopback (IPv4 and IPv6, so a client can reach it from an address other than
the 127.0.0.1 HAProxy itself uses towards the nodes), balancing round-robin over
the nodes with ``send-proxy-v2``, and runs ``haproxy -db`` (foreground) until
``stop``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion.openssh_target import free_port
from tests.peers.lane import require_integration

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@dataclass
class HAProxy:
    """A running HAProxy: its frontends' ports and its log."""

    proc: subprocess.Popen[bytes]
    ssh_port: int
    pg_port: int
    config: Path
    log_path: Path

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        """HAProxy's own output so far."""
        return self.log_path.read_text(errors="replace")


def haproxy_config(
    ssh_port: int, pg_port: int, ssh_nodes: Sequence[int], pg_nodes: Sequence[int]
) -> str:
    """The TCP-mode config the README documents, with loopback ports."""

    def servers(ports: Sequence[int]) -> str:
        return "".join(
            f"    server node{i} 127.0.0.1:{p} send-proxy-v2\n" for i, p in enumerate(ports)
        )

    return f"""global
    maxconn 1000

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend bastion_ssh
    bind 127.0.0.1:{ssh_port}
    bind [::1]:{ssh_port}
    default_backend bastion_ssh_nodes

backend bastion_ssh_nodes
    balance roundrobin
{servers(ssh_nodes)}
frontend bastion_pg
    bind 127.0.0.1:{pg_port}
    bind [::1]:{pg_port}
    default_backend bastion_pg_nodes

backend bastion_pg_nodes
    balance roundrobin
{servers(pg_nodes)}"""


def start_haproxy(directory: Path, ssh_nodes: Sequence[int], pg_nodes: Sequence[int]) -> HAProxy:
    """Write the config into ``directory``, check it, start HAProxy and wait for its ports."""
    require_integration("HAProxy")
    directory.mkdir(parents=True, exist_ok=True)
    ssh_port, pg_port = free_port(), free_port()
    config = directory / "haproxy.cfg"
    config.write_text(haproxy_config(ssh_port, pg_port, ssh_nodes, pg_nodes))
    check = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log_path = directory / "haproxy.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    haproxy = HAProxy(proc, ssh_port, pg_port, config, log_path)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited:\n{haproxy.log()}")
        try:
            for port in (ssh_port, pg_port):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return haproxy
        except OSError:
            if time.monotonic() > deadline:
                haproxy.stop()
                raise RuntimeError(f"haproxy did not listen:\n{haproxy.log()}") from None
            time.sleep(0.1)
