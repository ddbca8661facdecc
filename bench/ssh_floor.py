"""The asyncssh floor: the cheapest asyncssh hop, as a process of its own.

``python bench/ssh_floor.py SPEC`` (started by ``FloorPeer`` in ``ssh_peers.py``)
serves SSH on the node's event loop with the node's asyncssh settings (same ciphers
on each leg, no CBC chaff, no line editor, target output coalesced per loop pass)
and pipes every session to the target with the key and certificate that SPEC (a
JSON file) names. No recording, no checks: the bastion's distance to it is what
recording and checks cost. Runs until terminated.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import asyncssh

from bastion import event_loop
from bastion.config import SshConfig
from bastion.ssh.upstream import UPSTREAM_CIPHERS, drop_cbc_chaff


def main(spec_path: str) -> None:
    """Serve until SIGTERM (see the module docstring)."""
    spec = json.loads(Path(spec_path).read_text())
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    event_loop.run(_floor_serve(spec))


async def _floor_serve(spec: dict[str, object]) -> None:  # noqa: C901  a linear script
    server_ciphers = SshConfig().ciphers
    key = asyncssh.read_private_key(str(spec["key"]))
    cert = asyncssh.read_certificate(str(spec["key"]) + "-cert.pub")
    client = asyncssh.read_private_key(str(spec["client_key"])).convert_to_public()
    tasks: set[asyncio.Task[None]] = set()

    class Up(asyncssh.SSHClientSession[bytes]):
        """Target output to the client, coalesced per loop pass as the node does (one
        write per pass instead of one per upstream packet; a lone small write, such as
        a keystroke's echo, goes out at once)."""

        exit_code: int | None = None

        def __init__(self, relay: Relay) -> None:
            self.relay = relay
            self.out: list[bytes] = []

        def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
            if datatype is not None or (not self.out and len(data) <= 256):
                self.flush()
                self.relay.chan.write(data, datatype)
                return
            if not self.out:
                asyncio.get_running_loop().call_soon(self.flush)
            self.out.append(data)

        def flush(self) -> None:
            if self.out:
                data = b"".join(self.out)
                self.out.clear()
                self.relay.chan.write(data)

        def eof_received(self) -> bool:
            self.flush()
            self.relay.chan.write_eof()
            return True

        def exit_status_received(self, status: int) -> None:
            self.exit_code = status

        def pause_writing(self) -> None:
            self.relay.chan.pause_reading()

        def resume_writing(self) -> None:
            self.relay.chan.resume_reading()

        def connection_lost(self, exc: Exception | None) -> None:
            self.flush()
            try:
                self.relay.chan.exit(255 if self.exit_code is None else self.exit_code)
            except OSError:
                pass

    class Relay(asyncssh.SSHServerSession[bytes]):
        chan: asyncssh.SSHServerChannel[bytes]

        def __init__(self) -> None:
            self.up: asyncssh.SSHClientChannel[bytes] | None = None
            self.conn: asyncssh.SSHClientConnection | None = None
            self.pty: tuple[str, tuple[int, int, int, int], dict[int, int]] | None = None
            self.command: str | None = None
            self.eof = False

        def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
            self.chan = chan

        def pty_requested(
            self, term_type: str, term_size: tuple[int, int, int, int], term_modes: object
        ) -> bool:
            self.pty = (term_type, term_size, dict(term_modes))  # type: ignore[call-overload]
            return True

        def shell_requested(self) -> bool:
            return True

        def exec_requested(self, command: str) -> bool:
            self.command = command
            return True

        def session_started(self) -> None:
            self.chan.pause_reading()  # input waits in asyncssh until the target is there
            task = asyncio.get_running_loop().create_task(self.connect())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def connect(self) -> None:
            try:
                conn = await asyncssh.connect(
                    str(spec["target_host"]),
                    int(str(spec["target_port"])),
                    username=str(spec["login"]),
                    client_keys=[(key, cert)],
                    known_hosts=str(spec["known_hosts"]),
                    config=None,
                    preferred_auth=["publickey"],
                    encoding=None,
                    encryption_algs=UPSTREAM_CIPHERS,
                )
                drop_cbc_chaff(conn, UPSTREAM_CIPHERS)
                self.conn = conn
                kwargs: dict[str, object] = {"encoding": None, "request_pty": False}
                if self.pty is not None:
                    term_type, term_size, modes = self.pty
                    kwargs.update(
                        request_pty="force",
                        term_type=term_type,
                        term_size=term_size,
                        term_modes=modes,
                    )
                self.up, _ = await conn.create_session(
                    lambda: Up(self),
                    self.command,
                    **kwargs,  # type: ignore[arg-type]
                )
            except (OSError, asyncssh.Error) as e:
                self.chan.write_stderr(f"floor: {e}\r\n".encode())
                self.chan.exit(255)
                return
            if self.eof:
                self.up.write_eof()
            self.chan.resume_reading()

        def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
            assert self.up is not None  # reading is paused until it is set
            self.up.write(data)

        def eof_received(self) -> bool:
            self.eof = True
            if self.up is not None:
                self.up.write_eof()
            return True

        def terminal_size_changed(self, width: int, height: int, pw: int, ph: int) -> None:
            if self.up is not None:
                self.up.change_terminal_size(width, height, pw, ph)

        def pause_writing(self) -> None:
            if self.up is not None:
                self.up.pause_reading()

        def resume_writing(self) -> None:
            if self.up is not None:
                self.up.resume_reading()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.conn is not None:
                self.conn.close()

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            drop_cbc_chaff(conn, server_ciphers)

        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return key.public_data == client.public_data

        def session_requested(self) -> Relay:
            return Relay()

    server = await asyncssh.create_server(
        Server,
        "127.0.0.1",
        int(str(spec["port"])),
        server_host_keys=[str(spec["host_key"])],
        encoding=None,
        line_editor=False,
        encryption_algs=list(server_ciphers),
        kex_algs=list(SshConfig().kex_algorithms),
        mac_algs=list(SshConfig().macs),
    )
    async with server:
        await server.wait_closed()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python bench/ssh_floor.py SPEC")
    main(sys.argv[1])
