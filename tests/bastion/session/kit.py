"""A real node on a temporary SQLite store, a fake adapter and a hand-driven clock.

No sockets: the session core is driven the way an adapter drives it, and what it
does is read back from the store, the audit trail and the sealed recording.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from bastion.ca import CertificateAuthority
from bastion.cli_node import init_dir
from bastion.config import Config
from bastion.secretbox import SecretBox
from bastion.service import BastionNode
from bastion.session.admission import Access, find_access
from bastion.session.core import Session
from bastion.store import open_store
from bastion.store.models import AuditEvent, Grant, Role, SessionRecord, Target, TargetKind, User
from recorder import RecordingReader, VerifyResult, verify
from recorder.events import Marker
from recorder.keys import load_public_key

T0 = 1_700_000_000.0
GRANT_SECONDS = 3600.0


class Clock:
    """The node's clock, moved by the test only."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeAdapter:
    """A protocol adapter that only remembers what the core asked of it.

    ``auto_close`` behaves like a real adapter: once told to close, both legs go
    down on the next loop turn and it reports back (``closed`` then ``finish``).
    """

    auto_close: bool = False
    told: list[str] = field(default_factory=list)
    closes: list[tuple[str, str]] = field(default_factory=list)
    session: Session | None = None
    finishing: list[asyncio.Task[None]] = field(default_factory=list)

    def tell(self, message: str) -> None:
        self.told.append(message)

    def close(self, reason: str, message: str) -> None:
        self.closes.append((reason, message))
        if self.auto_close:
            asyncio.get_running_loop().call_soon(self.legs_down, reason)

    def legs_down(self, reason: str) -> None:
        """Both legs are down for ``reason``: report it and finish, as an adapter does."""
        session = self.session
        assert session is not None
        session.closed(reason)
        self.finishing.append(asyncio.ensure_future(session.finish()))


@dataclass
class Kit:
    """One node with a contractor, an SSH target and a one-hour grant."""

    node: BastionNode
    config: Config
    clock: Clock
    user: User
    target: Target
    grant: Grant

    def access(self) -> Access:
        return find_access(
            self.node.store,
            user=self.user,
            target_name=self.target.name,
            protocol="ssh",
            now=self.clock(),
        )

    def session(self, adapter: FakeAdapter | None = None) -> tuple[Session, FakeAdapter]:
        """A just-admitted session (nothing recorded yet)."""
        adapter = adapter if adapter is not None else FakeAdapter()
        s = Session(
            self.node,
            self.access(),
            user=self.user,
            protocol="ssh",
            kind="shell",
            client_addr="192.0.2.7:50000",
            adapter=adapter,
        )
        adapter.session = s
        return s, adapter

    async def recorded_session(
        self, adapter: FakeAdapter | None = None
    ) -> tuple[Session, FakeAdapter]:
        s, adapter = self.session(adapter)
        await s.start_recording({"request": "shell"}, request="shell")
        return s, adapter

    async def live_session(self, adapter: FakeAdapter | None = None) -> tuple[Session, FakeAdapter]:
        s, adapter = await self.recorded_session(adapter)
        assert s.go_live()
        return s, adapter

    async def settle(self) -> None:
        """Wait for the node's background tasks (spawned audit rows) to finish."""
        for _ in range(100):
            tasks = list(self.node._tasks)
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)
        raise AssertionError("background tasks keep coming")

    def row(self, session_id: str) -> SessionRecord:
        found = self.node.store.get_session(session_id)
        assert found is not None, f"no row for session {session_id}"
        return found

    def audit(self, action: str, session_id: str | None = None) -> list[AuditEvent]:
        rows = self.node.store.list_audit(action_prefix=action)
        return [
            r
            for r in rows
            if r.action == action and (session_id is None or r.details.get("session") == session_id)
        ]

    def recording_path(self, row: SessionRecord) -> Path:
        assert row.recording is not None
        return Path(self.node.recordings.path_of(row.recording))

    def verify(self, row: SessionRecord) -> VerifyResult:
        public = load_public_key(str(self.config.recording_signing_key) + ".pub")
        return verify(
            self.recording_path(row),
            public,
            expected_final_hash=row.final_hash,
            expected_session_id=row.id,
        )

    def markers(self, row: SessionRecord) -> list[str]:
        with RecordingReader.open(str(self.recording_path(row))) as reader:
            return [e.label for e in reader.events() if isinstance(e, Marker)]


def build_kit(directory: Path) -> Kit:
    """A node initialised in ``directory`` with alice, target web1 and her one-hour grant.

    The node's clock and the time box's clock are one ``Clock`` at ``T0``.
    """
    config = init_dir(directory, "127.0.0.1:0", None, "n1")
    store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
    node = BastionNode(config, store, CertificateAuthority.load(config.ca_key))
    clock = Clock()
    node.clock = clock
    node.live.clock = clock
    now = clock()
    user = store.add_user("alice", Role.CONTRACTOR, [], None, now - 86400)
    target = store.add_target(
        name="web1",
        kind=TargetKind.SSH,
        host="10.0.0.5",
        port=22,
        logins=["deploy"],
        principal="bastion-web1",
        host_keys=["ssh-ed25519 AAAAhost"],
        now=now - 86400,
    )
    grant = store.add_grant(
        user_id=user.id,
        target_id=target.id,
        login="deploy",
        credset=None,
        not_before=now - 60,
        not_after=now + GRANT_SECONDS,
        reason="ticket 42",
        requested_by="alice",
        approved_by="root",
        options=(),
        now=now - 60,
    )
    return Kit(node=node, config=config, clock=clock, user=user, target=target, grant=grant)
