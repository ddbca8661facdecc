"""One client connection to the PostgreSQL listener: handshake, login, relay.

The asyncio adapter around the sans-IO pieces: ``FrontDoor`` (encryption,
startup, token), ``bastion.pg.login`` (token, grant, recording, upstream
login), then the relay. The relay forwards the bytes it received unchanged
(no re-encoding) after the relay's scanners (``relay_scan``) have seen them:
they validate framing and limits, feed the ``QueryTracker`` and the recording,
and tell where message boundaries are, so the bastion's own notices and its
termination error are only ever injected between two server messages.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import cast

from bastion.errors import BastionError
from bastion.login_guard import ended_unauthenticated, penalty_refusal
from bastion.penalties import AUTHFAIL, GRACE_EXCEEDED, NOAUTH
from bastion.pg.cancel import forward_cancel, send_cancel
from bastion.pg.encoding import encode
from bastion.pg.errors import PROGRAM_LIMIT_EXCEEDED, ProtocolViolation
from bastion.pg.front_door import (
    Action,
    Authenticate,
    Cancel,
    Closed,
    FrontDoor,
    Reject,
    Send,
    StartTls,
    connection_error,
)
from bastion.pg.front_end import Peer, PgFrontEnd
from bastion.pg.guard import ErrorSwap, Pending, Piece, StatementGate, denial_error
from bastion.pg.login import LoggedIn, LoginRefused, log_in
from bastion.pg.masking import SessionMasks
from bastion.pg.messages import AuthenticationOk, CancelRequest, NoticeResponse
from bastion.pg.protocol import error_response
from bastion.pg.query_log import ROWS_EVENT, QueryLog, RowCapture
from bastion.pg.relay_scan import ClientScanner, ServerScanner
from bastion.pg.tracker import QueryRecord, QueryTracker
from bastion.proxied import client_address
from bastion.proxy_protocol import Address
from bastion.recording import LiveRecording
from bastion.session.reasons import EndReason
from bastion.startups import Slot
from recorder.events import JSONValue

log = logging.getLogger(__name__)

ADMIN_SHUTDOWN = "57P01"
"""SQLSTATE admin_shutdown: what the client sees when the bastion ends its session."""
REFUSAL_GRACE = 3.0
"""Seconds a connection refused at capacity has to reach its startup message (TLS
included) and read the refusal there; a silent one gets it when they run out."""
CANCEL_REQUEST = "cancel"
"""``_ending`` of a CancelRequest connection (never penalised)."""
CONNECTION_FAILURE = "08006"
"""SQLSTATE connection_failure: what the client sees when the target goes away."""
UPSTREAM_GONE = f"{EndReason.UPSTREAM_CLOSED.words}; the session has ended, reconnect later"
_MAX_INDEXED = 10_000  # distinct statements kept for the session search index
_DDL_TAGS = ("CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE", "SELECT INTO")


class ClientConnection(asyncio.Protocol):
    """The contractor's side of one PostgreSQL connection: the session core's adapter."""

    def __init__(self, front: PgFrontEnd) -> None:
        self.front = front
        self.node = front.node
        self.transport: asyncio.Transport | None = None
        self.client_addr = "?"
        self.forwarded_peer: Address | None = None
        """The client's address as a trusted PROXY-protocol balancer sent it."""
        self.peer_host = "?"
        """The peer address every per-source limit keys on (startups, penalties, blocks)."""
        self._ending: str | None = None  # how an unauthenticated connection ended (penalties)
        self.door = FrontDoor(
            tls_available=front.tls is not None,
            require_tls=front.config.require_tls,
            max_message_length=front.config.max_message_bytes,
        )
        self.session: LoggedIn | None = None
        self.relaying = False
        self.closed = False
        self.finished = False
        self.slot: Slot | None = None  # a login in progress, held until logged in or gone
        self._refusing = False  # refused at capacity, answering politely (front.refusing)
        self.client_scan: ClientScanner | None = None
        self.server_scan: ServerScanner | None = None
        self.tracker: QueryTracker | None = None
        self.recording: LiveRecording | None = None
        self._t0 = time.monotonic()
        self._seq = 0
        self._query_log = QueryLog()
        self._pending_out: list[bytes] = []
        self._closing_after_pending = False
        self._indexed: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._paused_by_upstream = False
        self.stalled = False
        """The client stopped reading: the target is paused (``pause_writing``)."""
        self._tls_pending: list[bytes] | None = None
        self._held: list[bytes] = []
        self._in_upstream = False
        self._terminating = False
        self.rows: RowCapture | None = None
        self.masks: SessionMasks | None = None
        self._gate: StatementGate | None = None  # statements judged before forwarding
        self._swap: ErrorSwap | None = None
        self._judging = False

    # --- asyncio Protocol (client side) -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accepted: start the login timer (slow or silent clients are cut off)."""
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if self.transport is not None:  # TLS upgrade: the protocol is reused
            self.transport = transport
            return
        self.transport = transport
        self.peer_host, self.client_addr = client_address(
            transport.get_extra_info("peername"), self.forwarded_peer
        )
        penalised = penalty_refusal(self.node, self.peer_host)
        if penalised is not None:
            log.info("refusing %s: %s", self.client_addr, penalised)
            self._write(connection_error("too many failed connections from here; retry later"))
            self._close()
            return
        admitted = self.front.startups.admit(self.peer_host)
        loop = asyncio.get_running_loop()
        if isinstance(admitted, str):
            log.warning("refusing %s: %s", self.client_addr, admitted)
            refusal = connection_error("too many connections are logging in; retry", "53300")
            front = self.front
            if front.refusing >= front.config.max_startups:  # a flood: no TLS for it
                self._write(refusal)
                self._close()
                return
            front.refusing += 1
            self._refusing = True
            self.door.refuse(refusal)  # answered at the startup message, where psql shows it
            grace = min(front.config.login_timeout, REFUSAL_GRACE)
            self._timer = loop.call_later(grace, self._login_timeout)
            return
        self.slot = admitted
        self._timer = loop.call_later(self.front.config.login_timeout, self._login_timeout)

    def data_received(self, data: bytes) -> None:
        """Handshake bytes, or relayed protocol once logged in."""
        if self.relaying:
            self._client_data(data)
        elif self._tls_pending is not None:
            # Decrypted bytes can arrive before start_tls() returns the new transport;
            # hold them so replies go out encrypted.
            self._tls_pending.append(data)
        elif not self.door.done:
            self._perform(self.door.receive_data(data))
        elif not self.closed:
            self._held.append(data)  # after the password, before the relay: keep in order

    def eof_received(self) -> bool | None:
        """The client closed its side: treat it as a disconnect."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Client gone: close the target side and finish the session record."""
        self.closed = True
        self._uncount()
        if self._timer is not None:
            self._timer.cancel()
        session = self.session
        if session is not None:
            session.upstream.close()
            self._finish_later(EndReason.CLIENT_CLOSED)

    def pause_writing(self) -> None:
        """The client is not reading: stop reading from the target (the node then holds
        at most the transport's high-water mark plus one read); the core times the stall."""
        self.stalled = True
        session = self.session
        if session is not None:
            if session.upstream.transport is not None:
                session.upstream.transport.pause_reading()
            session.core.output_stalled(True)

    def resume_writing(self) -> None:
        """The client reads again."""
        self.stalled = False
        session = self.session
        if session is not None:
            if session.upstream.transport is not None:
                session.upstream.transport.resume_reading()
            session.core.output_stalled(False)

    def buffered(self) -> int:
        """Bytes held for this client now (read by ``/metrics``, never on the data path)."""
        held = sum(len(b) for b in self._pending_out)
        transport = self.transport
        return held + (transport.get_write_buffer_size() if transport is not None else 0)

    # --- handshake ---------------------------------------------------------------------

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._write(action.data)
            elif isinstance(action, StartTls):
                self._pause()  # the ClientHello must reach the TLS layer, not the door
                self._tls_pending = []
                self._spawn(self._start_tls())
            elif isinstance(action, Authenticate):
                self._pause()
                self._spawn(self._login(action))
            elif isinstance(action, Reject):
                self._ending = AUTHFAIL
                self._write(action.data)
                self._spawn(
                    self.front.refused(
                        action.user, action.database, action.reason, action.message, self._peer()
                    )
                )
                self._close()
            elif isinstance(action, Cancel):
                self._ending = CANCEL_REQUEST  # a whole connection of its own: no penalty
                self._spawn(self._cancel(action))
            elif isinstance(action, Closed):
                self._close()

    async def _start_tls(self) -> None:
        assert self.transport is not None and self.front.tls is not None  # noqa: S101  set before any event
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(self.transport, self, self.front.tls, server_side=True)
        except (OSError, ConnectionError) as e:
            log.info("TLS handshake with %s failed: %s", self.client_addr, e)
            self._gone()
            return
        if new is None:
            self._gone()
            return
        self.transport = new
        self.door.tls_started()
        early, self._tls_pending = self._tls_pending or [], None
        for data in early:
            self.data_received(data)

    def _gone(self) -> None:
        """The connection died where asyncio will not call ``connection_lost`` (inside a
        TLS handshake): release the login slot and the timer ourselves."""
        self.closed = True
        self._uncount()
        if self._timer is not None:
            self._timer.cancel()
        self._close()

    async def _cancel(self, action: Cancel) -> None:
        self._close()
        route = self.front.cancels.find(action.pid, action.secret)
        if route is None:
            await self._forward_cancel(action)
            return
        await self.node.audit(
            route.user, "pg.cancel", route.target, session=route.session_id, client=self.client_addr
        )
        try:
            await send_cancel(route, self.front.config.connect_timeout)
        except (OSError, TimeoutError) as e:
            log.warning("forwarding cancel for session %s failed: %s", route.session_id, e)

    async def _forward_cancel(self, action: Cancel) -> None:
        """A key this node did not issue: hand it to the node the store says did, if any."""
        node = self.node
        try:
            owner = await node.call(node.store.cancel_key_node, action.pid)
            peer = None
            if owner is not None and owner != node.node:
                peer = await node.call(node.store.get_node, owner)
        except BastionError as e:
            log.warning("cancel request from %s not forwarded: %s", self.client_addr, e)
            return
        if peer is None or peer.stopped_at is not None or not peer.pg_addr:
            # nobody issued it, it is ours but gone, or the owner cannot be reached
            log.info("cancel request with an unknown key from %s", self.client_addr)
            return
        host, _, port = peer.pg_addr.rpartition(":")
        log.info("cancel request from %s forwarded to node %s", self.client_addr, peer.name)
        try:
            await forward_cancel(
                host.strip("[]"),
                int(port),
                CancelRequest(action.pid, action.secret),
                self.front.config.connect_timeout,
            )
        except (OSError, TimeoutError) as e:
            log.warning("forwarding a cancel to node %s failed: %s", peer.name, e)

    def _peer(self) -> Peer:
        return Peer(self.client_addr, self.door.tls, self.peer_host)

    async def _login(self, request: Authenticate) -> None:
        try:
            session = await log_in(self.front, request, self._peer(), self)
        except LoginRefused as e:
            self._ending = AUTHFAIL
            self._write(error_response(e.sqlstate, f"bastion: {e.message}"))
            self._close()
            return
        except Exception:  # never leave a client waiting on a bug
            log.exception("login of %s failed", self.client_addr)
            self._write(connection_error("internal error during login; see the bastion log"))
            self._close()
            return
        self.session = session
        self.recording = session.core.recording
        if self.closed or session.core.ending:  # the client left or an end came meanwhile
            session.upstream.close()
            self._close()
            self._finish_later(EndReason.CLIENT_CLOSED)
            return
        self._start_relay(session)

    def _start_relay(self, session: LoggedIn) -> None:
        self.session = session
        self.recording = session.core.recording
        backend = session.upstream.login.parser
        self.tracker = QueryTracker(self._clock)
        cfg = self.front.config
        rows = None
        if cfg.capture_rows:
            catalog = self.front.masking.catalog(session.core.target, session.credset)
            self.masks = SessionMasks(catalog, self.node.spawn)
            rows = RowCapture(
                cfg.capture_rows,
                self.front.mask_rules,
                self.front.mask_patterns,
                self.masks,
                self._record_rows,
            )
        self.rows = rows
        self.client_scan = ClientScanner(self.tracker, cfg.max_message_bytes)
        if self.node.hooks.judging:
            self._gate = StatementGate(cfg.max_message_bytes)
            self._swap = ErrorSwap(backend.max_message_length)
        self.server_scan = ServerScanner(
            self.tracker, backend.max_message_length, self._record, rows, self._record_rows
        )
        hello = bytearray(encode(AuthenticationOk()))
        self.door.parser.backend_sent(AuthenticationOk())
        hello += session.greeting
        self._write(bytes(hello))
        self.relaying = True
        self._uncount()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session.upstream.sink = self
        if not session.core.go_live():
            self._close_all()
            return
        self._t0 = session.t0
        # Bytes that came with or after the password, and server bytes that came after
        # its ReadyForQuery, go through the relay like any others, in order.
        early_client = self.door.parser.take_unparsed() + b"".join(self._held)
        self._held.clear()
        early_server = backend.take_unparsed() + b"".join(session.upstream.early)
        session.upstream.early.clear()
        if early_client:
            self._client_data(early_client)
        if early_server:
            self.from_upstream(early_server)
        if session.upstream.lost:
            self.upstream_lost(None)
            return
        self._resume()

    # --- relay -------------------------------------------------------------------------

    def _clock(self) -> float:
        return time.monotonic() - self._t0

    def _client_data(self, data: bytes) -> None:
        session, scanner = self.session, self.client_scan
        assert session is not None and scanner is not None  # noqa: S101  set before any event
        if self._terminating:
            return  # the session is ending: nothing more reaches the target
        gate = self._gate
        if gate is not None:
            session.core.input_seen(len(data))
            pieces, pending = gate.feed(data, self._allowed_at_once)
            self._pass(pieces, pending)
            return
        try:
            scanner.feed(data)
        except ProtocolViolation as e:
            self._protocol_error(e)
            return
        if scanner.terminated:
            session.core.closed(EndReason.CLIENT_CLOSED)
        session.core.input_seen(len(data))
        session.upstream.write(data)

    # --- guardrails: judged statements (see bastion.pg.guard) ---------------------------

    def _allowed_at_once(self, sql: str) -> bool:
        session = self.session
        assert session is not None  # noqa: S101  set before any event
        return session.core.allowed_at_once("statement", sql)

    def _pass(self, pieces: list[Piece], pending: Pending | None) -> None:
        """Scan and forward whole messages; start judging the statement that stopped them."""
        session, scanner = self.session, self.client_scan
        assert session is not None and scanner is not None  # noqa: S101  set before any event
        for buf, frames, sent in pieces:
            try:
                scanner.scan(buf, frames)  # framed once, by the gate
            except ProtocolViolation as e:
                self._protocol_error(e)
                return
            if scanner.terminated:
                session.core.closed(EndReason.CLIENT_CLOSED)
            session.upstream.write(sent)
        if pending is not None and not self._judging:
            self._judging = True
            self._pause()
            self._spawn(self._judge(pending))

    async def _judge(self, pending: Pending) -> None:
        """Ask the session core (it may wait for a hold), then forward or replace."""
        session, gate, swap = self.session, self._gate, self._swap
        assert session is not None and gate is not None and swap is not None  # noqa: S101
        core = session.core
        try:
            ok = await core.judge("statement", pending.sql)
        except Exception:  # a bug must not let the statement through
            log.exception("judging a statement failed in session %s", core.id)
            ok = False
        if self.closed or self._terminating or core.ending:
            return  # terminate/lock: the core is closing the session
        self._judging = False
        token = None
        if not ok:
            token = secrets.token_hex(16)
            decision = core.last_decision
            rule = decision.rule if decision is not None else None
            detail = decision.reason if decision is not None else ""
            words = f"rule {rule!r}" if rule else "the bastion's default policy"
            error = denial_error(f"bastion: statement denied by {words}", detail)
        piece, ready = gate.decided(token)
        if token is not None:
            server = self.server_scan
            assert server is not None  # noqa: S101  set with the gate
            swap.expect(server.in_flight(), server.ready_seen, token, error, ready)
        self._pass([piece], None)
        if self._terminating or self.closed:
            return
        pieces, pending_next = gate.pump(self._allowed_at_once)
        self._pass(pieces, pending_next)
        if not self._judging:
            self._resume()

    def from_upstream(self, data: bytes) -> None:
        """Server bytes: track and record each message, then forward the bytes as they came.

        The bastion's own messages raised meanwhile (a recording failure ends the
        session) are queued and sent after these bytes, at the next message boundary.
        """
        scanner = self.server_scan
        assert scanner is not None  # noqa: S101  set before any event
        if self.closed:
            return
        swap = self._swap
        if swap is not None and swap.active:
            data = swap.feed(data)
        self._in_upstream = True
        try:
            scanner.feed(data)
        except ProtocolViolation as e:
            log.warning("target sent invalid protocol in session %s: %s", self._sid(), e)
            self._in_upstream = False
            session = self.session
            if session is not None:
                session.core.terminate(
                    EndReason.UPSTREAM_PROTOCOL_ERROR,
                    f"the target sent invalid data: {e.message}",
                )
            self._close_all()  # framing is lost: no boundary will come
            return
        finally:
            self._in_upstream = False
        session = self.session
        if session is not None:
            session.core.output_seen(len(data))
        self._write(data)
        if self._pending_out and scanner.buffered == 0:
            self._flush_pending()

    def _record(self, records: list[QueryRecord]) -> None:
        recording = self.recording
        session = self.session
        for rec in records:
            self._seq += 1
            if self.masks is not None and any(t.startswith(_DDL_TAGS) for t in rec.tags):
                self.masks.catalog.invalidate()  # columns and views may have changed
            if recording is not None:
                self._query_log.record(recording, self._seq, rec)
            if rec.returned and session is not None:
                session.core.rows_returned(rec.sql, rec.returned)
            sql = rec.sql
            if sql and len(self._indexed) < _MAX_INDEXED and sql not in self._indexed:
                self._indexed[sql] = rec.started_at

    def _record_rows(self, payload: dict[str, JSONValue]) -> None:
        if self.recording is not None:
            self.recording.event(ROWS_EVENT, payload)

    def upstream_lost(self, exc: Exception | None) -> None:
        """The target went away: the client is told why (a FATAL, if the target's last
        message was whole) and cannot continue either."""
        if self.closed:
            return
        if self.session is not None:
            self.session.core.closed(EndReason.UPSTREAM_CLOSED)
        if self.relaying and (self.server_scan is None or self.server_scan.buffered == 0):
            for data in self._pending_out:  # the bastion's own, already on a boundary
                self._write(data)
            self._pending_out.clear()
            if not self._terminating:
                self._write(connection_error(UPSTREAM_GONE, CONNECTION_FAILURE))
        self._close()

    def pause_client(self) -> None:
        """Flow control from the target."""
        self._paused_by_upstream = True
        self._pause()

    def resume_client(self) -> None:
        """Flow control from the target."""
        self._paused_by_upstream = False
        self._resume()

    def _protocol_error(self, e: ProtocolViolation) -> None:
        log.info("client %s sent invalid protocol: %s", self.client_addr, e)
        if self.session is not None:
            # A message over max_message_bytes is a resource cap, not garbage.
            over = e.sqlstate == PROGRAM_LIMIT_EXCEEDED
            reason = EndReason.RESOURCE_LIMIT if over else EndReason.CLIENT_PROTOCOL_ERROR
            self.session.core.closed(reason)
        self._inject(error_response(e.sqlstate, f"bastion: {e.message}"), close=True)

    # --- what the session core asks (SessionAdapter) -----------------------------------

    def tell(self, message: str) -> None:
        """A WARNING the client shows (psql prints it with its next result)."""
        notice = NoticeResponse(
            {"S": "WARNING", "V": "WARNING", "C": "01000", "M": f"bastion: {message}"}
        )
        self._inject(encode(notice))

    def close(self, reason: str, message: str) -> None:
        """End the session now (time box, revocation, admin, recording failure, node stop)."""
        if self.closed or self._terminating:
            return
        self._terminating = True
        if not self.relaying:  # still logging in: nothing to put on a boundary
            self._close_all()
            return
        if self.stalled:
            # The client reads nothing, so a FATAL would never reach it and a graceful
            # close would wait for it forever: drop the connection (the audit has why).
            if self.transport is not None:
                self.transport.abort()
            if self.session is not None:
                self.session.upstream.close()
            return
        # Client input stops here (see _client_data); the target's current message is
        # finished first so the error lands on a boundary, then both sides close.
        self._inject(
            error_response(ADMIN_SHUTDOWN, f"bastion: {message}: closing this session"),
            close=True,
        )

    def _inject(self, data: bytes, close: bool = False) -> None:
        """Send our own message between two server messages, never inside one."""
        at_boundary = self.server_scan is None or self.server_scan.buffered == 0
        if at_boundary and not self._pending_out and not self._in_upstream:
            self._write(data)
            if close:
                self._close_all()
            return
        self._pending_out.append(data)
        if close and not self._closing_after_pending:
            self._closing_after_pending = True
            loop = asyncio.get_running_loop()
            loop.call_later(2.0, self._close_all)  # a server message that never completes

    def _flush_pending(self) -> None:
        for data in self._pending_out:
            self._write(data)
        self._pending_out.clear()
        if self._closing_after_pending:
            self._close_all()

    # --- plumbing ----------------------------------------------------------------------

    def _sid(self) -> str | None:
        return self.session.core.id if self.session else None

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _resume(self) -> None:
        if (
            self.transport is not None
            and not self.transport.is_closing()
            and not self._paused_by_upstream
            and not self._judging
        ):
            self.transport.resume_reading()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _close_all(self) -> None:
        """Close the client and, if logged in, the target (it rolls back what is open)."""
        self._close()
        if self.session is not None:
            self.session.upstream.close()

    def _uncount(self) -> None:
        if self.slot is not None and self.slot.held:
            self.slot.release()
            if not self.relaying and self._ending != CANCEL_REQUEST:
                # left without logging in: its source pays for it
                ended_unauthenticated(self.node, self.peer_host, self._ending or NOAUTH)
        if self._refusing:
            self._refusing = False
            self.front.refusing -= 1

    def _login_timeout(self) -> None:
        if not self.relaying and not self.closed:
            self._ending = self._ending or GRACE_EXCEEDED
            log.info("PostgreSQL client %s did not log in in time", self.client_addr)
            if self._tls_pending is None:
                self._write(self.door.refusal or connection_error("login timed out", "08006"))
            self._gone()

    def _spawn(self, coro: object) -> None:
        self.node.spawn(coro)

    def _finish_later(self, reason: str) -> None:
        if not self.finished:
            self.finished = True
            self.node.spawn(self._finish(reason))

    async def _finish(self, reason: str) -> None:
        session = self.session
        assert session is not None  # noqa: S101  set before any event
        core = session.core
        core.closed(reason)
        self.front.cancels.forget(session.client_key.pid)
        try:
            await self.node.call(
                self.node.store.release_cancel_key, session.client_key.pid, self.node.node
            )
        except BastionError as e:  # the row is cleared when this node next starts
            log.warning("cancel key not released in the state store: %s", e)
        if self.rows is not None and self.masks is not None:
            await self.masks.settle(self.front.config.connect_timeout)
            self.rows.fail_closed()  # a plan still unknown masks its whole result
        if self.tracker is not None:
            leftover = self.tracker.close()
            if leftover and self.recording is not None and self.recording.failed is None:
                self._record(leftover)
        started = core.started_at
        indexed = [(started + t, sql) for sql, t in self._indexed.items()]

        async def commands(_path: str) -> list[tuple[float, str]]:
            return indexed

        await core.finish(commands, queries=self._seq)
