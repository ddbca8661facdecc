"""The changes a plan is made of, and the store snapshot it is made from.

Plain frozen records: ``plan`` and ``grant_plan`` build them, ``execute`` puts
them into effect, ``Plan.render`` shows them as a diff.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bastion.provision.spec import Desired, ProfileSpec, SpecError, TargetSpec, UserSpec
from bastion.store.models import Grant, Profile, Role, Target, User

APPLY_REQUESTER = "apply"
"""``requested_by`` of the standing grants ``apply`` creates and manages."""


@dataclass(frozen=True)
class Current:
    """The part of the store ``apply`` manages, read once before planning."""

    users: Mapping[str, User] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    targets: Mapping[str, Target] = field(default_factory=dict)
    """Live targets by name."""
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    """Live access profiles by name."""
    grants: tuple[Grant, ...] = ()
    """Standing grants (``requested_by = "apply"``), in every state."""
    other_grants: int = 0
    """Active grants made by hand or by requests: never touched, counted in the summary."""


@dataclass(frozen=True)
class Change:
    """One step of the plan; ``line`` is its diff line (``+ user alice: ...``)."""

    sign: str
    kind: str
    subject: str
    details: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        """The diff line a person reads."""
        text = f"{self.sign} {self.kind} {self.subject}"
        return f"{text}: {', '.join(self.details)}" if self.details else text


@dataclass(frozen=True)
class AddUser(Change):
    """Create a user (without TOTP: enrolment stays per user)."""

    spec: UserSpec | None = None


@dataclass(frozen=True)
class UpdateUser(Change):
    """Change a user's role, keys, groups, engagement or enabled state (None: keep)."""

    spec: UserSpec | None = None
    role: Role | None = None
    keys: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    engagement: bool = False
    enable: bool = False


@dataclass(frozen=True)
class DisableUser(Change):
    """Disable a user, end their live sessions and revoke their tokens (never delete)."""

    why: str = ""


@dataclass(frozen=True)
class AddTarget(Change):
    """Register a target."""

    spec: TargetSpec | None = None


@dataclass(frozen=True)
class UpdateTarget(Change):
    """Change a live target in place (its id, grants and sessions stay)."""

    spec: TargetSpec | None = None
    fields: bool = False
    """Address, logins, keys, database or credential sets changed."""
    set_labels: tuple[tuple[str, str], ...] = ()
    remove_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class AddProfile(Change):
    """Create an access profile."""

    spec: ProfileSpec | None = None


@dataclass(frozen=True)
class UpdateProfile(Change):
    """Change an access profile's selector or limits (its grants follow at once)."""

    spec: ProfileSpec | None = None


@dataclass(frozen=True)
class RemoveProfile(Change):
    """Retire a profile: its grants reach nothing from now on (the row stays)."""


@dataclass(frozen=True)
class RemoveTarget(Change):
    """Retire a target (its grants and tokens are revoked; the row stays for history)."""


@dataclass(frozen=True)
class AddGrant(Change):
    """Create a standing grant for a target or a profile (defaults resolved)."""

    user: str = ""
    target: str | None = None
    profile: str | None = None
    login: str | None = None
    credset: str | None = None
    options: frozenset[str] = frozenset()
    not_before: float = 0.0
    not_after: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RevokeGrant(Change):
    """End a standing grant the file no longer names (or one being replaced)."""

    grant_id: int = 0


@dataclass(frozen=True)
class Plan:
    """The changes in order, and what the file leaves alone."""

    changes: tuple[Change, ...]
    left_alone: tuple[str, ...] = ()
    """Things in the store the file does not name, kept because there was no --prune."""
    notes: tuple[str, ...] = ()
    """Facts worth knowing that change nothing (an expired grant not renewed)."""

    def render(self) -> str:
        """The plan as a person reads it: diff lines, notes, one summary line."""
        lines = [c.line for c in self.changes]
        lines += [f"  note: {n}" for n in self.notes]
        if self.changes:
            counts = {s: sum(1 for c in self.changes if c.sign == s) for s in "+~-"}
            lines.append(
                f"{len(self.changes)} change(s): {counts['+']} to add, {counts['~']} to change, "
                f"{counts['-']} to remove or disable"
            )
        else:
            lines.append("no changes")
        if self.left_alone:
            lines.append(
                "left alone (not in the file; --prune disables or removes them): "
                + "; ".join(self.left_alone)
            )
        return "\n".join(lines) + "\n"


def key_body(line: str) -> str:
    """An OpenSSH public key without its comment: two lines with one body are one key."""
    return " ".join(line.split()[:2])


class Checker:
    """Raises SpecError in the file's words for a plan that breaks a rule."""

    def __init__(self, desired: Desired) -> None:
        self.path = desired.path

    def fail(self, where: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: {where}: {problem}")
