"""The node's control server: Unix socket (default) or TCP + TLS, JSON lines, one task per watch.

Each connection starts with ``hello`` (see ``auth`` for who gets in), then sends
requests ``{"id": n, "op": ...}`` answered by ``{"id": n, "ok": ...}``; a ``watch``
answers with ``{"id": n, "event": ...}`` lines until ``{"id": n, "end": ...}`` (or an
error line). Requests on one connection are served in order, except watches, which
run as their own tasks so the same connection can still terminate or unwatch.

Store calls run in worker threads (``node.call``); the relay is never waited on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bastion import admin_actions
from bastion import audit_actions as actions
from bastion.access_report import access_to_wire
from bastion.admin_actions import UNTIL_UNLOCKED, Origin
from bastion.control.alert_view import alert_counts, list_alerts
from bastion.control.auth import (
    authorize_operator,
    check_token,
    peer_uid,
    peer_uid_allowed,
    require_role,
    token_hash,
)
from bastion.control.framing import ControlProtocolError, LineFramer, encode
from bastion.control.messages import (
    ControlError,
    LiveEnd,
    Operator,
    SearchHit,
    SessionInfo,
    event_to_wire,
    request_to_wire,
)
from bastion.control.relay import relay_watch
from bastion.control.request_view import list_requests, may_watch_held, request_of
from bastion.control.snapshot import build_snapshot
from bastion.control.watch import Watcher, to_live_event
from bastion.effective_access import user_access
from bastion.errors import BastionError, NotFound
from bastion.request_flow import RequestFlow
from bastion.s3store import is_s3_location
from bastion.search_indexer import OutputLines
from bastion.search_query import audited_search, parse_kinds
from bastion.service import BastionNode
from bastion.store.models import NodeRecord, Role, SessionRecord

__all__ = ["ControlServer", "session_info"]

log = logging.getLogger(__name__)


def session_info(s: SessionRecord) -> SessionInfo:
    """A stored session row as the control API shows it."""
    return SessionInfo(
        id=s.id,
        user=s.user_name,
        target=s.target_name,
        protocol=s.protocol,
        login=s.login,
        client_addr=s.client_addr,
        node=s.node,
        started_at=s.started_at,
        ended_at=s.ended_at,
        end_reason=s.end_reason,
        bytes_in=s.bytes_in,
        bytes_out=s.bytes_out,
        events=s.events,
        live=s.ended_at is None,
    )


def _opt_str(req: dict[str, Any], key: str) -> str | None:
    value = req.get(key)
    if value is not None and not isinstance(value, str):
        raise ControlError(f"'{key}' must be a string")
    return value


def _str(req: dict[str, Any], key: str) -> str:
    value = _opt_str(req, key)
    if not value:
        raise ControlError(f"'{key}' is required")
    return value


def _opt_float(req: dict[str, Any], key: str) -> float | None:
    value = req.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"'{key}' must be a number (Unix seconds)")
    return float(value)


def _request_id(req: dict[str, Any]) -> int:
    value = req.get("request")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ControlError("'request' must be a request id (a positive integer)")
    return value


def _limit(req: dict[str, Any], default: int) -> int:
    value = req.get("limit", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise ControlError("'limit' must be an integer from 1 to 100000")
    return value


class _Connection:
    """One client: its operator (after hello), its writer and its running watches."""

    def __init__(
        self,
        server: ControlServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        needs_token: bool,
    ) -> None:
        self.server = server
        self.node = server.node
        self.reader = reader
        self.writer = writer
        self.needs_token = needs_token
        self.operator: Operator | None = None
        self.token_hash: str | None = None  # over TCP: checked again before each request
        self.watches: dict[Any, asyncio.Task[None]] = {}
        self._write_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._write_lock:
            self.writer.write(encode(message))
            await self.writer.drain()

    async def run(self) -> None:
        framer = LineFramer()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return
                framer.receive_data(data)
                while (req := framer.next_message()) is not None:
                    await self.handle(req)
        except ControlProtocolError as e:
            with contextlib.suppress(ConnectionError):
                await self.send({"id": None, "ok": False, "error": str(e)})
        except ConnectionError:
            pass
        finally:
            for task in list(self.watches.values()):
                task.cancel()
            for task in list(self.watches.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def handle(self, req: dict[str, Any]) -> None:
        req_id = req.get("id")
        op = req.get("op")
        try:
            if not isinstance(op, str):
                raise ControlError("a request needs an 'op' string")
            if op == "hello":
                result = await self.hello(req)
            elif self.operator is None:
                raise ControlError("say hello first: {'op': 'hello', 'user': NAME}")
            else:
                await self._recheck_token()
                if op == "watch" and self.operator.role == Role.APPROVER.value:
                    await self._approver_watch(_str(req, "session_id"))
                else:
                    require_role(self.operator, op)
                if op == "watch":
                    self.start_watch(req_id, _str(req, "session_id"))
                    return
                handler = self.server.ops.get(op)
                if handler is None:
                    raise ControlError(f"unknown operation '{op}'")
                result = await handler(self, req)
        except (ControlError, BastionError) as e:
            await self.send({"id": req_id, "ok": False, "error": str(e)})
            return
        except Exception as e:  # report, keep serving the others
            log.exception("control request %r failed", op)
            await self.send({"id": req_id, "ok": False, "error": f"internal error: {e}"})
            return
        await self.send({"id": req_id, "ok": True, **result})

    async def hello(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.operator is not None:
            raise ControlError("already authenticated on this connection")
        name = _str(req, "user")
        token = _opt_str(req, "token")
        node, now = self.node, time.time()
        if self.needs_token:
            if not token:
                raise ControlError(
                    f"a control token is required over TCP; create one with "
                    f"'bastion user control-token {name}'"
                )
            self.token_hash = token_hash(token)
            record = await node.call(node.store.find_token, self.token_hash)
            check_token(name, record, now)
        user = await node.call(node.store.get_user, name)
        self.operator = authorize_operator(name, user, now)
        return {"operator": asdict(self.operator), "node": node.node}

    async def _recheck_token(self) -> None:
        """Over TCP a token revoked or expired since hello stops the next request.

        One store read per control request (never per byte): a stolen token that an
        admin revokes is dead on connections already open, not only on new ones.
        """
        if self.token_hash is None or self.operator is None:
            return
        node = self.node
        record = await node.call(node.store.find_token, self.token_hash)
        check_token(self.operator.name, record, time.time())

    # -- watch ----------------------------------------------------------------------

    async def _approver_watch(self, session_id: str) -> None:
        """Approvers watch only a session whose held command they may decide now."""
        assert self.operator is not None  # noqa: S101  set by the handshake
        node, name = self.node, self.operator.name
        user = await node.call(node.store.get_user, name)
        if user is None or not await node.call(may_watch_held, node.requests, user, session_id):
            raise ControlError(
                f"{name} is an approver: approvers watch only a session whose held command "
                "they may decide (see the requests view); admins and auditors watch any"
            )

    def start_watch(self, req_id: Any, session_id: str) -> None:
        if req_id in self.watches:
            raise ControlError(f"request id {req_id!r} is already a running watch")
        task = asyncio.get_running_loop().create_task(self._watch(req_id, session_id))
        self.watches[req_id] = task
        task.add_done_callback(lambda _t: self.watches.pop(req_id, None))

    async def _refuse_watch(self, session_id: str) -> str:
        node = self.node
        s = await node.call(node.store.get_session, session_id)
        if s is None:
            return f"no session {session_id}; see list_sessions"
        if s.ended_at is not None:
            return f"session {session_id} has ended ({s.end_reason}); replay its recording"
        return f"session {session_id} has no live recording on this node"

    async def _owner(self, session_id: str) -> NodeRecord | None:
        """The registered node running ``session_id`` if it is live on another node."""
        node = self.node
        s = await node.call(node.store.get_session, session_id)
        if s is None or s.ended_at is not None or s.node == node.node:
            return None
        try:
            return await node.call(node.store.get_node, s.node)
        except NotFound:
            raise ControlError(
                f"session {session_id} runs on node {s.node}, which is not in the node "
                "registry (see 'bastion nodes list'); watch it through that node"
            ) from None

    async def _relay(self, req_id: Any, owner: NodeRecord, session_id: str) -> None:
        """Forward the owner node's watch stream (see ``relay``); errors end the watch."""
        assert self.operator is not None  # noqa: S101  set by the handshake
        try:
            async for event in relay_watch(self.node, owner, self.operator.name, session_id):
                key = "end" if isinstance(event, LiveEnd) else "event"
                await self.send({"id": req_id, key: event_to_wire(event)})
        except asyncio.CancelledError:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send({"id": req_id, "end": event_to_wire(LiveEnd("unwatched"))})
            raise
        except ControlError as e:
            with contextlib.suppress(ConnectionError):
                await self.send(
                    {"id": req_id, "ok": False, "error": f"through node {owner.name}: {e}"}
                )
        except ConnectionError:
            pass

    async def _watch(self, req_id: Any, session_id: str) -> None:
        node = self.node
        assert self.operator is not None  # noqa: S101  set by the handshake
        try:
            rec = node.recordings.find(session_id)
            if rec is None and (owner := await self._owner(session_id)) is not None:
                await self._relay(req_id, owner, session_id)
                return
            if rec is None:
                raise ControlError(await self._refuse_watch(session_id))
            # No await from here to subscribe(): every event is either in the tail
            # (file chunks + pending buffer) or delivered to the watcher, never both.
            tail = rec.writer.live_tail()
            f = open(node.recordings.path_of(rec.writer.location), "rb")  # noqa: ASYNC230  no await before subscribe
            watcher = Watcher(asyncio.get_running_loop())
            rec.subscribe(watcher)
            if node.recordings.find(session_id) is not rec:
                watcher.closed("session ended")
        except (ControlError, OSError) as e:
            await self.send({"id": req_id, "ok": False, "error": str(e)})
            return
        try:
            await node.audit(self.operator.name, actions.CONTROL_WATCH, session_id)
            snap = await asyncio.to_thread(
                build_snapshot, f, tail, session_id, rec.size, resolver=watcher.resolver
            )
            await self.send({"id": req_id, "event": event_to_wire(snap)})
            end = await self._stream(req_id, watcher)
            if end is not None:
                await self.send({"id": req_id, "end": event_to_wire(end)})
        except asyncio.CancelledError:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send({"id": req_id, "end": event_to_wire(LiveEnd("unwatched"))})
            raise
        except ConnectionError:
            pass
        except Exception as e:  # e.g. an unreadable recording: tell the watcher why
            log.exception("watch of session %s failed", session_id)
            with contextlib.suppress(ConnectionError):
                await self.send({"id": req_id, "ok": False, "error": f"watch failed: {e}"})
        finally:
            rec.unsubscribe(watcher)
            f.close()

    async def _stream(self, req_id: Any, watcher: Watcher) -> LiveEnd | None:
        while True:
            batch = await watcher.next_batch()
            for event in batch:
                live = to_live_event(event, watcher.resolver)
                if live is not None:
                    await self.send({"id": req_id, "event": event_to_wire(live)})
            if watcher.dropped is not None:
                await self.send({"id": req_id, "ok": False, "error": watcher.dropped})
                return None
            if watcher.ended is not None and not batch:
                return LiveEnd(watcher.ended)


