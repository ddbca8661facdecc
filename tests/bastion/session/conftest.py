"""The session-core fixture: a real node on SQLite in tmp_path, no listeners, a test clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.ca import CertificateAuthority
from bastion.cli_node import init_dir
from bastion.secretbox import SecretBox
from bastion.service import BastionNode
from bastion.store import open_store
from bastion.store.models import Role, TargetKind
from tests.bastion.session.kit import GRANT_SECONDS, Clock, Kit


@pytest.fixture()
async def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Kit]:
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    config = init_dir(tmp_path / "node", "127.0.0.1:0", None, "n1")
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
    k = Kit(node=node, config=config, clock=clock, user=user, target=target, grant=grant)
    try:
        yield k
    finally:
        await k.settle()
        await node.close()
