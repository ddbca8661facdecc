"""Two real bastion nodes on one PostgreSQL state store, as a fleet behind a balancer.

``start_fleet`` starts node A with ``make_harness`` (targets, keys, state) and node
B from a copy of A's directory: same CA, secret key and host key (what an
operator copies to every node), its own name, ports, recordings, control socket
and control TLS certificate. Both open a TCP+TLS control listener so they can
relay watches to each other. ``CancelSplitter`` stands in for a load balancer that
sends a client's CancelRequest to another node than its session's.
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.config import load_config
from bastion.openssh_target import free_port
from bastion.secretbox import SecretBox
from bastion.store import open_store
from tests.peers.bastion_node import BastionHarness, make_harness

CONTROL_LINE = '# listen = "0.0.0.0:7443"'


@dataclass
class Fleet:
    """Nodes ``a`` and ``b`` sharing one state store (``a`` owns the targets)."""

    a: BastionHarness
    b: BastionHarness

    def close(self) -> None:
        """Stop B, then A and the targets."""
        self.b.stop()
        self.b.store.close()
        self.a.close()


def start_fleet(directory: Path, state_url: str, poll_interval: float) -> Fleet:
    """Nodes ``fleet-a`` and ``fleet-b`` with ``[timebox] poll_interval`` as given."""
    a = make_harness(
        directory / "a",
        state_url=state_url,
        overrides={
            'name = "test-node"': 'name = "fleet-a"',
            "poll_interval = 0.5": f"poll_interval = {poll_interval:g}",
            CONTROL_LINE: f'listen = "127.0.0.1:{free_port()}"',
        },
    )
    try:
        b = _start_b(a, directory / "b")
    except BaseException:
        a.close()
        raise
    return Fleet(a, b)


def _start_b(a: BastionHarness, directory: Path) -> BastionHarness:
    directory.mkdir(parents=True)
    shutil.copytree(a.dir / "keys", directory / "keys")
    for own in (directory / "keys").glob("control_tls*"):
        own.unlink()  # B makes its own control certificate
    cfg = a.config
    assert cfg.control.listen is not None and cfg.postgres.listen is not None
    assert cfg.metrics_listen is not None
    port, pg_port = free_port(), free_port()
    text = a.config.path.read_text()
    for old, new in {
        'name = "fleet-a"': 'name = "fleet-b"',
        f'listen = "127.0.0.1:{a.port}"': f'listen = "127.0.0.1:{port}"',
        f'listen = "127.0.0.1:{a.pg_port}"': f'listen = "127.0.0.1:{pg_port}"',
        f'listen = "127.0.0.1:{cfg.metrics_listen[1]}"': f'listen = "127.0.0.1:{free_port()}"',
        f'listen = "127.0.0.1:{cfg.control.listen[1]}"': f'listen = "127.0.0.1:{free_port()}"',
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    path = directory / a.config.path.name
    path.write_text(text)
    path.chmod(0o600)
    config = load_config(path)
    store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
    b = BastionHarness(directory, config, store, a.ca, port, a.targets, pg_port=pg_port)
    try:
        b.start()
    except BaseException:
        store.close()
        raise
    return b


class CancelSplitter:
    """A TCP relay: the first connection goes to ``first``, every later one to ``then``.

    psycopg's ``conn.cancel()`` opens its CancelRequest connection to the address
    the session used; through this relay it lands on the other node. The relay is
    its own process: libpq's cancel blocks holding the GIL, so a relay thread in
    the test process could never forward it.
    """

    def __init__(self, first: int, then: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._accepted = ctx.Value("i", 0)
        server = socket.create_server(("127.0.0.1", 0))
        self.port = int(server.getsockname()[1])
        self._proc = ctx.Process(
            target=_split, args=(server, first, then, self._accepted), daemon=True
        )
        self._proc.start()
        server.close()

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return int(self._accepted.value)

    def close(self) -> None:
        """Stop the relay process."""
        self._proc.terminate()
        self._proc.join(10)


def _split(server: socket.socket, first: int, then: int, accepted: Any) -> None:
    while True:
        client, _ = server.accept()
        port = first if accepted.value == 0 else then
        with accepted.get_lock():
            accepted.value += 1
        upstream = socket.create_connection(("127.0.0.1", port))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
