"""The control API's data types and their JSON form on the wire.

Frozen dataclasses shared by the node (``server``) and every client (``client``, the
TUI). Bytes travel as base64 strings. ``*_to_wire`` / ``*_from_wire`` are the only
places that know the JSON shapes; a malformed reply raises ``ControlError``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "AlertInfo",
    "ApprovalInfo",
    "ControlError",
    "HistoryEntry",
    "LiveEnd",
    "LiveEvent",
    "LiveInput",
    "LiveMarker",
    "LiveOutput",
    "LiveQuery",
    "LiveResize",
    "Operator",
    "RequestInfo",
    "SearchHit",
    "SessionInfo",
    "Snapshot",
    "b64",
    "event_from_wire",
    "event_to_wire",
    "request_from_wire",
    "request_to_wire",
    "unb64",
]


class ControlError(Exception):
    """A control request failed; the message says why and what to do."""


@dataclass(frozen=True)
class Operator:
    """Who the control connection is authenticated as."""

    name: str
    role: str
    """"admin", "auditor" or "approver"."""


@dataclass(frozen=True)
class SessionInfo:
    """One session, live or ended, as the browser lists it."""

    id: str
    user: str
    target: str
    protocol: str
    """"ssh" or "postgres"."""
    login: str | None
    client_addr: str
    node: str
    started_at: float
    ended_at: float | None
    end_reason: str | None
    bytes_in: int
    bytes_out: int
    events: int
    live: bool
    alerts: int = 0
    """Live sessions: how many ``alert.*``/``policy.*`` rows name it so far (the flag)."""


@dataclass(frozen=True)
class SearchHit:
    """A search index entry matching a search, and where the player should jump."""

    session_id: str
    at: float
    offset: float
    """Seconds since the session start."""
    text: str
    user: str
    target: str
    kind: str = "commands"
    """``commands``, ``output``, ``queries``, ``results`` or ``files``."""


@dataclass(frozen=True)
class Snapshot:
    """The first event of a watch: what to feed a fresh emulator to show the screen now."""

    session_id: str
    cols: int
    rows: int
    offset: float
    """Session time the snapshot is at (later events have later offsets)."""
    screen_bytes: bytes
    queries: list[dict[str, Any]] = field(default_factory=list)
    """PostgreSQL sessions: the last (up to 200) ``pg.query`` payloads."""


@dataclass(frozen=True)
class LiveOutput:
    """Bytes the contractor's terminal received."""

    offset: float
    data: bytes


@dataclass(frozen=True)
class LiveInput:
    """Bytes the contractor sent."""

    offset: float
    data: bytes


@dataclass(frozen=True)
class LiveResize:
    """The contractor's terminal changed size."""

    offset: float
    cols: int
    rows: int


@dataclass(frozen=True)
class LiveMarker:
    """A labelled moment (grant warnings, termination)."""

    offset: float
    label: str


@dataclass(frozen=True)
class LiveQuery:
    """A PostgreSQL statement finished (a ``pg.query`` payload)."""

    offset: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class LiveEnd:
    """The session (or this watch) ended; always the last event."""

    reason: str


@dataclass(frozen=True)
class ApprovalInfo:
    """One approver's yes, and how they narrowed the request (None: as asked)."""

    approver: str
    at: float
    duration: float | None
    targets: tuple[str, ...] | None
    reason: str | None


@dataclass(frozen=True)
class HistoryEntry:
    """One step in a request's life, for the console's history pane."""

    at: float
    who: str
    what: str


@dataclass(frozen=True)
class RequestInfo:
    """An access request as the console lists it: what is asked, why, and what happened."""

    id: int
    kind: str
    """"access", "extend", "break-glass" or "command" (held for approval)."""
    requester: str
    targets: tuple[str, ...]
    login: str | None
    options: tuple[str, ...]
    duration: float
    """Seconds asked for."""
    start_at: float | None
    reason: str
    state: str
    """"pending", "approved", "denied", "lapsed" or "dropped"."""
    created_at: float
    lapses_at: float
    extends_grant: int | None
    decided_at: float | None
    decided_by: str | None
    decision_reason: str | None
    approvals: tuple[ApprovalInfo, ...]
    grants: tuple[int, ...]
    needed: int
    """Approvals still missing (0 unless pending)."""
    approvers: tuple[str, ...]
    """Who could approve it now (pending requests; empty otherwise)."""
    history: tuple[HistoryEntry, ...]
    held: str | None = None
    """A ``command`` request: the command (statement, file path) a hold rule stopped."""
    held_kind: str | None = None
    """"command", "statement" or "file"."""
    session_id: str | None = None
    """A ``command`` request: the session that waits (watch it live)."""
    rule: str | None = None
    """A ``command`` request: the hold rule."""
    profile: str | None = None
    """The access profile asked for instead of targets (``targets`` is then empty)."""
    reaches: tuple[str, ...] = ()
    """For a profile request: the targets the profile reaches now."""


