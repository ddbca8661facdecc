"""What the bastion tells the outside world: one typed event, rendered per sink.

A ``Notification`` is built by the feature that has something to say (an access
request decided, an alert raised, an engagement ended) and handed to the
``Notifier``. It is plain data: the sinks (webhook, syslog) only render it. The
JSON body is a small contract of its own, versioned by ``BODY_VERSION``: receivers
and SIEM rules read ``event``, ``id`` and the request fields at the top level.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

BODY_VERSION = 1
"""Bumped when a field of the JSON body changes meaning or moves."""

REQUEST_FIELDS = ("request_id", "requester", "targets", "reason", "decision", "decided_by")
"""Keys of ``details`` that the JSON body carries at its top level when present: what
issue 13 says a receiver must be able to read without digging (the request, who asked,
for what, why, and what was decided by whom)."""

# Event names the features emit (the sinks accept any name; globs in ``events`` match them).
REQUEST_CREATED = "request.created"
REQUEST_APPROVED = "request.approved"
REQUEST_DENIED = "request.denied"
REQUEST_LAPSED = "request.lapsed"
REQUEST_BREAK_GLASS = "request.break-glass"
REQUEST_EXTENDED = "request.extended"
REQUEST_DROPPED = "request.dropped"
ENGAGEMENT_REMINDER = "engagement.reminder"
ENGAGEMENT_ENDED = "engagement.ended"
ALERT_PREFIX = "alert."
"""Alerts are ``alert.<detector>`` (``alert.mfa-failures``, ``alert.new-source``, ...)."""


def _json_copy(details: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy through JSON, so a detail that cannot be sent fails at the caller."""
    try:
        copied = json.loads(json.dumps(dict(details), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"notification details must be JSON values: {e}") from e
    if not isinstance(copied, dict):  # pragma: no cover - dict() above guarantees it
        raise ValueError("notification details must be a mapping")
    return copied


def iso_time(at: float) -> str:
    """``2025-01-02T03:04:05.678Z``: RFC 3339 in UTC, milliseconds (what RFC 5424 wants)."""
    stamp = datetime.fromtimestamp(at, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Notification:
    """One event for the notification sinks.

    ``details`` must hold JSON values only (checked here, so the caller learns of a
    mistake, not a background worker); it is copied, so later changes by the caller do
    not leak into a queued notification. ``id`` is the same across retries, so a
    receiver can drop a duplicate when only the acknowledgement was lost.
    """

    event: str
    at: float
    """Seconds since the epoch (the node's clock)."""
    actor: str
    """Who caused it: a user name, ``node``, ``policy``, an approver."""
    subject: str | None = None
    """What it is about, in words: ``request #12``, a user or session id."""
    details: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if not self.event or any(c.isspace() for c in self.event):
            raise ValueError(f"notification event must be a name without spaces: {self.event!r}")
        object.__setattr__(self, "details", _json_copy(self.details))

    @classmethod
    def for_request(
        cls,
        event: str,
        at: float,
        actor: str,
        *,
        request_id: int | str,
        requester: str,
        targets: list[str] | tuple[str, ...],
        reason: str,
        decision: str | None = None,
        decided_by: str | None = None,
        **details: Any,
    ) -> Notification:
        """A request event with the fields issue 13 names (``decision`` once there is one)."""
        fields: dict[str, Any] = {
            "request_id": request_id,
            "requester": requester,
            "targets": list(targets),
            "reason": reason,
        }
        if decision is not None:
            fields["decision"] = decision
        if decided_by is not None:
            fields["decided_by"] = decided_by
        return cls(event, at, actor, f"request #{request_id}", {**details, **fields})

    def body(self, node: str) -> dict[str, Any]:
        """The JSON body: fixed keys, the request fields at top level, the rest in details."""
        rest = dict(self.details)
        out: dict[str, Any] = {
            "version": BODY_VERSION,
            "id": self.id,
            "event": self.event,
            "at": iso_time(self.at),
            "node": node,
            "actor": self.actor,
            "subject": self.subject,
        }
        for key in REQUEST_FIELDS:
            if key in rest:
                out[key] = rest.pop(key)
        out["details"] = rest
        return out

    def summary(self) -> str:
        """One line for people, e.g. ``request.approved request #12 by bob for alice on web1:
        approved - "fix nginx"`` (the Slack text)."""
        d = self.details
        text = f"{self.event}"
        if self.subject:
            text += f" {self.subject}"
        text += f" by {self.actor}"
        if "requester" in d and d["requester"] != self.actor:
            text += f" for {d['requester']}"
        targets = d.get("targets")
        if isinstance(targets, list) and targets:
            text += " on " + ", ".join(map(str, targets))
        if "decision" in d:
            text += f": {d['decision']}"
        if d.get("reason"):
            text += f' - "{d["reason"]}"'
        return text
