"""The contractor-facing SSH listener: authentication and what each connection may open.

This is an asyncssh adapter: it translates callbacks into calls to pure policy
(``bastion.mfa``, ``bastion.grants``) and the state store, audits every
decision, and hands session channels to ``bastion.ssh.session``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

import asyncssh

from bastion import audit_actions as actions
from bastion.alerts import detectors as alerts
from bastion.engagements import banner_line as engagement_banner
from bastion.errors import StoreUnavailable
from bastion.login_guard import (
    address_failed,
    address_refusal,
    ended_unauthenticated,
    penalty_refusal,
)
from bastion.mfa import MfaError, locked_message, match_totp
from bastion.penalties import AUTHFAIL, GRACE_EXCEEDED, NOAUTH
from bastion.proxied import accepting, client_address
from bastion.service import BastionNode
from bastion.session.admission import Refused, find_access, login_refusal
from bastion.session.reasons import STATE_UNAVAILABLE_LOGIN
from bastion.ssh.algorithms import (
    USER_SIGNATURE_ALGORITHMS,
    check_ssh_algorithms,
    offered_host_keys,
)
from bastion.ssh.flow import FlowControlledConnection
from bastion.ssh.forwarding import ForwardingContext, admit_forward
from bastion.ssh.login_name import LoginName, LoginNameError, parse_login_name
from bastion.ssh.session import RelaySession
from bastion.ssh.target_choice import ConnectionContext
from bastion.ssh.two_factor import TwoFactorServerConnection
from bastion.ssh.upstream import drop_cbc_chaff
from bastion.startups import Slot
from bastion.store.models import User

log = logging.getLogger(__name__)

KBDINT_NAME = "bastion: second factor"
KBDINT_PROMPT = "TOTP code: "


def key_fingerprint(key: asyncssh.SSHKey) -> str:
    """SHA256 fingerprint as OpenSSH prints it."""
    return str(key.get_fingerprint("sha256"))


class BastionSSHServer(asyncssh.SSHServer):
    """One instance per client connection: authentication state and channel policy."""

    def __init__(self, node: BastionNode) -> None:
        self.node = node
        self.conn: asyncssh.SSHServerConnection | None = None
        self.client_addr = "?"
        self.login_name: LoginName | None = None
        self.user: User | None = None
        self.key_fingerprint: str | None = None
        self._audited_unknown: set[str] = set()
        self._forwarding: ForwardingContext | None = None
        self._slot: Slot | None = None
        self._state_refused = False
        self.peer_host = "?"
        """The peer address every per-source limit keys on (startups, penalties, blocks)."""
        self._admitted = False  # passed the penalty box and max_startups at accept
        self._authenticated = False
        self._auth_failed: str | None = None  # why a login attempt here failed, if one did

        self.relays: set[RelaySession] = set()
        """Open session channels (for the channel cap and connection back-pressure)."""
        self._forwards = 0
        self._paused = False

    # --- connection ---------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        """Remember the peer; drop the connection if too many are still authenticating,
        in all or from its source (max_startups, per_source_max_startups)."""
        self.conn = conn
        drop_cbc_chaff(conn, self.node.config.ssh.ciphers)
        self.peer_host, self.client_addr = client_address(
            conn.get_extra_info("peername"), getattr(conn, "forwarded_peer", None)
        )
        penalised = penalty_refusal(self.node, self.peer_host)
        if penalised is not None:
            log.info("dropping %s: %s", self.client_addr, penalised)
            conn.abort()
            return
        admitted = self.node.ssh_startups.admit(self.peer_host)
        if isinstance(admitted, str):
            log.warning("dropping %s: %s", self.client_addr, admitted)
            conn.abort()
            return
        self._slot = admitted
        self._admitted = True
        if isinstance(conn, FlowControlledConnection):
            self.node.ssh_connections.add(conn)

    def _uncount(self) -> None:
        if self._slot is not None:
            self._slot.release()

    def auth_completed(self) -> None:
        """No longer counts against ssh.max_startups."""
        self._authenticated = True
        self._uncount()

    def connection_lost(self, exc: Exception | None) -> None:
        """Close any upstream connection kept for port forwarding; a connection that
        never logged in costs its source penalty seconds (``bastion.penalties``)."""
        self._uncount()
        if self._admitted and not self._authenticated:
            self._admitted = False
            if self._auth_failed is not None:
                kind = AUTHFAIL
            elif isinstance(exc, asyncssh.ConnectionLost) and "timeout" in str(exc).lower():
                kind = GRACE_EXCEEDED
            else:
                kind = NOAUTH
            ended_unauthenticated(self.node, self.peer_host, kind)
            if self._auth_failed == "wrong-key" and self.login_name is not None:
                self.node.spawn(
                    address_failed(self.node, self.peer_host, self.login_name.user, "wrong-key")
                )

        if isinstance(self.conn, FlowControlledConnection):
            self.node.ssh_connections.discard(self.conn)
        if self._forwarding is not None:
            self._forwarding.close()

    def writing_paused(self, paused: bool) -> None:
        """The client stopped (or resumed) reading the whole connection: pause every relay."""
        self._paused = paused
        for relay in self.relays:
            relay.connection_paused(paused)

    # --- the channel cap -----------------------------------------------------------------

    def _admit_channel(self, kind: str) -> None:
        """Refuse a channel over ``[ssh] max_channels_per_connection`` at channel open."""
        cap = self.node.config.ssh.max_channels_per_connection
        if not cap or len(self.relays) + self._forwards < cap:
            return
        reason = (
            f"this connection already has {cap} channels open, the most one connection may "
            "have (max_channels_per_connection); close one or open another connection"
        )
        user = self.user.name if self.user is not None else "?"
        self.node.spawn(
            self.node.audit(
                user,
                actions.CHANNEL_REFUSED,
                self.login_name.target if self.login_name is not None else None,
                kind=kind,
                reason=reason,
                limit=cap,
                client=self.client_addr,
            )
        )
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"bastion: {reason}"
        )

    def channel_closed(self, relay: RelaySession) -> None:
        """A session channel is gone: it no longer counts against the cap."""
        self.relays.discard(relay)

    # --- authentication -------------------------------------------------------------

    async def begin_auth(self, username: str) -> bool:
        """Every user must authenticate; the user name may also carry the target. A
        source blocked for failed logins ([login_limits]) is told why and disconnected."""
        try:
            self.login_name = parse_login_name(username)
        except LoginNameError as e:
            self.login_name = None
            self._banner(f"bastion: {e}\r\n")
        self.user = None
        blocked = await address_refusal(self.node, self.peer_host)
        if blocked is not None and self.conn is not None:
            self._auth_failed = "address-blocked"
            log.info("refusing %s: %s", self.client_addr, blocked)
            self._banner(f"bastion: {blocked}\r\n")
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, f"bastion: {blocked}"
            )
        return True

    def public_key_auth_supported(self) -> bool:
        """Public key is the first factor."""
        return True

    def kbdint_auth_supported(self) -> bool:
        """Keyboard-interactive carries the TOTP code (the connection gates when)."""
        return True

    def password_auth_supported(self) -> bool:
        """Passwords are never accepted."""
        return False

    async def _load_user(self) -> User | None:
        if self.login_name is None:
            return None
        try:
            self.user = await self.node.call(self.node.store.get_user, self.login_name.user)
        except StoreUnavailable:
            await self._refuse_state_down()
            return None
        return self.user

    async def _refuse_state_down(self) -> None:
        """No access can be checked: say so and hang up (one log line, no traceback)."""
        if self.conn is None or self.login_name is None or self._state_refused:
            return
        name, conn, self._state_refused = self.login_name.user, self.conn, True
        log.warning(
            "refusing login of %s from %s: state database unreachable", name, self.client_addr
        )
        self._banner(f"bastion: {STATE_UNAVAILABLE_LOGIN}\r\n")
        await self.node.audit(
            name, "login.failed", None, reason="state-unavailable", client=self.client_addr
        )
        conn.disconnect(asyncssh.DISC_SERVICE_NOT_AVAILABLE, STATE_UNAVAILABLE_LOGIN)

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Is ``key`` one of the user's registered keys? (Asked with and without a signature.)"""
        user = await self._load_user()
        if self._state_refused:
            return False
        if user is None:
            name = self.login_name.user if self.login_name else username
            self._auth_failed = "unknown-user"
            if name not in self._audited_unknown:
                self._audited_unknown.add(name)
                await self.node.audit(
                    name, "login.failed", None, reason="unknown-user", client=self.client_addr
                )
                await address_failed(self.node, self.peer_host, name, "unknown-user")
            return False
        offered = key.public_data
        for line in user.ssh_keys:
            try:
                if asyncssh.import_public_key(line).public_data == offered:
                    self.key_fingerprint = key_fingerprint(key)
                    if self._auth_failed == "wrong-key":
                        self._auth_failed = None  # an agent offering other keys first
                    return True
            except (asyncssh.KeyImportError, ValueError):
                log.warning("user %s has an unreadable SSH key line; skipping it", user.name)
        if self._auth_failed is None:
            self._auth_failed = "wrong-key"  # counted per address if no key ever matches
        return False

    async def first_factor_passed(self, username: str, key_data: bytes) -> bool:
        """The key is proven; refuse disabled or locked users before asking for a code."""
        user = await self._load_user()
        if user is None:
            return False
        now = self.node.clock()
        refused = login_refusal(user, now)
        if refused is not None:
            reason, message = refused
            self._auth_failed = reason
            self._banner(f"bastion: {message}\r\n")
            await self.node.audit(
                user.name,
                "login.failed",
                None,
                reason=reason,
                client=self.client_addr,
                key=self.key_fingerprint,
            )
            return False
        reminder = engagement_banner(user, now)
        if reminder is not None:
            self._banner(f"bastion: {reminder}\r\n")
        return True

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, tuple[tuple[str, bool], ...]]:
        """Ask for the TOTP code (no echo)."""
        instruction = "Enter the current 6-digit code from your authenticator app."
        return (KBDINT_NAME, instruction, "", ((KBDINT_PROMPT, False),))

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        """Check the code, guard against replay, count failures and lock when they pile up."""
        user = await self._load_user()
        if user is None or not user.totp_secret:
            return False
        node = self.node
        now = node.clock()
        if user.locked_until is not None and user.locked_until > now:
            self._auth_failed = "locked"
            self._banner(f"bastion: {locked_message(user.name, user.locked_until, now)}\r\n")
            await node.audit(
                user.name, "login.failed", None, reason="locked", client=self.client_addr
            )
            await address_failed(node, self.peer_host, user.name, "locked")
            return False
        try:
            if len(responses) != 1:
                raise MfaError("bad-format", "expected exactly one answer (the TOTP code)")
            step = match_totp(
                user.totp_secret,
                responses[0],
                now,
                user.totp_last_step,
                node.config.mfa.valid_window,
            )
            if not await node.call(node.store.accept_totp_step, user.id, step):
                raise MfaError(
                    "reused-code",
                    "this TOTP code was already used; wait for the next code",
                )
        except MfaError as e:
            await self._mfa_failed(user, e, now)
            return False
        await node.call(node.store.clear_auth_failures, user.id)
        alerts.login_ok(node, user, self.client_addr, now)
        await node.audit(
            user.name,
            "login.ok",
            None,
            client=self.client_addr,
            key=self.key_fingerprint,
            methods="publickey,keyboard-interactive",
            login_name=username,
        )
        return True

    async def _mfa_failed(self, user: User, error: MfaError, now: float) -> None:
        node = self.node
        self._auth_failed = error.reason
        await address_failed(node, self.peer_host, user.name, error.reason)
        await node.call(node.store.record_auth_failure, user.id, now, error.reason)
        failures = await node.call(
            node.store.count_auth_failures, user.id, now - node.lockout.window
        )
        until = node.lockout.lock_until(failures, now)
        await node.audit(
            user.name,
            "login.failed",
            None,
            reason=error.reason,
            client=self.client_addr,
            key=self.key_fingerprint,
            failures=failures,
        )
        alerts.mfa_failed(node, user, failures, self.client_addr)
        if until is not None:
            await node.call(node.store.lock_user, user.id, until)
            await node.audit(
                user.name, "user.locked", user.name, until=until, failures=failures, by="lockout"
            )
            self._banner(f"bastion: {error}. {locked_message(user.name, until, now)}\r\n")
        else:
            left = node.lockout.max_failures - failures
            self._banner(f"bastion: {error} ({left} attempt(s) left before lockout)\r\n")

    def _banner(self, text: str) -> None:
        if self.conn is not None:
            try:
                self.conn.send_auth_banner(text)
            except (OSError, asyncssh.Error):  # pragma: no cover - peer already gone
                pass

    async def agent_forwarding_allowed(self) -> bool:
        """Agent forwarding needs the target in the user name and a grant with ``agent``."""
        assert self.user is not None and self.login_name is not None  # noqa: S101  set by authentication
        node, user = self.node, self.user
        target_name = self.login_name.target
        reason = None
        if target_name is None:
            reason = "agent forwarding needs the target in the user name (USER%TARGET@bastion)"
        else:
            try:
                await node.call(
                    find_access,
                    node.store,
                    user=user,
                    target_name=target_name,
                    protocol="ssh",
                    now=node.clock(),
                    login=self.login_name.login,
                    options=("agent",),
                )
            except Refused as e:
                reason = e.message
        if reason is not None:
            await node.audit(
                user.name, "agent.refused", target_name, reason=reason, client=self.client_addr
            )
            return False
        await node.audit(user.name, "agent.allowed", target_name, client=self.client_addr)
        return True

    # --- channels --------------------------------------------------------------------

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], RelaySession]:
        """Every session channel is relayed (or answered by the bastion's own menu)."""
        assert self.conn is not None and self.user is not None and self.login_name is not None  # noqa: S101  set by authentication
        self._admit_channel("session")
        chan = self.conn.create_server_channel(
            encoding=None, window=self.node.config.ssh.channel_window
        )
        ctx = ConnectionContext(
            node=self.node,
            user=self.user,
            login_name=self.login_name,
            client_addr=self.client_addr,
            key_fingerprint=self.key_fingerprint,
        )
        relay = RelaySession(ctx, on_close=self.channel_closed)
        self.relays.add(relay)
        if self._paused:
            relay.connection_paused(True)
        return chan, relay

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        """Local port forwarding (-L): relayed through the target only when granted,
        refused at channel open otherwise (asyncssh awaits the admission)."""
        assert self.user is not None and self.login_name is not None  # noqa: S101  set by authentication
        if self._forwarding is None:
            self._forwarding = ForwardingContext(
                node=self.node,
                user=self.user,
                login_name=self.login_name,
                client_addr=self.client_addr,
            )
        self._admit_channel("direct-tcpip")
        self._forwards += 1  # counted from the open until the channel closes
        return self._counted(
            admit_forward(self._forwarding, dest_host, dest_port, self._uncount_forward)
        )

    async def _counted(
        self, admitting: Awaitable[asyncssh.SSHTCPSession[bytes]]
    ) -> asyncssh.SSHTCPSession[bytes]:
        try:
            return await admitting
        except BaseException:  # refused: no channel, no count
            self._forwards -= 1
            raise

    def _uncount_forward(self) -> None:
        self._forwards -= 1

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        """Remote forwarding (-R) would open a listener on the target: never allowed."""
        assert self.user is not None  # noqa: S101  set by authentication
        user = self.user.name
        self.node.spawn(
            self.node.audit(
                user,
                "forward.refused",
                f"{listen_host}:{listen_port}",
                kind="remote",
                reason="remote forwarding is not supported",
            )
        )
        return False