@dataclass(frozen=True)
class AlertInfo:
    """One ``alert.*`` or ``policy.*`` audit row, as the console's alerts view lists it."""

    id: int
    """The audit row id (the ``audit --follow`` cursor)."""
    at: float
    action: str
    user: str
    target: str | None
    what: str
    """One line: the rule and command, or the detector's numbers."""
    session: str | None = None
    offset: float | None = None
    """Seconds since the session started (where its marker is in the recording)."""
    live: bool = False
    marker: str | None = None
    """How the recording's marker for this row begins (``alert NAME``, ``policy VERDICT``)."""


LiveEvent: TypeAlias = (
    Snapshot | LiveOutput | LiveInput | LiveResize | LiveMarker | LiveQuery | LiveEnd
)

_KINDS: dict[str, type[Any]] = {
    "snapshot": Snapshot,
    "output": LiveOutput,
    "input": LiveInput,
    "resize": LiveResize,
    "marker": LiveMarker,
    "query": LiveQuery,
    "end": LiveEnd,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}
_BYTES_FIELDS = ("screen_bytes", "data")


def b64(data: bytes) -> str:
    """Bytes as base64 text for JSON."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: object) -> bytes:
    """Base64 text back to bytes (raises ControlError if it is not base64)."""
    if not isinstance(text, str):
        raise ControlError("expected base64 text in a control message")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ControlError(f"invalid base64 in a control message: {e}") from e


def event_to_wire(event: LiveEvent) -> dict[str, Any]:
    """A live event as a JSON object with a ``type`` field."""
    body = asdict(event)
    for key in _BYTES_FIELDS:
        if key in body:
            body[key] = b64(body[key])
    body["type"] = _NAMES[type(event)]
    return body


def event_from_wire(body: object) -> LiveEvent:
    """Parse a live event; raises ControlError if it is malformed."""
    if not isinstance(body, dict):
        raise ControlError("a watch event must be a JSON object")
    fields = dict(body)
    cls = _KINDS.get(str(fields.pop("type", "")))
    if cls is None:
        raise ControlError(f"unknown watch event type {body.get('type')!r}")
    for key in _BYTES_FIELDS:
        if key in fields:
            fields[key] = unb64(fields[key])
    try:
        event: LiveEvent = cls(**fields)
    except TypeError as e:
        raise ControlError(f"malformed {cls.__name__} event: {e}") from e
    return event


def from_dict(cls: type[Any], body: object) -> Any:
    """Build a dataclass from a reply object (raises ControlError if it does not fit)."""
    if not isinstance(body, dict):
        raise ControlError(f"expected a {cls.__name__} object in the reply")
    try:
        return cls(**body)
    except TypeError as e:
        raise ControlError(f"malformed {cls.__name__} in the reply: {e}") from e


def request_to_wire(info: RequestInfo) -> dict[str, Any]:
    """A request as a JSON object (tuples become lists)."""
    return asdict(info)


def _list(body: dict[str, Any], key: str) -> list[Any] | None:
    value = body.get(key)
    if value is not None and not isinstance(value, list):
        raise ControlError(f"'{key}' of a request must be a list")
    return value


def _names(body: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = _list(body, key)
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value):
        raise ControlError(f"'{key}' of a request must be a list of strings")
    return tuple(value)


def request_from_wire(body: object) -> RequestInfo:
    """Parse a request; raises ControlError if it is malformed."""
    if not isinstance(body, dict):
        raise ControlError("expected a RequestInfo object in the reply")
    fields = dict(body)
    approvals = []
    for raw in _list(fields, "approvals") or ():
        if not isinstance(raw, dict):
            raise ControlError("an approval must be a JSON object")
        approvals.append(from_dict(ApprovalInfo, {**raw, "targets": _names(raw, "targets")}))
    fields["approvals"] = tuple(approvals)
    fields["history"] = tuple(from_dict(HistoryEntry, h) for h in _list(fields, "history") or ())
    for key in ("targets", "options", "approvers", "reaches"):
        fields[key] = _names(fields, key) or ()
    grants = _list(fields, "grants") or []
    if not all(isinstance(g, int) and not isinstance(g, bool) for g in grants):
        raise ControlError("'grants' of a request must be a list of grant ids")
    fields["grants"] = tuple(grants)
    info: RequestInfo = from_dict(RequestInfo, fields)
    return info
