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
from typing import TYPE_CHECKING

from bastion.db_tokens import TokenRefused, check_db_token
from bastion.errors import AccessDenied
from bastion.grants import authorize_database, format_time, is_usable
from bastion.ids import new_session_id
from bastion.pg.encoding import encode
from bastion.pg.front_door import INVALID_AUTHORIZATION, INVALID_PASSWORD, Authenticate
from bastion.pg.messages import BackendKeyData, ParameterStatus, ReadyForQuery
from bastion.pg.upstream import UpstreamConnection, connect_upstream
from bastion.pg.upstream_login import LoginFailed, UpstreamLogin
from bastion.recording import LiveRecording
from bastion.session_end import RecordingUnavailable, begin_session, open_session_recording
from bastion.store.models import Credset, Grant, Target, TargetKind, User

if TYPE_CHECKING:
    from bastion.pg.connection import ClientConnection
    from bastion.pg.listener import PgFrontEnd

__all__ = ["LoggedIn", "LoginRefused", "log_in"]

log = logging.getLogger(__name__)

_CANNOT_CONNECT = "08001"  # sqlclient_unable_to_establish_sqlconnection
_INVALID_CATALOG = "3D000"


class LoginRefused(Exception):
    """The connection is refused; ``message`` is shown to the client (already audited)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


@dataclass
class LoggedIn:
    """A database session that passed every check and is logged in upstream."""

    session_id: str
    user: User
    target: Target
    grant: Grant
    credset: Credset
    upstream: UpstreamConnection
    recording: LiveRecording | None
    greeting: bytes
    """ParameterStatus..., our BackendKeyData, ReadyForQuery: what the client gets next."""
    client_key: BackendKeyData
    started_at: float
    t0: float
    """``time.monotonic()`` when the recording started: the zero of query times."""


async def log_in(front: PgFrontEnd, request: Authenticate, conn: ClientConnection) -> LoggedIn:
    """Run every check and the upstream login; raises LoginRefused (audited)."""
    node, store = front.node, front.node.store
    now = node.clock()

    async def refuse(sqlstate: str, reason: str, message: str) -> LoginRefused:
        await front.refused(request.user, request.target, reason, message, conn)
        return LoginRefused(sqlstate, message)

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
        raise await refuse(INVALID_PASSWORD, f"token-{e.reason}", e.message) from e
    user = await node.call(store.get_user, request.user)
    if user is None or user.disabled:
        raise await refuse(INVALID_AUTHORIZATION, "user-disabled", "this user is disabled")
    if user.locked_until is not None and user.locked_until > now:
        raise await refuse(
            INVALID_AUTHORIZATION,
            "user-locked",
            f"this user is locked until {format_time(user.locked_until)}",
        )
    target = await node.call(store.get_target, request.target)
    if target is None or target.kind != TargetKind.POSTGRES:
        raise await refuse(
            _INVALID_CATALOG, "no-target", f"no database target named '{request.target}'"
        )
    grants = await node.call(store.list_grants, user_id=user.id, target_id=target.id)
    try:
        grant = authorize_database(grants, target.name, request.credset or token.credset, now)
    except AccessDenied as e:
        raise await refuse(INVALID_AUTHORIZATION, "no-grant", str(e)) from e
    if token.grant_id is not None and grant.id != token.grant_id:
        own = next((g for g in grants if g.id == token.grant_id), None)
        if own is None or not is_usable(own, now):
            raise await refuse(
                INVALID_PASSWORD,
                "token-grant-ended",
                f"the grant this token came from (#{token.grant_id}) is no longer usable; "
                f"get a new token with 'ssh BASTION db-token {target.name}'",
            )
        grant = own  # a token works under its own grant, not a neighbour's
    credset = next((c for c in target.credsets if c.name == grant.credset), None)
    if credset is None:
        raise await refuse(
            INVALID_AUTHORIZATION,
            "no-credset",
            f"target {target.name} has no credential set '{grant.credset}'",
        )

    session_id = new_session_id()
    recording = await _start_recording(front, conn, session_id, user, target, grant, request, now)
    t0 = time.monotonic()
    await begin_session(
        node,
        session_id,
        user=user,
        target=target,
        grant=grant,
        protocol="postgres",
        login=credset.name,
        client_addr=conn.client_addr,
        started_at=now,
        recording=recording.writer.location if recording else None,
        credset=credset.name,
        application_name=request.parameters.get("application_name"),
    )
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
        await front.refused(user.name, target.name, "upstream-refused", message, conn, session_id)
        if recording is not None:
            recording.marker(f"upstream login failed: {failure.message}")
        await _end_unstarted(front, session_id, user, target, recording)
        raise LoginRefused(_CANNOT_CONNECT, message) from e
    if result.backend_key is None:
        result.backend_key = BackendKeyData(0, b"\0\0\0\0")
    client_key = front.cancels.issue(
        session_id=session_id,
        user=user.name,
        target=target.name,
        host=target.host,
        port=target.port,
        upstream_key=result.backend_key,
    )
    greeting = bytearray()
    for name, value in result.parameters.items():
        greeting += encode(ParameterStatus(name, value))
    greeting += encode(client_key)
    for notice in result.notices:
        greeting += encode(notice)
    greeting += encode(ReadyForQuery(result.status))
    return LoggedIn(
        session_id=session_id,
        user=user,
        target=target,
        grant=grant,
        credset=credset,
        upstream=upstream,
        recording=recording,
        greeting=bytes(greeting),
        client_key=client_key,
        started_at=now,
        t0=t0,
    )


async def _start_recording(
    front: PgFrontEnd,
    conn: ClientConnection,
    session_id: str,
    user: User,
    target: Target,
    grant: Grant,
    request: Authenticate,
    now: float,
) -> LiveRecording | None:
    """The session's recording; without one the session does not start (fail closed)."""
    node = front.node
    meta: dict[str, object] = {
        "user": user.name,
        "target": target.name,
        "login": grant.credset,
        "grant": grant.id,
        "node": node.node,
        "protocol": "postgres",
        "client": conn.client_addr,
        "database": target.database,
        "application_name": request.parameters.get("application_name"),
        "started_at": now,
    }
    try:
        return await open_session_recording(
            node, session_id, meta, conn.recording_failed, user=user.name, target=target.name
        )
    except RecordingUnavailable as e:
        await front.refused(user.name, target.name, "recording-unavailable", str(e), conn)
        # 53100 disk_full: the closest standard class for "cannot record"
        raise LoginRefused("53100", str(e)) from e


async def _end_unstarted(
    front: PgFrontEnd,
    session_id: str,
    user: User,
    target: Target,
    recording: LiveRecording | None,
) -> None:
    """Close the record of a session whose upstream login failed."""
    from bastion.session_end import SessionEnd, finish_session

    end = SessionEnd(session_id, user.name, target.name, "upstream-refused", 0, 0)
    await finish_session(front.node, end, recording)
