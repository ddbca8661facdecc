"""The control API's TCP + TLS listener on a real node, with the real client and raw sockets.

Threat-model row N11: a wrong or untrusted certificate, an expired, revoked (replayed) or
foreign token and a non-admin asking to watch or terminate are all refused; the success
path (an admin watching and ending a live shell over TLS) works.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from bastion.control.auth import token_hash
from bastion.control.client import ControlClient
from bastion.control.messages import ControlError, LiveEnd, LiveEvent
from bastion.openssh_target import free_port
from bastion.pg.tls_cert import ca_path
from bastion.store.models import Role, TokenPurpose
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    port = free_port()
    listen = {'# listen = "0.0.0.0:7443"': f'listen = "127.0.0.1:{port}"'}
    harness = make_harness(Path(tmp_path_factory.mktemp("ctl-tls")), overrides=listen)
    try:
        wait_until(lambda: _accepts(port), 20, f"the control TLS listener on {port}")
        yield harness
    finally:
        harness.close()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _port(node: BastionHarness) -> int:
    assert node.config.control.listen is not None
    return node.config.control.listen[1]


def _ca(node: BastionHarness) -> str:
    return str(ca_path(node.config.control.tls_cert))


def _token(node: BastionHarness, who: Contractor, *, ago: float = 0, ttl: float = 3600) -> str:
    """A control token issued ``ago`` seconds back, living ``ttl`` seconds."""
    token = f"ctl-{who.name}-{time.monotonic_ns()}"
    user = node.store.get_user(who.name)
    assert user is not None
    issued = time.time() - ago
    node.store.add_token(
        purpose=TokenPurpose.CONTROL,
        user_id=user.id,
        token_hash=token_hash(token),
        expires_at=issued + ttl,
        now=issued,
        created_from="test",
    )
    return token


async def _connect(
    node: BastionHarness, who: str, token: str, cafile: str | None = None
) -> ControlClient:
    return await ControlClient.connect_tcp(
        "127.0.0.1", _port(node), user=who, token=token, cafile=cafile or _ca(node)
    )


async def test_only_the_node_control_ca_is_trusted(node: BastionHarness) -> None:
    admin = node.contractor("adm", Role.ADMIN)
    token = _token(node, admin)
    async with await _connect(node, admin.name, token) as client:
        assert (await client.whoami()).role == "admin"
    # the system trust store, and the node's own PostgreSQL CA, are not the control CA
    pg_ca = str(ca_path(node.config.postgres.tls_cert))
    for wrong in (None, pg_ca):
        ctx = ssl.create_default_context(cafile=wrong)
        with (
            pytest.raises(ssl.SSLCertVerificationError),
            socket.create_connection(("127.0.0.1", _port(node)), timeout=10) as sock,
        ):
            ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    with pytest.raises(ControlError, match="certificate verify failed"):
        await ControlClient.connect_tcp(
            "127.0.0.1", _port(node), user=admin.name, token=token, cafile=pg_ca
        )
    # a hostname the certificate does not name is refused too
    ctx = ssl.create_default_context(cafile=_ca(node))
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", _port(node)), timeout=10) as sock,
    ):
        ctx.wrap_socket(sock, server_hostname="impostor.example.com")


def test_plaintext_and_old_tls_get_no_api(node: BastionHarness) -> None:
    hello = json.dumps({"id": 1, "op": "hello", "user": "x", "token": "y"}).encode() + b"\n"
    with socket.create_connection(("127.0.0.1", _port(node)), timeout=10) as sock:
        sock.sendall(hello)
        reply = sock.recv(4096)
    assert b"ok" not in reply and b"{" not in reply  # a TLS alert or a close, never JSON
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", _port(node)), timeout=10) as sock,
    ):
        old.wrap_socket(sock, server_hostname="127.0.0.1")


async def test_tokens_that_are_missing_foreign_expired_or_revoked_are_refused(
    node: BastionHarness,
) -> None:
    admin = node.contractor("adm", Role.ADMIN)
    other = node.contractor("adm", Role.ADMIN)
    contractor = node.contractor()
    with pytest.raises(ControlError, match="a control token is required over TCP"):
        await _connect(node, admin.name, "")
    with pytest.raises(ControlError, match=f"invalid control token for {admin.name}"):
        await _connect(node, admin.name, "not-a-token")
    with pytest.raises(ControlError, match=f"invalid control token for {admin.name}"):
        await _connect(node, admin.name, _token(node, other))  # someone else's
    expired = _token(node, admin, ago=7200, ttl=3600)
    with pytest.raises(ControlError, match="expired or revoked"):
        await _connect(node, admin.name, expired)
    with pytest.raises(ControlError, match="for admins, auditors and approvers"):
        await _connect(node, contractor.name, _token(node, contractor))
    # a token revoked while a connection is open stops that connection's next request,
    # and replaying it on a new connection is refused
    token = _token(node, admin)
    async with await _connect(node, admin.name, token) as client:
        await client.list_sessions(limit=1)
        record = node.store.find_token(token_hash(token))
        assert record is not None
        node.store.revoke_token(record.id, "test", time.time())
        with pytest.raises(ControlError, match="expired or revoked"):
            await client.list_sessions(limit=1)
    with pytest.raises(ControlError, match="expired or revoked"):
        await _connect(node, admin.name, token)


async def test_non_admins_cannot_watch_or_terminate_and_an_admin_can(
    node: BastionHarness,
) -> None:
    admin = node.contractor("adm", Role.ADMIN)
    auditor = node.contractor("aud", Role.AUDITOR)
    approver = node.contractor("apr", Role.APPROVER)
    c = node.contractor()
    node.grant(c, "web1")
    child = c.ssh_pty("web1")
    try:
        child.sendline("echo up-$((2+2))")
        await asyncio.to_thread(child.expect, "up-4")
        (live,) = node.store.list_sessions(live=True, user=c.name)
        async with await _connect(node, auditor.name, _token(node, auditor)) as client:
            with pytest.raises(ControlError, match="needs the admin role"):
                await client.terminate(live.id, "no")
            with pytest.raises(ControlError, match="needs the admin role"):
                async for _ in client.watch(live.id):
                    pass
        async with await _connect(node, approver.name, _token(node, approver)) as client:
            with pytest.raises(ControlError, match="approvers watch only a session"):
                async for _ in client.watch(live.id):
                    pass
            with pytest.raises(ControlError, match="needs the admin or auditor role"):
                await client.terminate(live.id, "no")
        assert node.store.get_session(live.id) is not None
        assert node.store.list_sessions(live=True, user=c.name)  # still running
        got: list[LiveEvent] = []
        async with await _connect(node, admin.name, _token(node, admin)) as client:

            async def collect() -> None:
                async for event in client.watch(live.id):
                    got.append(event)

            watch = asyncio.create_task(collect())
            await asyncio.to_thread(wait_until, lambda: bool(got), 20, "the snapshot")
            await client.terminate(live.id, "tls test")
            await asyncio.to_thread(child.expect, f"terminated by {admin.name}: tls test", 15)
            await asyncio.to_thread(child.expect, pexpect.EOF, 15)
            await asyncio.wait_for(watch, 20)
    finally:
        child.close()
    assert isinstance(got[-1], LiveEnd) and got[-1].reason == "admin-terminated"
    node.wait_audit(c.name, "session.end")
    ended = node.store.get_session(live.id)
    assert ended is not None and ended.end_reason == "admin-terminated"
    assert [r.action for r in node.audit(auditor.name, "control.")] == []
