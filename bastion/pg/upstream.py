"""The socket to the target database: log in with the credential set, then relay.

A thin asyncio adapter around the sans-IO ``UpstreamLogin``: it writes what the
login produces, upgrades to TLS when the target agrees, and resolves ``ready``
with the server's parameters once it is ready for queries. After that every
byte goes to the relay (``UpstreamSink``), with flow control both ways.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Protocol, cast

from bastion.pg.upstream_login import LoginFailed, LoginResult, UpstreamLogin
from bastion.store.models import Target

log = logging.getLogger(__name__)

__all__ = ["UpstreamConnection", "UpstreamSink", "connect_upstream", "upstream_tls_context"]


class UpstreamSink(Protocol):
    """What the relay does with the target's side after login."""

    def from_upstream(self, data: bytes) -> None:
        """Server bytes for the client."""

    def upstream_lost(self, exc: Exception | None) -> None:
        """The target closed or the connection broke."""

    def pause_client(self) -> None:
        """The target is not reading: stop reading from the client."""

    def resume_client(self) -> None:
        """The target reads again."""


def upstream_tls_context(target: Target) -> ssl.SSLContext | None:
    """The client TLS context for a target's ``tls_mode`` (None: no TLS at all)."""
    mode = target.tls_mode
    if mode == "disable":
        return None
    if mode == "verify-full":
        ctx = ssl.create_default_context(cafile=target.tls_ca)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
    # prefer / require: encrypt, but the target's certificate is not checked
    # (libpq's meaning of these modes); verify-full pins it to a CA.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class UpstreamConnection(asyncio.Protocol):
    """One connection to a target database (see the module docstring)."""

    def __init__(self, login: UpstreamLogin, tls: ssl.SSLContext | None, host: str) -> None:
        self.login = login
        self.tls = tls
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[LoginResult] = asyncio.get_running_loop().create_future()
        self.sink: UpstreamSink | None = None
        self.early: list[bytes] = []
        """Server bytes that came after the login and before the relay took over."""
        self.lost = False
        self._upgrading = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Connected: start the login (an SSLRequest first unless TLS is off)."""
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        transport.write(self.login.start())

    def data_received(self, data: bytes) -> None:
        """Login replies until ready; afterwards everything goes to the relay."""
        if self.sink is not None:
            self.sink.from_upstream(data)
            return
        if self.ready.done():
            self.early.append(data)  # e.g. a NOTICE or ParameterStatus right after login
            return
        if self._upgrading:
            return
        try:
            out, start_tls = self.login.receive_data(data)
        except LoginFailed as e:
            self._fail(e)
            return
        if out:
            self._write(out)
        if start_tls:
            self._upgrading = True
            task = asyncio.get_running_loop().create_task(self._start_tls())
            task.add_done_callback(_log_failure)
            self._tls_task = task
        elif self.login.result is not None:
            self.ready.set_result(self.login.result)

    async def _start_tls(self) -> None:
        assert self.transport is not None  # noqa: S101  set before this runs
        if self.tls is None:
            self._fail(LoginFailed("the target offered TLS but none was configured"))
            return
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(self.transport, self, self.tls, server_hostname=self.host)
        except (ssl.SSLError, OSError, ConnectionError) as e:
            self._fail(LoginFailed(f"TLS to the target failed: {e}"))
            return
        if new is None:
            self._fail(LoginFailed("the target closed the connection during the TLS handshake"))
            return
        self.transport = new
        self._upgrading = False
        self._write(self.login.tls_started())

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, error: LoginFailed) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
        self.close()

    def write(self, data: bytes) -> None:
        """Client bytes for the target."""
        self._write(data)

    def close(self) -> None:
        """Close the connection (the server rolls back any open transaction)."""
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell whoever waits: the login, or the relay."""
        self.lost = True
        if not self.ready.done():
            why = f": {exc}" if exc else ""
            self.ready.set_exception(LoginFailed(f"the target closed the connection{why}"))
        elif self.sink is not None:
            self.sink.upstream_lost(exc)

    def pause_writing(self) -> None:
        """Flow control from the target."""
        if self.sink is not None:
            self.sink.pause_client()

    def resume_writing(self) -> None:
        """Flow control from the target."""
        if self.sink is not None:
            self.sink.resume_client()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("upstream TLS task failed", exc_info=task.exception())


async def connect_upstream(
    target: Target,
    login: UpstreamLogin,
    timeout: float,  # noqa: ASYNC109  LoginFailed names it
) -> tuple[UpstreamConnection, LoginResult]:
    """Connect and log in to ``target``; raises LoginFailed naming the cause."""
    loop = asyncio.get_running_loop()
    try:
        tls = upstream_tls_context(target)
    except (OSError, ssl.SSLError) as e:
        raise LoginFailed(
            f"cannot load the CA file {target.tls_ca} for {target.name}'s TLS: {e}; "
            "an admin must fix the target's --ca-file"
        ) from e
    conn: UpstreamConnection | None = None

    def factory() -> UpstreamConnection:
        nonlocal conn
        conn = UpstreamConnection(login, tls, target.host)
        return conn

    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(factory, target.host, target.port)
            assert conn is not None  # noqa: S101  set before this runs
            result = await conn.ready
    except TimeoutError as e:
        if conn is not None:
            conn.close()
        raise LoginFailed(f"no answer from {target.host}:{target.port} within {timeout:g} s") from e
    except OSError as e:
        raise LoginFailed(f"cannot reach {target.host}:{target.port}: {e.strerror or e}") from e
    except LoginFailed:
        if conn is not None:
            conn.close()
        raise
    return conn, result
