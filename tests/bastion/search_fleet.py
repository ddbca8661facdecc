"""A small fleet of recorded sessions in a real bastion directory, for search tests.

Each session is a real recording (the recorder, the node's key) of a shell with
colours, a ``top``-like full-screen repaint and a unique marker line, plus its
session row and typed commands, exactly as a node leaves them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bastion.cli_node import init_dir
from bastion.config import Config
from bastion.ids import new_session_id
from bastion.recording import extract_session_commands
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import Role, SessionRecord, TargetKind
from recorder import LocalStorage, RecordingWriter
from recorder.keys import load_signing_key


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _const(value: float) -> Callable[[], float]:
    return lambda: value


def open_config_store(config: Config) -> Store:
    """The state store of ``config``."""
    return open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))


def script(i: int) -> list[tuple[float, str, tuple[object, ...]]]:
    """Session ``i``: (seconds after start, writer method, args)."""
    top = b"".join(
        b"\x1b[H\x1b[2Jtop - 10:00:%02d up 3 days, load average: 0.%02d\r\n"
        b"  PID USER  %%CPU COMMAND\r\n    1 root   0.0 systemd\r\n" % (s, s)
        for s in range(3)
    )
    return [
        (0.0, "resize", (80, 24)),
        (0.2, "output", (b"\x1b[01;32malice@web1\x1b[00m:~$ ",)),
        (1.0, "input", (b"printf marker\r",)),
        (1.1, "output", (b"printf marker\r\n\x1b[31mmarker-%05d\x1b[0m\r\n$ " % i,)),
        (2.0, "input", (b"top\r",)),
        (2.1, "output", (b"top\r\n\x1b[?1049h" + top + b"\x1b[?1049l$ ",)),
        (3.0, "output", (b"".join(b"log line %d of session %d\r\n" % (n, i) for n in range(40)),)),
        (4.0, "exit", (0,)),
    ]


def build_fleet(root: Path, sessions: int) -> Config:
    """A bastion directory under ``root`` with ``sessions`` ended, recorded sessions."""
    config = init_dir(root, "127.0.0.1:0", None, "n1")
    now = time.time()
    storage = LocalStorage(config.recordings_dir)
    key = load_signing_key(config.recording_signing_key)
    with open_config_store(config) as store:
        user = store.add_user("alice", Role.CONTRACTOR, [], None, now - 86400)
        target = store.add_target(
            name="web1", kind=TargetKind.SSH, host="10.0.0.5", port=22, logins=["deploy"],
            principal="bastion-web1", host_keys=["ssh-ed25519 AAAAhost"], now=now - 86400,
        )  # fmt: skip
        for i in range(sessions):
            sid = new_session_id()
            started = now - 3600 + i
            location = storage.location_for(sid, started)
            store.start_session(
                SessionRecord(
                    id=sid, user_id=user.id, user_name=user.name, target_id=target.id,
                    target_name=target.name, grant_id=None, node="n1", protocol="ssh",
                    login="deploy", client_addr="192.0.2.7:5555", started_at=started,
                    recording=location,
                )
            )  # fmt: skip
            clock = _Clock()
            t0 = clock.now
            writer = RecordingWriter.create(
                storage, sid, {"cols": 80, "rows": 24}, key, clock=clock,
                wall_clock=_const(started),
            )  # fmt: skip
            for at, op, args in script(i):
                clock.now = t0 + at
                getattr(writer, op)(*args)
            summary = writer.close("client disconnected")
            path = storage.path_of(location)
            store.add_session_commands(sid, extract_session_commands(str(path)))
            store.end_session(
                sid, ended_at=started + summary.duration, reason="client disconnected",
                bytes_in=10, bytes_out=100, events=summary.events,
                final_hash=summary.final_hash, final_signature=summary.signature,
            )  # fmt: skip
    return config
