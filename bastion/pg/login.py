"""From a client's token to a logged-in, recorded database session.

The policy steps of a PostgreSQL connection, in the order that keeps the
promises: the token must be live and bound to this user and target; the user
must be enabled and not locked; a grant must be usable now for the credential
set asked for (so revoking the grant kills its tokens too); the recording must
exist before anything reaches the target (fail closed); only then does the
bastion log in upstream with the credential set, which the client never sees.
Every refusal is audited and answered with an SQLSTATE and a reason the
contractor can act on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bastion.db_tokens import TokenRefused, check_db_token
from bastion.engagements import refusal as engagement_refusal
from bastion.errors import StoreError, StoreUnavailable
from bastion.grants import format_time, is_usable
from bastion.login_guard import address_failed, address_refusal
from bastion.pg.encoding import encode
from bastion.pg.front_door import INVALID_AUTHORIZATION, INVALID_PASSWORD, Authenticate
from bastion.pg.front_end import Peer, PgFrontEnd
from bastion.pg.messages import BackendKeyData, ParameterStatus, ReadyForQuery
from bastion.pg.upstream import UpstreamConnection, connect_upstream
from bastion.pg.upstream_login import LoginFailed, UpstreamLogin
from bastion.session.admission import Access, Refused, credset_of, find_access
from bastion.session.core import Session, SessionAdapter, run_admission_hooks
from bastion.session.reasons import STATE_UNAVAILABLE_LOGIN, EndReason, RefusalReason
from bastion.store.models import Credset

__all__ = ["LoggedIn", "LoginRefused", "log_in"]

log = logging.getLogger(__name__)

_CANNOT_CONNECT = "08001"  # sqlclient_unable_to_establish_sqlconnection
_INVALID_CATALOG = "3D000"
_CANNOT_CONNECT_NOW = "57P03"
_DISK_FULL = "53100"  # the closest standard class for "cannot record"
_SQLSTATE_OF_REFUSAL = {
    RefusalReason.NO_TARGET: _INVALID_CATALOG,
    RefusalReason.NODE_STOPPING: _CANNOT_CONNECT_NOW,
    RefusalReason.RECORDING_UNAVAILABLE: _DISK_FULL,
}


class LoginRefused(Exception):
    """The connection is refused; ``message`` is shown to the client (already audited)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


@dataclass
class LoggedIn:
    """A database session that passed every check and is logged in upstream."""

    core: Session
    credset: Credset
    upstream: UpstreamConnection
    greeting: bytes
    """ParameterStatus..., our BackendKeyData, ReadyForQuery: what the client gets next."""
    client_key: BackendKeyData
    t0: float
    """``time.monotonic()`` when the recording started: the zero of query times."""


async def claim_fleet_key(front: PgFrontEnd, key: BackendKeyData) -> BackendKeyData:
    """Record this node as the owner of ``key`` so other nodes forward its cancels.

    A pid another node already holds gets a new one. If the store cannot be
    written the key still works through this node; only forwarding is lost.
    """
    node = front.node
    for _ in range(8):
        try:
            if await node.call(node.store.claim_cancel_key, key.pid, node.node, node.clock()):
                return key
        except StoreError as e:
            log.warning("cancel key not recorded for the fleet (only this node can cancel): %s", e)
            return key
        key = front.cancels.reissue(key.pid)
    return key


async def log_in(
    front: PgFrontEnd, request: Authenticate, peer: Peer, adapter: SessionAdapter
) -> LoggedIn:
    """Run every check and the upstream login; raises LoginRefused (audited).

    An unreachable state database refuses the login with words psql prints
    (SQLSTATE 57P03, cannot connect now), and one log line.
    """
    try:
        return await _log_in(front, request, peer, adapter)
    except StoreUnavailable as e:
        log.warning(
            "refusing PostgreSQL login of %s from %s: state database unreachable",
            request.user,
            peer.client_addr,
        )
        reason = RefusalReason.STATE_UNAVAILABLE
        await front.refused(request.user, request.target, reason, STATE_UNAVAILABLE_LOGIN, peer)
        raise LoginRefused(_CANNOT_CONNECT_NOW, STATE_UNAVAILABLE_LOGIN) from e


