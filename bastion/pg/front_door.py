"""The client side of a connection until it is authenticated: sans-IO.

Bytes in, actions out. ``FrontDoor`` answers encryption requests (TLS yes when
configured, GSSAPI encryption always no), hands a CancelRequest to the caller,
checks the StartupMessage (who, which target and credential set, which startup
options may pass), refuses plaintext when TLS is required, and asks for the
database token as a cleartext password (only ever over TLS unless the admin
turned TLS off). It never touches a socket, so it is fuzzed with the parsers.

The asyncio adapter (``bastion.pg.listener``) performs the actions in order:
``Send`` bytes, ``StartTls`` (then calls ``tls_started``), ``Cancel``,
``Authenticate`` (check the token, log in upstream), ``Reject`` (send the bytes,
audit, close).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bastion.pg.encoding import encode
from bastion.pg.errors import FEATURE_NOT_SUPPORTED, ProtocolViolation
from bastion.pg.messages import (
    AuthenticationCleartextPassword,
    CancelRequest,
    GSSENCRequest,
    GSSENCResponse,
    NegotiateProtocolVersion,
    PasswordMessage,
    SSLRequest,
    SSLResponse,
    StartupMessage,
    Terminate,
)
from bastion.pg.protocol import (
    CLOSED,
    DEFAULT_FRONTEND_MAX,
    FrontendParser,
    Sentinel,
    error_response,
)

__all__ = [
    "INVALID_AUTHORIZATION",
    "INVALID_PASSWORD",
    "PASSTHROUGH_PARAMETERS",
    "SAFE_OPTIONS",
    "Action",
    "Authenticate",
    "Cancel",
    "Closed",
    "FrontDoor",
    "Reject",
    "Send",
    "StartTls",
    "parse_database",
    "safe_options",
]

INVALID_AUTHORIZATION = "28000"
"""SQLSTATE invalid_authorization_specification (no grant, plaintext refused)."""
INVALID_PASSWORD = "28P01"  # noqa: S105  an SQLSTATE code
"""SQLSTATE invalid_password (wrong, expired or revoked token)."""
_INVALID_CATALOG = "3D000"  # invalid_catalog_name: no such target
_CONNECTION_EXCEPTION = "08000"

PASSTHROUGH_PARAMETERS = frozenset(
    {"application_name", "client_encoding", "DateStyle", "TimeZone", "extra_float_digits",
     "IntervalStyle", "search_path", "datestyle", "timezone", "intervalstyle"}
)  # fmt: skip
"""Startup parameters forwarded upstream as the client sent them."""

SAFE_OPTIONS = frozenset(
    {"search_path", "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
     "application_name", "client_encoding", "datestyle", "intervalstyle", "timezone",
     "extra_float_digits", "work_mem", "maintenance_work_mem", "jit", "geqo",
     "default_transaction_isolation", "random_page_cost", "enable_seqscan", "enable_indexscan",
     "enable_hashjoin", "enable_mergejoin", "enable_nestloop", "enable_bitmapscan",
     "max_parallel_workers_per_gather", "plan_cache_mode", "bytea_output",
     "standard_conforming_strings"}
)  # fmt: skip
"""Settings a client may pass in ``options`` (``-c name=value``): query tuning only.

