"""Why sessions end and why they are refused: named constants with words for people.

Every way a session ends is one ``EndReason``: it is stored on the session row,
written in the audit trail and, through ``EndReason.words``, shown to the
contractor. Refusals before a session starts are ``RefusalReason``. The string
values are a contract (rows, audit, exports): never change one, add a new one.
"""

from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    """How a session ended (the session row's ``end_reason``)."""

    CLIENT_CLOSED = "client-closed"
    EXIT = "exit"
    EXIT_SIGNAL = "exit-signal"
    UPSTREAM_LOST = "upstream-lost"
    UPSTREAM_CLOSED = "upstream-closed"
    UPSTREAM_REFUSED = "upstream-refused"
    UPSTREAM_PROTOCOL_ERROR = "upstream-protocol-error"
    CLIENT_PROTOCOL_ERROR = "client-protocol-error"
    ADMIN_TERMINATED = "admin-terminated"
    USER_LOCKED = "user-locked"
    ENGAGEMENT_ENDED = "engagement-ended"
    GRANT_REVOKED = "grant-revoked"
    GRANT_REMOVED = "grant-removed"
    GRANT_ENDED = "grant-ended"
    LABEL_REMOVED = "label-removed"
    """The grant's access profile no longer reaches the target (labels or profile changed)."""
    IDLE_TIMEOUT = "idle-timeout"
    POLICY = "policy"
    NODE_STOP = "node-stop"
    NODE_CRASH = "node-crash"
    RECORDING_FAILED = "recording-failed"
    HOOK_FAILED = "hook-failed"
    STATE_UNAVAILABLE = "state-unavailable"
    """The state database was unreachable for longer than ``[state] outage_grace``."""

    RESOURCE_LIMIT = "resource-limit"
    """A per-session cap was reached (the message names the limit and its setting)."""

    @property
    def words(self) -> str:
        """What the contractor is told when a session ends this way."""
        return _WORDS.get(self, self.value)


_WORDS: dict[EndReason, str] = {
    EndReason.ADMIN_TERMINATED: "an administrator ended this session",
    EndReason.USER_LOCKED: "your account was locked",
    EndReason.ENGAGEMENT_ENDED: "your engagement has ended",
    EndReason.GRANT_REVOKED: "your grant was revoked",
    EndReason.GRANT_REMOVED: "your grant no longer exists",
    EndReason.GRANT_ENDED: "your grant has ended",
    EndReason.LABEL_REMOVED: (
        "this target is no longer covered by your access profile (its labels or the profile "
        "changed)"
    ),
    EndReason.IDLE_TIMEOUT: "the session was idle too long",
    EndReason.POLICY: "a bastion policy ended this session",
    EndReason.NODE_STOP: "this node is stopping for maintenance; reconnect to continue",
    EndReason.RECORDING_FAILED: (
        "the recording of this session could not be written, and sessions never run unrecorded"
    ),
    EndReason.HOOK_FAILED: "a bastion check failed, and sessions never run unchecked",
    EndReason.STATE_UNAVAILABLE: (
        "the bastion lost its state database, so revocations can no longer be checked; "
        "this session was recorded and is closed; reconnect when the bastion is back"
    ),
    EndReason.RESOURCE_LIMIT: "this session reached a bastion resource limit",
    EndReason.UPSTREAM_LOST: "the connection to the target was lost",
    EndReason.UPSTREAM_CLOSED: "the target closed the connection",
    EndReason.UPSTREAM_PROTOCOL_ERROR: "the target sent data the bastion cannot relay",
    EndReason.CLIENT_PROTOCOL_ERROR: "the client sent data the bastion cannot relay",
}


def exit_signal_reason(signal: str) -> str:
    """The end reason of a target process killed by ``signal`` (``exit-signal KILL``)."""
    return f"{EndReason.EXIT_SIGNAL.value} {signal}"


class RefusalReason(StrEnum):
    """Why a session was refused before it reached the target (audit ``session.refused``)."""

    NO_GRANT = "no-grant"
    NO_TARGET = "no-target"
    WRONG_KIND = "wrong-kind"
    NO_LOGIN = "no-login"
    NO_CREDSET = "no-credset"
    OPTION_NOT_GRANTED = "option-not-granted"
    UNAUDITABLE_TRANSFER = "unauditable-transfer"
    SUBSYSTEM = "subsystem"
    USAGE = "usage"
    USER_DISABLED = "user-disabled"
    USER_LOCKED = "user-locked"
    ENGAGEMENT_ENDED = "engagement-ended"
    RECORDING_UNAVAILABLE = "recording-unavailable"
    UPSTREAM_REFUSED = "upstream-refused"
    UPSTREAM_CHANNEL_REFUSED = "upstream-channel-refused"
    HOOK_REFUSED = "hook-refused"
    HOOK_FAILED = "hook-failed"
    NODE_STOPPING = "node-stopping"
    STATE_UNAVAILABLE = "state-unavailable"
    INTERNAL_ERROR = "internal-error"


STATE_UNAVAILABLE_LOGIN = (
    "the bastion cannot reach its state database, so it cannot check your access; "
    "new logins are refused until it is back: try again in a few minutes, "
    "or tell the bastion's administrators if it lasts"
)
"""What a contractor refused during a state database outage is told (SSH and PostgreSQL)."""