async def _log_in(
    front: PgFrontEnd, request: Authenticate, peer: Peer, adapter: SessionAdapter
) -> LoggedIn:
    node, store = front.node, front.node.store
    now = node.clock()

    async def refuse(sqlstate: str, reason: str, message: str) -> LoginRefused:
        await front.refused(request.user, request.target, reason, message, peer)
        return LoginRefused(sqlstate, message)

    blocked = await address_refusal(node, peer.host)
    if blocked is not None:
        raise await refuse(INVALID_AUTHORIZATION, "address-blocked", blocked)
    try:
        token = await node.call(
            check_db_token,
            store,
            user_name=request.user,
            target_name=request.target,
            token=request.token,
            now=now,
            credset=request.credset,
        )
    except TokenRefused as e:
        message = e.message
        if e.reason == "revoked":  # revoked because the engagement ended? say when
            owner = await node.call(store.get_user, request.user)
            message = (owner and engagement_refusal(owner, now)) or message
        await address_failed(node, peer.host, request.user, f"token-{e.reason}")
        raise await refuse(INVALID_PASSWORD, f"token-{e.reason}", message) from e
    user = await node.call(store.get_user, request.user)
    if user is not None and (ended := engagement_refusal(user, now)) is not None:
        raise await refuse(INVALID_AUTHORIZATION, RefusalReason.ENGAGEMENT_ENDED, ended)
    if user is None or user.disabled:
        raise await refuse(INVALID_AUTHORIZATION, "user-disabled", "this user is disabled")
    if user.locked_until is not None and user.locked_until > now:
        raise await refuse(
            INVALID_AUTHORIZATION,
            "user-locked",
            f"this user is locked until {format_time(user.locked_until)}",
        )
    try:
        access = await node.call(
            find_access,
            store,
            user=user,
            target_name=request.target,
            protocol="postgres",
            now=now,
            login=request.credset or token.credset,
        )
        grant = access.grant
        if token.grant_id is not None and grant.id != token.grant_id:
            grants = await node.call(store.list_grants, user_id=user.id, target_id=access.target.id)
            own = next((g for g in grants if g.id == token.grant_id), None)
            if own is None or not is_usable(own, now):
                raise await refuse(
                    INVALID_PASSWORD,
                    "token-grant-ended",
                    f"the grant this token came from (#{token.grant_id}) is no longer usable; "
                    f"get a new token with 'ssh BASTION db-token {access.target.name}'",
                )
            grant = own  # a token works under its own grant, not a neighbour's
        credset = credset_of(access.target, grant.credset)
        admitted = Access(access.target, grant, credset.name)
        await run_admission_hooks(
            node,
            admitted,
            user=user,
            protocol="postgres",
            kind="postgres",
            client_addr=peer.client_addr,
        )
        core = Session(
            node,
            admitted,
            user=user,
            protocol="postgres",
            kind="postgres",
            client_addr=peer.client_addr,
            adapter=adapter,
        )
        meta: dict[str, object] = {
            "database": access.target.database,
            "application_name": request.parameters.get("application_name"),
        }
        await core.start_recording(
            meta,
            credset=credset.name,
            application_name=request.parameters.get("application_name"),
        )
    except Refused as e:
        sqlstate = _SQLSTATE_OF_REFUSAL.get(e.reason, INVALID_AUTHORIZATION)  # type: ignore[call-overload]
        raise await refuse(sqlstate, e.reason, e.message) from e
    return await _log_in_upstream(front, request, peer, core, credset)


async def _log_in_upstream(
    front: PgFrontEnd, request: Authenticate, peer: Peer, core: Session, credset: Credset
) -> LoggedIn:
    """Log in to the target with the credential set; the client never sees it."""
    t0 = time.monotonic()
    target = core.target
    login = UpstreamLogin(
        user=credset.user,
        password=credset.password,
        database=target.database or target.name,
        parameters=request.parameters,
        tls_mode=target.tls_mode,
    )
    try:
        upstream, result = await connect_upstream(target, login, front.config.connect_timeout)
    except Exception as e:  # a bug must not leave the session row open either
        if isinstance(e, LoginFailed):
            failure = e
        else:
            log.exception("upstream login to %s failed unexpectedly", target.name)
            failure = LoginFailed(f"internal error while connecting ({type(e).__name__})")
        message = f"cannot log in to {target.name}: {failure.message}"
        await front.refused(core.user.name, target.name, "upstream-refused", message, peer, core.id)
        if core.recording is not None:
            core.recording.marker(f"upstream login failed: {failure.message}")
        core.closed(EndReason.UPSTREAM_REFUSED)
        await core.finish()
        raise LoginRefused(_CANNOT_CONNECT, message) from e
    if result.backend_key is None:
        result.backend_key = BackendKeyData(0, b"\0\0\0\0")
    client_key = front.cancels.issue(
        session_id=core.id,
        user=core.user.name,
        target=target.name,
        host=target.host,
        port=target.port,
        upstream_key=result.backend_key,
    )
    client_key = await claim_fleet_key(front, client_key)
    greeting = bytearray()
    for name, value in result.parameters.items():
        greeting += encode(ParameterStatus(name, value))
    greeting += encode(client_key)
    for notice in result.notices:
        greeting += encode(notice)
    greeting += encode(ReadyForQuery(result.status))
    return LoggedIn(
        core=core,
        credset=credset,
        upstream=upstream,
        greeting=bytes(greeting),
        client_key=client_key,
        t0=t0,
    )