Anything that changes identity or auditing (``role``, ``session_authorization``,
``log_*``, ``default_transaction_read_only``...) is refused, even though the
upstream role's own privileges would still apply.
"""

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}\Z")
_OPTION = re.compile(r"(?:-c|--)([A-Za-z_.-]+)=(.*)\Z", re.S)
_PG_SPACE = frozenset(" \t\n\r\f\v")  # C isspace() in the "C" locale


@dataclass(frozen=True)
class Send:
    """Write these bytes to the client."""

    data: bytes


@dataclass(frozen=True)
class StartTls:
    """Upgrade the client connection to TLS now, then call ``FrontDoor.tls_started``."""


@dataclass(frozen=True)
class Cancel:
    """The connection is a CancelRequest for the backend the client knows by this key."""

    pid: int
    secret: bytes


@dataclass(frozen=True)
class Authenticate:
    """The client has said who it is and sent its token: check it and log in upstream."""

    user: str
    target: str
    credset: str | None
    token: str
    parameters: Mapping[str, str]
    """Startup parameters to forward upstream (already filtered)."""


@dataclass(frozen=True)
class Reject:
    """Refuse the connection: send ``data`` (an ErrorResponse), audit ``reason``, close."""

    data: bytes
    reason: str
    message: str
    user: str | None = None
    database: str | None = None


@dataclass(frozen=True)
class Closed:
    """The client went away (or sent Terminate) before it was authenticated."""


Action = Send | StartTls | Cancel | Authenticate | Reject | Closed


def parse_database(database: str) -> tuple[str, str | None]:
    """``TARGET`` or ``TARGET/CREDSET`` -> (target, credset or None).

    Raises ValueError with a message for the client when the form is wrong.
    """
    target, sep, credset = database.partition("/")
    if not _NAME.match(target) or (sep and not _NAME.match(credset)):
        raise ValueError(
            f"database '{database}' is not TARGET or TARGET/CREDSET "
            "(names: letters, digits, '_', '.', '-')"
        )
    return target, (credset or None)


def split_options(options: str) -> list[str]:
    """Split a startup ``options`` string exactly as PostgreSQL does (``pg_split_opts``).

    Words are separated by any whitespace; a backslash makes the next character
    literal (a space, a tab or another backslash) and is dropped.
    """
    words: list[str] = []
    i, n = 0, len(options)
    while i < n:
        while i < n and options[i] in _PG_SPACE:
            i += 1
        if i >= n:
            break
        word: list[str] = []
        while i < n and options[i] not in _PG_SPACE:
            if options[i] == "\\" and i + 1 < n:
                i += 1
            word.append(options[i])
            i += 1
        words.append("".join(word))
    return words


def _escape_option(value: str) -> str:
    return "".join("\\" + c if c in _PG_SPACE or c == "\\" else c for c in value)


def safe_options(options: str) -> str:
    """Validate a startup ``options`` string; returns it rebuilt from what was checked.

    The words are split with PostgreSQL's own rules and the result is re-escaped, so
    what the target parses is exactly what was validated. Raises ValueError naming
    the first setting that may not be set this way.
    """
    words = split_options(options)
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            word = "-c" + words[i + 1]
            i += 1
        m = _OPTION.match(word)
        if m is None:
            raise ValueError(f"startup option '{word}' is not of the form -c name=value")
        name = m.group(1).lower().replace("-", "_")
        if name not in SAFE_OPTIONS:
            raise ValueError(
                f"setting '{name}' may not be changed through the bastion's startup options"
            )
        out.append(f"-c {name}={_escape_option(m.group(2))}")
        i += 1
    return " ".join(out)


class FrontDoor:
    """Handshake state for one client connection (see the module docstring)."""

    def __init__(
        self,
        *,
        tls_available: bool,
        require_tls: bool,
        max_message_length: int = DEFAULT_FRONTEND_MAX,
    ) -> None:
        if require_tls and not tls_available:
            raise ValueError("TLS is required but no certificate is configured")
        self.parser = FrontendParser(max_message_length)
        self.tls_available = tls_available
        self.require_tls = require_tls
        self.tls = False
        self.startup: StartupMessage | None = None
        self._user: str | None = None
        self._database: str | None = None
        self._target: tuple[str, str | None] | None = None
        self._parameters: dict[str, str] = {}
        self.done = False
        self.refusal: bytes | None = None
        """Set by ``refuse``: the FATAL that answers the startup message instead of a login."""

    def refuse(self, data: bytes) -> None:
        """Answer this connection's startup message with ``data`` (a FATAL) and close.

        The refusal waits for the startup message, after TLS if the client asks for
        it, because that is the only place libpq shows a server's error: an error in
        place of the answer to SSLRequest reads "server sent an error response during
        SSL exchange". It is not audited (it answers floods at capacity).
        """
        self.refusal = data

    def tls_started(self) -> None:
        """The adapter finished the TLS handshake; what follows is encrypted."""
        self.tls = True

    def receive_data(self, data: bytes) -> list[Action]:
        """Feed client bytes; returns what to do, in order (empty: read more)."""
        if self.done:
            return []
        actions: list[Action] = []
        try:
            self.parser.receive_data(data)
            while not self.done:
                msg = self.parser.next_event()
                if isinstance(msg, Sentinel):
                    if msg is CLOSED:
                        self.done = True
                        actions.append(Closed())
                    break
                actions += self._handle(msg)
                if actions and isinstance(actions[-1], StartTls):
                    break  # the rest arrives encrypted
        except ProtocolViolation as e:
            self.done = True
            actions.append(Reject(error_response(e.sqlstate, e.message), "protocol", e.message))
        return actions

    def _reject(self, sqlstate: str, reason: str, message: str) -> list[Action]:
        self.done = True
        return [
            Reject(
                error_response(sqlstate, f"bastion: {message}"),
                reason,
                message,
                self._user,
                self._database,
            )
        ]

    def _handle(self, msg: object) -> list[Action]:
        if isinstance(msg, SSLRequest):
            answer = self.tls_available
            self.parser.backend_sent(SSLResponse(answer))
            return [Send(b"S"), StartTls()] if answer else [Send(b"N")]
        if isinstance(msg, GSSENCRequest):
            self.parser.backend_sent(GSSENCResponse(False))
            return [Send(b"N")]
        if isinstance(msg, CancelRequest):
            self.done = True
            return [Cancel(msg.pid, msg.secret)]
        if isinstance(msg, StartupMessage):
            if self.refusal is not None:
                self.done = True
                return [Send(self.refusal), Closed()]
            return self._startup(msg)
        if isinstance(msg, PasswordMessage):
            return self._password(msg)
        if isinstance(msg, Terminate):
            self.done = True
            return [Closed()]
        return self._reject(
            INVALID_AUTHORIZATION, "protocol", f"unexpected {type(msg).__name__} before login"
        )

    def _startup(self, msg: StartupMessage) -> list[Action]:
        self.startup = msg
        params = msg.params
        self._user = params.get("user")
        self._database = params.get("database") or self._user
        if self.require_tls and not self.tls:
            return self._reject(
                INVALID_AUTHORIZATION,
                "plaintext",
                "this bastion requires TLS; connect with sslmode=require",
            )
        if params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            return self._reject(
                FEATURE_NOT_SUPPORTED, "replication", "replication connections are not supported"
            )
        if not self._user:
            return self._reject(INVALID_AUTHORIZATION, "no-user", "no user name given")
        assert self._database is not None  # noqa: S101  the parser's order
        try:
            self._target = parse_database(self._database)
        except ValueError as e:
            return self._reject(_INVALID_CATALOG, "bad-database", str(e))
        forwarded = {k: v for k, v in params.items() if k in PASSTHROUGH_PARAMETERS}
        if params.get("options"):
            try:
                forwarded["options"] = safe_options(params["options"])
            except ValueError as e:
                return self._reject(INVALID_AUTHORIZATION, "unsafe-options", str(e))
        self._parameters = forwarded
        out: list[Action] = []
        unknown = [k for k in params if k.startswith("_pq_.")]
        if msg.minor > 0 or unknown:
            # We speak 3.0 and no protocol extensions (as PostgreSQL 15 itself).
            out.append(Send(encode(NegotiateProtocolVersion(3 << 16, unknown))))
        request = AuthenticationCleartextPassword()
        self.parser.backend_sent(request)
        out.append(Send(encode(request)))
        return out

    def _password(self, msg: PasswordMessage) -> list[Action]:
        assert self._user is not None and self._target is not None  # noqa: S101  the parser's order
        self.done = True
        if not msg.password:
            return self._reject(
                INVALID_PASSWORD,
                "no-token",
                "no password given: use a database token from "
                f"'ssh BASTION db-token {self._target[0]}'",
            )
        return [
            Authenticate(
                user=self._user,
                target=self._target[0],
                credset=self._target[1],
                token=msg.password,
                parameters=dict(self._parameters),
            )
        ]


def connection_error(message: str, sqlstate: str = _CONNECTION_EXCEPTION) -> bytes:
    """A FATAL ErrorResponse naming the cause, for failures after the handshake."""
    return error_response(sqlstate, f"bastion: {message}")