Op = Callable[[_Connection, dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    """The control API of one node; ``start_unix``/``start_tcp`` open its listeners."""

    def __init__(self, node: BastionNode) -> None:
        """Serve ``node``'s sessions, store and recordings."""
        self.node = node
        self.output_lines = OutputLines(node.store, node.config)
        """Searches read candidate sessions' terminal lines through it (and its cache)."""
        self.node_uid = os.getuid()
        self.servers: list[asyncio.AbstractServer] = []
        self._connections: set[asyncio.Task[None]] = set()
        self.ops: dict[str, Op] = {
            "whoami": self._whoami,
            "list_sessions": self._list_sessions,
            "search": self._search,
            "recording_path": self._recording_path,
            "terminate": self._terminate,
            "lock_user": self._lock_user,
            "unwatch": self._unwatch,
            "list_requests": self._list_requests,
            "list_alerts": self._list_alerts,
            "approve_request": self._approve_request,
            "deny_request": self._deny_request,
            "user_access": self._user_access,
        }

    async def start_unix(self, path: Path) -> asyncio.AbstractServer:
        """Listen on a Unix socket (mode 0660; a stale socket file is replaced)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # noqa: ASYNC240  start-up
        old = os.umask(0o117)
        try:
            server = await asyncio.start_unix_server(self._on_unix, path=str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o660)
        self.servers.append(server)
        return server

    async def start_tcp(
        self, host: str, port: int, tls_cert: Path, tls_key: Path
    ) -> asyncio.AbstractServer:
        """Listen on TCP with TLS; clients need a control token (raises OSError/SSLError)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls_cert), str(tls_key))
        server = await asyncio.start_server(self._on_tcp, host, port, ssl=ctx)
        self.servers.append(server)
        return server

    async def close(self) -> None:
        """Stop listening and end every connection."""
        for server in self.servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _on_unix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock)
        if not peer_uid_allowed(uid, self.node_uid):
            log.warning("control socket: refused a process of uid %d", uid)
            writer.write(
                encode(
                    {
                        "id": None,
                        "ok": False,
                        "error": f"uid {uid} may not use this control socket; run as root or "
                        f"as the bastion's user (uid {self.node_uid})",
                    }
                )
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        await self._run(_Connection(self, reader, writer, needs_token=False))

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._run(_Connection(self, reader, writer, needs_token=True))

    async def _run(self, conn: _Connection) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101  set by the handshake
        self._connections.add(task)
        try:
            await conn.run()
        finally:
            self._connections.discard(task)

    # -- operations ---------------------------------------------------------------------

    async def _whoami(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        assert conn.operator is not None  # noqa: S101  set by the handshake
        return {"operator": asdict(conn.operator), "node": self.node.node}

    async def _list_sessions(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        live = req.get("live")
        if live is not None and not isinstance(live, bool):
            raise ControlError("'live' must be true, false or null")
        until = _opt_float(req, "until")
        limit = _limit(req, 500)
        node = self.node
        rows = await node.call(
            node.store.list_sessions,
            live=live,
            user=_opt_str(req, "user"),
            target=_opt_str(req, "target"),
            since=_opt_float(req, "since"),
            limit=limit if until is None else 100_000,
            node=_opt_str(req, "node"),
        )
        if until is not None:
            rows = [s for s in rows if s.started_at < until][:limit]
        infos = [session_info(s) for s in rows]
        live_ones = [(i.id, i.started_at) for i in infos if i.live]
        if live_ones:  # the flag: alerts so far, for live sessions only
            counts = await node.call(alert_counts, node.store, live_ones)
            infos = [replace(i, alerts=counts.get(i.id, 0)) if i.live else i for i in infos]
        return {"sessions": [asdict(i) for i in infos]}

    async def _list_alerts(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        found = await node.call(
            list_alerts, node.store, since=_opt_float(req, "since"), limit=_limit(req, 200)
        )
        return {"alerts": [asdict(a) for a in found]}

    async def _search(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        """The search index (admins and auditors; audited as ``session.search``)."""
        assert conn.operator is not None  # noqa: S101  set by the handshake
        node = self.node
        kinds = parse_kinds(_opt_str(req, "kinds"))
        hits = await node.call(
            audited_search,
            node.store,
            Origin.control(conn.operator.name, node.node),
            _str(req, "text"),
            kinds=kinds,
            user=_opt_str(req, "user"),
            target=_opt_str(req, "target"),
            since=_opt_float(req, "since"),
            regex=req.get("regex") is True,
            limit=_limit(req, 200),
            output_lines=self.output_lines,
        )
        found = [
            SearchHit(
                session_id=h.session_id,
                at=h.at,
                offset=h.offset,
                text=h.text,
                user=h.user_name,
                target=h.target_name,
                kind=h.kind,
            )
            for h in hits
        ]
        return {"hits": [asdict(h) for h in found]}

    async def _recording_path(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        session_id = _str(req, "session_id")
        s = await node.call(node.store.get_session, session_id)
        if s is None:
            raise NotFound(f"no session {session_id}; see list_sessions")
        if not s.recording:
            raise ControlError(f"session {session_id} has no recording (it was not recorded)")
        if is_s3_location(s.recording):  # uploaded: the console reads it with ranged GETs
            return {"path": s.recording}
        return {"path": node.recordings.path_of(s.recording)}

    async def _terminate(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        assert conn.operator is not None  # noqa: S101  set by the handshake
        node, actor = self.node, conn.operator.name
        session_id = _str(req, "session_id")
        reason = _str(req, "reason")
        origin = Origin.control(actor, node.node)
        # Through the store so it reaches whichever node runs the session ...
        await node.call(
            admin_actions.terminate_session, node.store, origin, session_id, reason, node.clock()
        )
        node.metrics.count(actions.SESSION_TERMINATE_REQUESTED)
        # ... and at once if that is this node.
        node.live.apply_terminations({session_id: (actor, reason)})
        return {}

    async def _lock_user(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        assert conn.operator is not None  # noqa: S101  set by the handshake
        node, actor = self.node, conn.operator.name
        name = _str(req, "name")
        reason = _str(req, "reason")
        now = node.clock()
        done = await node.call(
            admin_actions.lock_user,
            node.store,
            Origin.control(actor, node.node),
            name,
            now + UNTIL_UNLOCKED,
            reason,
            now,
        )
        node.metrics.count(actions.USER_LOCK)
        ended = {sid: (actor, done.message) for sid in done.sessions}
        node.live.apply_terminations(ended)
        return {"sessions_ended": len(ended)}

    def _flow(self, conn: _Connection) -> tuple[RequestFlow, str]:
        """The node's request flow audited as coming from this control connection."""
        assert conn.operator is not None  # noqa: S101  set by the handshake
        actor = conn.operator.name
        origin = Origin.control(actor, self.node.node).details
        return replace(self.node.requests, origin=dict(origin)), actor

    async def _list_requests(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        pending_only = req.get("pending_only", False)
        if not isinstance(pending_only, bool):
            raise ControlError("'pending_only' must be true or false")
        flow, _actor = self._flow(conn)
        found = await self.node.call(
            list_requests, flow, pending_only=pending_only, limit=_limit(req, 50)
        )
        return {"requests": [request_to_wire(r) for r in found]}

    async def _approve_request(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        request_id = _request_id(req)
        duration = _opt_float(req, "duration")
        if duration is not None and duration <= 0:
            raise ControlError("'duration' must be a positive number of seconds")
        flow, actor = self._flow(conn)
        out = await self.node.call(
            flow.approve, request_id, actor, duration=duration, reason=_opt_str(req, "reason")
        )
        info = await self.node.call(request_of, flow, out.request)
        return {"request": request_to_wire(info)}

    async def _deny_request(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        request_id = _request_id(req)
        reason = _str(req, "reason")
        flow, actor = self._flow(conn)
        out = await self.node.call(flow.deny, request_id, actor, reason)
        info = await self.node.call(request_of, flow, out.request)
        return {"request": request_to_wire(info)}

    async def _user_access(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        include_all = req.get("all", False)
        if not isinstance(include_all, bool):
            raise ControlError("'all' must be true or false")
        node = self.node
        found = await node.call(
            user_access, node.store, _str(req, "name"), node.clock(), include_all=include_all
        )
        return {"access": access_to_wire(found)}

    async def _unwatch(self, conn: _Connection, req: dict[str, Any]) -> dict[str, Any]:
        task = conn.watches.get(req.get("watch"))
        if task is None:
            raise ControlError(f"no running watch with id {req.get('watch')!r}")
        task.cancel()
        return {}


async def start_control(node: BastionNode) -> ControlServer:
    """Open the listeners ``[control]`` asks for (socket, optional TCP+TLS) and log them.

    A missing TLS certificate for the TCP listener is made like the PostgreSQL
    listener's; clients then pass its CA (``control_tls_ca.crt``) as ``cafile``.
    """
    control = ControlServer(node)
    cfg = node.config.control
    if cfg.socket is not None:
        await control.start_unix(cfg.socket)
        log.info("control socket on %s", cfg.socket)
        print(f"bastion: control socket {cfg.socket}", flush=True)
    if cfg.listen is not None:
        if not cfg.tls_cert.exists() and not cfg.tls_key.exists():
            from bastion.pg.tls_cert import make_node_certificate

            make_node_certificate(cfg.tls_cert, cfg.tls_key, None)
        await control.start_tcp(*cfg.listen, cfg.tls_cert, cfg.tls_key)
        print(f"bastion: control API (TLS) on {cfg.listen[0]}:{cfg.listen[1]}", flush=True)
    return control
