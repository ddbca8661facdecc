"""Logging in to the target database with a credential set: sans-IO.

The bastion is the PostgreSQL client here. ``UpstreamLogin`` produces the
bytes to send (an SSLRequest first when TLS is wanted, the StartupMessage, the
password answers) and consumes the server's replies until ReadyForQuery. It
speaks SCRAM-SHA-256 through ``scramp`` (the library psycopg's pure-Python
sibling pg8000 uses), md5, cleartext (only over TLS unless the target is set to
``tls = "disable"``) and trust. The contractor never sees any of it: the
password lives in this object for the duration of the login.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import scramp

from bastion.pg.encoding import encode
from bastion.pg.errors import ProtocolViolation
from bastion.pg.messages import (
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    ErrorResponse,
    NegotiateProtocolVersion,
    NoticeResponse,
    ParameterStatus,
    PasswordMessage,
    ReadyForQuery,
    SASLInitialResponse,
    SASLResponse,
    SSLRequest,
    SSLResponse,
    StartupMessage,
    TransactionStatus,
)
from bastion.pg.protocol import CLOSED, BackendParser, Sentinel

__all__ = ["LoginFailed", "LoginResult", "TLS_MODES", "UpstreamLogin"]

TLS_MODES = ("disable", "prefer", "require", "verify-full")
"""How the bastion uses TLS towards a target (libpq's sslmode names)."""


class LoginFailed(Exception):
    """The target refused the login or spoke nonsense; ``message`` is safe to show."""

    def __init__(self, message: str, sqlstate: str = "08004") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


@dataclass
class LoginResult:
    """What the target told us during the login, replayed to the client."""

    parameters: dict[str, str] = field(default_factory=dict)
    backend_key: BackendKeyData | None = None
    status: TransactionStatus = TransactionStatus.IDLE
    notices: list[NoticeResponse] = field(default_factory=list)


class UpstreamLogin:
    """One login conversation. Call ``start``, then ``receive_data`` with every reply.

    ``receive_data`` returns bytes to send (possibly empty). ``want_tls`` is
    True after ``start`` when the adapter must wait for the one-byte answer,
    then upgrade and call ``tls_started``. ``result`` is set once the server is
    ready for queries. Raises LoginFailed.
    """

    def __init__(
        self,
        *,
        user: str,
        password: str | None,
        database: str,
        parameters: Mapping[str, str],
        tls_mode: str = "prefer",
    ) -> None:
        if tls_mode not in TLS_MODES:
            raise ValueError(f"tls mode {tls_mode!r} is not one of {', '.join(TLS_MODES)}")
        self.user = user
        self._password = password
        self.database = database
        self.parameters = dict(parameters)
        self.tls_mode = tls_mode
        self.parser = BackendParser()
        self.tls = False
        self.negotiating = False
        self.result: LoginResult | None = None
        self._pending = LoginResult()
        self._scram: scramp.ScramClient | None = None

    def start(self) -> bytes:
        """The first bytes to send."""
        if self.tls_mode != "disable":
            self.negotiating = True
            self.parser.frontend_sent(SSLRequest())
            return encode(SSLRequest())
        return self._startup()

    def _startup(self) -> bytes:
        params = {**self.parameters, "user": self.user, "database": self.database}
        return encode(StartupMessage(params))

    def tls_started(self) -> bytes:
        """The TLS handshake is done: the startup packet to send over it."""
        self.tls = True
        return self._startup()

    def receive_data(self, data: bytes) -> tuple[bytes, bool]:
        """Feed server bytes; returns (bytes to send, start TLS now?)."""
        out = bytearray()
        try:
            self.parser.receive_data(data)
            while self.result is None:
                msg = self.parser.next_event()
                if isinstance(msg, Sentinel):
                    if msg is CLOSED:
                        raise LoginFailed("the target closed the connection during login")
                    break
                if isinstance(msg, SSLResponse):
                    self.negotiating = False
                    if msg.accepted:
                        return bytes(out), True
                    if self.tls_mode in ("require", "verify-full"):
                        raise LoginFailed(
                            f"the target does not offer TLS but the target is set to "
                            f"tls = {self.tls_mode}"
                        )
                    out += self._startup()
                    continue
                out += self._handle(msg)
        except ProtocolViolation as e:
            raise LoginFailed(f"the target sent an invalid message: {e.message}") from e
        return bytes(out), False

    def _handle(self, msg: object) -> bytes:  # noqa: C901  one branch per message type
        if isinstance(msg, ErrorResponse):
            text = msg.fields.get("M", "login refused")
            raise LoginFailed(f"the target refused the login: {text}", msg.fields.get("C", "08004"))
        if isinstance(msg, AuthenticationOk):
            self._password = None
            return b""
        if isinstance(msg, AuthenticationSASL):
            return self._sasl_start(msg)
        if isinstance(msg, AuthenticationSASLContinue):
            return self._sasl_continue(msg)
        if isinstance(msg, AuthenticationSASLFinal):
            return self._sasl_final(msg)
        if isinstance(msg, AuthenticationMD5Password):
            secret = self._need_password("md5")
            inner = hashlib.md5((secret + self.user).encode()).hexdigest()  # noqa: S324
            outer = hashlib.md5(inner.encode() + msg.salt).hexdigest()  # noqa: S324
            return encode(PasswordMessage("md5" + outer))
        if isinstance(msg, AuthenticationCleartextPassword):
            if not self.tls and self.tls_mode != "disable":
                raise LoginFailed(
                    "the target asks for a cleartext password without TLS; refusing to send it"
                )
            return encode(PasswordMessage(self._need_password("password")))
        if isinstance(msg, ParameterStatus):
            self._pending.parameters[msg.name] = msg.value
        elif isinstance(msg, BackendKeyData):
            self._pending.backend_key = msg
        elif isinstance(msg, NoticeResponse):
            self._pending.notices.append(msg)
        elif isinstance(msg, ReadyForQuery):
            self._pending.status = msg.status
            self.result = self._pending
        elif isinstance(msg, NegotiateProtocolVersion):
            pass  # we asked for 3.0 and no extensions; nothing to adapt
        else:
            raise LoginFailed(
                f"the target asked for an unsupported authentication ({type(msg).__name__})"
            )
        return b""

    def _need_password(self, method: str) -> str:
        if self._password is None:
            raise LoginFailed(
                f"the target wants {method} authentication but the credential set has no "
                "password; add one with --credset NAME:USER:file:PATH"
            )
        return self._password

    def _sasl_start(self, msg: AuthenticationSASL) -> bytes:
        if "SCRAM-SHA-256" not in msg.mechanisms:
            raise LoginFailed(
                f"the target offers only SASL {', '.join(msg.mechanisms)}; "
                "the bastion speaks SCRAM-SHA-256"
            )
        self._scram = scramp.ScramClient(
            ["SCRAM-SHA-256"], self.user, self._need_password("SCRAM-SHA-256")
        )
        first = self._scram.get_client_first()
        return encode(SASLInitialResponse("SCRAM-SHA-256", first.encode()))

    def _sasl_continue(self, msg: AuthenticationSASLContinue) -> bytes:
        if self._scram is None:
            raise LoginFailed("the target sent a SASL continuation without a SASL start")
        try:
            self._scram.set_server_first(msg.data.decode())
            final = self._scram.get_client_final()
        except (scramp.ScramException, UnicodeDecodeError) as e:
            raise LoginFailed(f"SCRAM exchange with the target failed: {e}") from e
        return encode(SASLResponse(final.encode()))

    def _sasl_final(self, msg: AuthenticationSASLFinal) -> bytes:
        if self._scram is None:
            raise LoginFailed("the target sent a SASL final message without a SASL start")
        try:
            self._scram.set_server_final(msg.data.decode())
        except (scramp.ScramException, UnicodeDecodeError) as e:
            raise LoginFailed(
                f"the target could not prove it knows the password (SCRAM): {e}"
            ) from e
        return b""
