"""``ControlClient``: the one Python client of a node's control API (the TUI uses it).

One connection carries any number of requests and watches at once: a reader task
routes each reply line to the request (or watch stream) with the same id. Errors
the node reports arrive as ``ControlError`` with the node's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

from bastion.access_report import UserAccess, access_from_wire
from bastion.control.framing import ControlProtocolError, LineFramer, encode
from bastion.control.messages import (
    AlertInfo,
    ControlError,
    LiveEnd,
    LiveEvent,
    Operator,
    RequestInfo,
    SearchHit,
    SessionInfo,
    event_from_wire,
    from_dict,
    request_from_wire,
)

__all__ = ["ControlClient"]

_Reply = dict[str, Any]


class ControlClient:
    """A connection to one node's control API, authenticated as one operator."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Use ``connect`` or ``connect_tcp``."""
        self._reader = reader
        self._writer = writer
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[_Reply]] = {}
        self._streams: dict[int, asyncio.Queue[_Reply]] = {}
        self._closed: str | None = None
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())
        self.operator: Operator | None = None
        """Who this connection is authenticated as (set by connect)."""
        self.node: str | None = None
        """The node's name."""

    @classmethod
    async def connect(
        cls, socket_path: str, *, user: str, token: str | None = None
    ) -> ControlClient:
        """Connect to a node's Unix control socket and say hello (raises ControlError)."""
        try:
            reader, writer = await asyncio.open_unix_connection(socket_path)
        except OSError as e:
            raise ControlError(
                f"cannot connect to the control socket {socket_path}: {e.strerror or e}; "
                "is 'bastion serve' running, and do you run as root or the bastion's user?"
            ) from e
        return await cls._hello(reader, writer, user, token)

    @classmethod
    async def connect_tcp(
        cls,
        host: str,
        port: int,
        *,
        user: str,
        token: str,
        cafile: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> ControlClient:
        """Connect to a node's TLS control listener with a control token (``context``:
        a ready TLS context, e.g. one pinning a peer node's certificate)."""
        ctx = context or ssl.create_default_context(cafile=cafile)
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
        except (OSError, ssl.SSLError) as e:
            raise ControlError(f"cannot connect to the control API at {host}:{port}: {e}") from e
        return await cls._hello(reader, writer, user, token)

    @classmethod
    async def _hello(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        user: str,
        token: str | None,
    ) -> ControlClient:
        client = cls(reader, writer)
        try:
            reply = await client._request("hello", user=user, token=token)
        except BaseException:
            await client.close()
            raise
        client.operator = from_dict(Operator, reply.get("operator"))
        client.node = reply.get("node")
        return client

    async def close(self) -> None:
        """Close the connection (ends this client's watches)."""
        self._writer.close()
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        framer = LineFramer()
        reason = "the node closed the control connection"
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                framer.receive_data(data)
                while (msg := framer.next_message()) is not None:
                    self._route(msg)
        except ControlProtocolError as e:
            reason = f"the node sent a malformed reply: {e}"
        except (ConnectionError, OSError) as e:
            reason = f"control connection lost: {e}"
        finally:
            self._closed = reason
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ControlError(reason))
            for queue in self._streams.values():
                queue.put_nowait({"ok": False, "error": reason})

    def _route(self, msg: _Reply) -> None:
        req_id = msg.get("id")
        if req_id is None and msg.get("ok") is False:  # a connection-level refusal
            error = ControlError(str(msg.get("error")))
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(error)
            return
        if not isinstance(req_id, int):
            return
        queue = self._streams.get(req_id)
        if queue is not None:
            queue.put_nowait(msg)
            return
        waiter = self._pending.pop(req_id) if req_id in self._pending else None
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)

    def _send(self, op: str, fields: dict[str, Any]) -> int:
        if self._closed is not None:
            raise ControlError(self._closed)
        self._next_id += 1
        self._writer.write(encode({"id": self._next_id, "op": op, **fields}))
        return self._next_id

    async def _request(self, op: str, **fields: Any) -> _Reply:
        loop = asyncio.get_running_loop()
        req_id = self._send(op, fields)
        fut: asyncio.Future[_Reply] = loop.create_future()
        self._pending[req_id] = fut
        try:
            await self._writer.drain()
        except OSError as e:  # the node went away mid-request: one error type for callers
            self._pending.pop(req_id, None)
            raise ControlError(f"control connection lost: {e}") from e
        reply = await fut
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error", "the node refused the request")))
        return reply

    # -- the API ---------------------------------------------------------------------------

    async def whoami(self) -> Operator:
        """The operator this connection acts as."""
        reply = await self._request("whoami")
        operator: Operator = from_dict(Operator, reply.get("operator"))
        return operator

    async def list_sessions(
        self,
        *,
        live: bool | None = None,
        user: str | None = None,
        target: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 500,
        node: str | None = None,
    ) -> list[SessionInfo]:
        """Sessions of every node newest first (``live`` True/False: running/ended only;
        ``node``: that node's only)."""
        fields: dict[str, Any] = {"node": node} if node is not None else {}
        reply = await self._request(
            "list_sessions",
            live=live,
            user=user,
            target=target,
            since=since,
            until=until,
            limit=limit,
            **fields,
        )
        return [from_dict(SessionInfo, s) for s in reply.get("sessions", [])]

    async def search(
        self,
        text: str,
        *,
        user: str | None = None,
        target: str | None = None,
        since: float | None = None,
        limit: int = 200,
        kinds: str | None = None,
        regex: bool = False,
    ) -> list[SearchHit]:
        """Index entries containing ``text`` (``kinds``: e.g. ``"output,results"``; ``regex``:
        a Python pattern), newest session first, with player offsets. Audited by the node."""
        reply = await self._request(
            "search", text=text, user=user, target=target, since=since, limit=limit,
            kinds=kinds, regex=regex,
        )  # fmt: skip
        return [from_dict(SearchHit, h) for h in reply.get("hits", [])]

    async def list_alerts(self, *, since: float | None = None, limit: int = 200) -> list[AlertInfo]:
        """Alerts and policy decisions (``alert.*``, ``policy.*`` audit rows), newest first."""
        reply = await self._request("list_alerts", since=since, limit=limit)
        return [from_dict(AlertInfo, a) for a in reply.get("alerts", [])]

    async def recording_path(self, session_id: str) -> str:
        """Local path of the session's recording (live or in the spool), or its
        ``s3://bucket/key`` once uploaded (open it with ``ConfigOpener``)."""
        reply = await self._request("recording_path", session_id=session_id)
        return str(reply["path"])

    async def watch(self, session_id: str) -> AsyncIterator[LiveEvent]:
        """The session's current screen (a Snapshot) then its live events until LiveEnd.

        Raises ControlError if the node refuses (not an admin, session not live here)
        or drops the watch (the watcher fell behind). Leaving the loop early unwatches.
        """
        queue: asyncio.Queue[_Reply] = asyncio.Queue()
        req_id = self._send("watch", {"session_id": session_id})
        self._streams[req_id] = queue
        finished = False
        try:
            await self._writer.drain()
            while True:
                msg = await queue.get()
                if "event" in msg:
                    yield event_from_wire(msg["event"])
                elif "end" in msg:
                    finished = True
                    end = event_from_wire(msg["end"])
                    yield end if isinstance(end, LiveEnd) else LiveEnd("ended")
                    return
                elif msg.get("ok") is False:
                    finished = True
                    raise ControlError(str(msg.get("error")))
        finally:
            self._streams.pop(req_id, None)
            if not finished and self._closed is None:
                with contextlib.suppress(ControlError, ConnectionError):
                    self._send("unwatch", {"watch": req_id})

    async def terminate(self, session_id: str, reason: str) -> None:
        """End a live session (on any node); the contractor sees who and ``reason``."""
        await self._request("terminate", session_id=session_id, reason=reason)

    async def lock_user(self, name: str, reason: str) -> None:
        """Lock a user (no more logins) and end their live sessions."""
        await self._request("lock_user", name=name, reason=reason)

    async def list_requests(
        self, *, pending_only: bool = False, limit: int = 50
    ) -> list[RequestInfo]:
        """Pending access requests (longest waiting first), then unless ``pending_only``
        the ``limit`` most recent decided ones, newest first."""
        reply = await self._request("list_requests", pending_only=pending_only, limit=limit)
        return [request_from_wire(r) for r in reply.get("requests", [])]

    async def approve_request(
        self, request_id: int, *, duration: float | None = None, reason: str | None = None
    ) -> RequestInfo:
        """Approve as this operator (``duration``: shorter than asked); the request as it
        is now (still pending if it needs more approvers). Refusals (own request, not an
        approver, not pending, longer than asked) raise ControlError saying why."""
        reply = await self._request(
            "approve_request", request=request_id, duration=duration, reason=reason
        )
        return request_from_wire(reply.get("request"))

    async def deny_request(self, request_id: int, reason: str) -> RequestInfo:
        """Deny a pending request; the requester is told ``reason``."""
        reply = await self._request("deny_request", request=request_id, reason=reason)
        return request_from_wire(reply.get("request"))

    async def user_access(self, name: str, *, include_all: bool = False) -> UserAccess:
        """What user ``name`` can reach now and why (``include_all``: ended grants and
        removed targets too); the same answer as ``bastion access NAME``."""
        reply = await self._request("user_access", name=name, all=include_all)
        try:
            return access_from_wire(reply.get("access"))
        except ValueError as e:
            raise ControlError(f"malformed user_access reply: {e}") from e