async def start_ssh_listener(
    node: BastionNode, host: str | None = None, port: int | None = None
) -> asyncio.Server:
    """Listen for contractors; returns the asyncio server (its sockets tell the bound port)."""
    cfg = node.config.ssh
    check_ssh_algorithms(cfg)  # 'bastion serve' did already; a node built in code has not
    options = await asyncssh.SSHServerConnectionOptions.construct(
        server_factory=lambda: BastionSSHServer(node),
        server_host_keys=[str(cfg.host_key)],
        login_timeout=cfg.login_timeout,
        encoding=None,
        x11_forwarding=False,
        agent_forwarding=True,  # per connection: TwoFactorServerConnection.create_agent_listener
        keepalive_interval=60,
        keepalive_count_max=3,
        encryption_algs=list(cfg.ciphers),
        kex_algs=list(cfg.kex_algorithms),
        mac_algs=list(cfg.macs),
        signature_algs=list(USER_SIGNATURE_ALGORITHMS),
        # Our menu reads lines itself; asyncssh's line editor (inactive with bytes
        # channels) would only wrap every channel callback in one more call.
        line_editor=False,
        # What a peer may send on one channel before it must wait: the most a channel
        # paused by a slow reader can hold (README "Limits").
        window=cfg.channel_window,
    )
    options.server_host_keys = offered_host_keys(
        options.server_host_keys, cfg.host_key_algorithms, cfg.host_key
    )
    loop = asyncio.get_running_loop()

    def conn_factory() -> TwoFactorServerConnection:
        return TwoFactorServerConnection(loop, options)

    return await loop.create_server(
        accepting(
            conn_factory,
            proxy_protocol=cfg.proxy_protocol,
            trusted=cfg.trusted_proxies,
            timeout=cfg.login_timeout,
            listener="ssh",
        ),
        host if host is not None else cfg.listen_host,
        port if port is not None else cfg.listen_port,
        backlog=512,
        reuse_address=True,
        reuse_port=node.config.worker > 0,
    )
