"""State changes that commit together with their audit row.

``Store.audited_change`` opens one write transaction and yields an
``AuditedChange``: the admin actions (``bastion.admin_actions``) change state
through it, and the audit row is appended at the end of the same transaction. A
crash or a refused change leaves neither the change nor the row, on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bastion.errors import NotFound
from bastion.store import provisioning
from bastion.store.backends import Tx
from bastion.store.models import (
    AccessRequest,
    AuditEvent,
    Grant,
    Profile,
    RequestState,
    Role,
    Target,
    User,
)
from bastion.store.profiles import UNSET

if TYPE_CHECKING:
    from bastion.store.db import Store
    from bastion.store.policy import StoredRule


class AuditedChange:
    """The store's write operations an admin action needs, bound to one transaction."""

    def __init__(self, store: Store, tx: Tx) -> None:
        self._store = store
        self._tx = tx
        self.details: dict[str, Any] = {}
        """What the audit row records besides actor, action and subject."""
        self.event: AuditEvent | None = None
        """The audit row, once the transaction has appended it."""
        self.subject: str | None = None
        """Set to replace the row's subject (one known only inside, e.g. a new grant's id)."""

    def user(self, name: str) -> User:
        """The user named ``name``; raises NotFound."""
        found = self._store._user_row(self._tx, "name", name)
        if found is None:
            raise NotFound(f"no user named '{name}'; see 'bastion user list'")
        return found

    def lock_user(self, user_id: int, until: float | None) -> None:
        """Refuse logins until ``until`` (None unlocks); raises NotFound."""
        self._store._lock_user_tx(self._tx, user_id, until)

    def clear_auth_failures(self, user_id: int) -> None:
        """Forget a user's failed logins (so an unlock is not undone by the next failure)."""
        self._store._clear_auth_failures_tx(self._tx, user_id)

    def drain_node(self, name: str, until: float) -> None:
        """Ask running node ``name`` to stop accepting and stop by ``until``; raises NotFound."""
        self._store._drain_node_tx(self._tx, name, until)

    def revoke_user_tokens(self, user_id: int, by: str, at: float) -> int:
        """Revoke the user's live tokens; return how many."""
        return self._store._revoke_user_tokens_tx(self._tx, user_id, by, at)

    def end_engagement(self, user_id: int, now: float) -> bool:
        """Disable a user whose engagement ended; False if another node already did."""
        return self._store._end_engagement_tx(self._tx, user_id, now)

    def drop_user_requests(self, user_id: int, at: float, reason: str) -> list[int]:
        """Drop a user's pending requests; returns their ids."""
        return self._store._drop_user_requests_tx(self._tx, user_id, at, reason)

    def live_sessions(self, user_id: int) -> list[str]:
        """Ids of a user's live sessions (on any node)."""
        return self._store._live_session_ids_tx(self._tx, user_id)

    def set_engagement(self, name: str, **fields: Any) -> User:
        """Change a user's sponsor, end date or organisation (see ``Store.set_engagement``)."""
        return self._store._set_engagement_tx(self._tx, name, **fields)

    def set_target_labels(
        self, name: str, set_: Mapping[str, str], remove: Iterable[str]
    ) -> Target:
        """Set and remove labels of a live target (see ``Store.set_target_labels``)."""
        return self._store._set_target_labels_tx(self._tx, name, set_, remove)

    def profile(self, name: str) -> Profile:
        """The live profile named ``name``; raises NotFound."""
        return self._store._live_profile(self._tx, name)

    def reached(self, profile: Profile) -> list[Target]:
        """Live targets ``profile``'s selector matches now (see ``Store.targets_reached_by``)."""
        return self._store._reached_tx(self._tx, profile)

    def add_profile(self, **fields: Any) -> Profile:
        """Create a profile (see ``Store.add_profile``)."""
        return self._store._add_profile_tx(self._tx, **fields)

    def set_profile(self, name: str, **fields: Any) -> Profile:
        """Change a profile (see ``Store.set_profile``; missing fields stay as they are)."""
        keys = ("selector", "logins", "credset", "options", "max_duration", "approvals")
        full = {k: fields.get(k, UNSET) for k in (*keys, "approvers")}
        return self._store._set_profile_tx(self._tx, name, **full)

    def remove_profile(self, name: str, at: float) -> Profile:
        """Retire a profile (see ``Store.remove_profile``)."""
        return self._store._remove_profile_tx(self._tx, name, at)

    def request_termination(self, session_id: str, by: str, reason: str, at: float) -> None:
        """Ask for a live session's end; raises NotFound, or StoreError if it ended."""
        self._store._request_termination_tx(self._tx, session_id, by, reason, at)

    def request_user_terminations(self, user_id: int, by: str, reason: str, at: float) -> list[str]:
        """Ask for the end of every live session of the user; return their ids."""
        return self._store._request_user_terminations_tx(self._tx, user_id, by, reason, at)

    def revoke_grant(self, grant_id: int, by: str, at: float) -> Grant:
        """End a grant now; raises NotFound, or StoreError if it was already revoked."""
        return self._store._revoke_grant_tx(self._tx, grant_id, by, at)

    # --- access requests (bastion.request_flow) ------------------------------------

    def target(self, name: str) -> Target | None:
        """The live target named ``name``, or None."""
        found = self._store._targets(self._tx, "name = ? AND removed_at IS NULL", [name])
        return found[0] if found else None

    def user_groups(self, user_id: int) -> tuple[str, ...]:
        """The groups a user belongs to."""
        return self._store._user_groups_tx(self._tx, user_id)

    def set_user_groups(self, user_id: int, groups: Iterable[str]) -> None:
        """Replace a user's groups."""
        self._store._set_user_groups_tx(self._tx, user_id, groups)

    def set_target_request_policy(
        self,
        name: str,
        *,
        approvals: int | None,
        approvers: Sequence[str] | None,
        max_request: float | None,
    ) -> Target:
        """Set a live target's request policy (None leaves a part); raises NotFound."""
        self._store._set_target_request_policy_tx(
            self._tx, name, approvals=approvals, approvers=approvers, max_request=max_request
        )
        found = self.target(name)
        if found is None:
            raise NotFound(f"no target named '{name}'; see 'bastion target list'")
        return found

    def request(self, request_id: int) -> AccessRequest:
        """The request (with approvals and grants); raises NotFound."""
        return self._store._request_tx(self._tx, request_id)

    def add_request(self, **fields: object) -> AccessRequest:
        """A new pending request (fields of ``Requests._add_request_tx``)."""
        return self._store._add_request_tx(self._tx, **fields)  # type: ignore[arg-type]

    def add_approval(
        self,
        request_id: int,
        approver: str,
        at: float,
        *,
        duration: float | None,
        targets: Sequence[str] | None,
        options: Iterable[str] | None,
        reason: str | None,
    ) -> None:
        """One approver's yes; raises StoreError if they already approved."""
        self._store._add_approval_tx(
            self._tx,
            request_id,
            approver,
            at,
            duration=duration,
            targets=targets,
            options=options,
            reason=reason,
        )

    def decide_request(
        self, request_id: int, state: RequestState, *, by: str | None, at: float,
        reason: str | None,
    ) -> AccessRequest:  # fmt: skip
        """Move a pending request to ``state``; raises StoreError if it is no longer pending."""
        return self._store._decide_request_tx(
            self._tx, request_id, state, by=by, at=at, reason=reason
        )

    def review_request(self, request_id: int, by: str, at: float, note: str) -> AccessRequest:
        """Close a break-glass request's review."""
        return self._store._review_request_tx(self._tx, request_id, by, at, note)

    def add_grant(self, **fields: object) -> Grant:
        """A grant (fields of ``Store.add_grant``)."""
        return self._store._add_grant_tx(self._tx, **fields)  # type: ignore[arg-type]

    def extend_grant(self, grant_id: int, not_after: float) -> Grant:
        """Move an active grant's end later; raises StoreError otherwise."""
        self._store._extend_grant_tx(self._tx, grant_id, not_after)
        found = self._store._grant(self._tx, grant_id)
        if found is None:
            raise NotFound(f"no grant #{grant_id}")
        return found

    def grant(self, grant_id: int) -> Grant | None:
        """The grant with this id, or None."""
        return self._store._grant(self._tx, grant_id)

    # --- guardrail rules (bastion.policy.manage) -----------------------------------

    def add_policy_rule(self, rule: StoredRule, before: str | None) -> StoredRule:
        """Insert a rule at the end or just before ``before``; raises AlreadyExists, NotFound."""
        return self._store._add_policy_rule_tx(self._tx, rule, before)

    def remove_policy_rule(self, name: str) -> StoredRule:
        """Delete a rule and return it as it was; raises NotFound."""
        return self._store._remove_policy_rule_tx(self._tx, name)

    # --- declarative provisioning (bastion.provision.execute) --------------------------

    def add_user(self, name: str, role: Role, keys: Sequence[str], now: float) -> User:
        """A new user without TOTP (enrolled later, per user); raises AlreadyExists."""
        return self._store._add_user_tx(self._tx, name, role, keys, None, now)

    def set_user_role(self, user_id: int, role: Role) -> None:
        """Change a user's role; raises NotFound."""
        provisioning.set_user_role_tx(self._tx, user_id, role)

    def set_user_keys(self, user_id: int, keys: Sequence[str]) -> None:
        """Replace a user's SSH public keys; raises NotFound."""
        provisioning.set_user_keys_tx(self._tx, user_id, keys)

    def set_user_disabled(self, name: str, disabled: bool) -> User:
        """Disable or re-enable a user; raises NotFound."""
        return self._store._set_user_disabled_tx(self._tx, name, disabled)

    def add_target(self, **fields: Any) -> Target:
        """A new target (fields of ``Store.add_target``); raises AlreadyExists."""
        return self._store._add_target_tx(self._tx, **fields)

    def update_target(self, target: Target, **fields: Any) -> Target:
        """Rewrite a live target in place (see ``provisioning.update_target_tx``)."""
        provisioning.update_target_tx(
            self._tx, self._store._box, target_id=target.id, name=target.name, **fields
        )
        found = self.target(target.name)
        if found is None:  # pragma: no cover - updated just above
            raise NotFound(f"no target named '{target.name}'")
        return found

    def remove_target(self, name: str, at: float) -> Target:
        """Retire a live target, revoking its grants and tokens; raises NotFound."""
        return self._store._remove_target_tx(self._tx, name, at)


class AuditedBatch:
    """Several audited changes in one write transaction: all of them or none.

    ``change`` has the signature of ``Store.audited_change``; each change appends
    its own audit row, in order, when its block ends.
    """

    def __init__(self, store: Store, tx: Tx) -> None:
        self._store = store
        self._tx = tx
        self.events: list[AuditEvent] = []

    @contextmanager
    def change(
        self, actor: str, action: str, subject: str | None, at: float
    ) -> Iterator[AuditedChange]:
        """One change and its audit row, inside the batch's transaction."""
        change = AuditedChange(self._store, self._tx)
        yield change
        if change.subject is not None:
            subject = change.subject
        change.event = self._store._append_audit_tx(
            self._tx, actor, action, subject, change.details, at
        )
        self.events.append(change.event)


@contextmanager
def audited_batch(store: Store) -> Iterator[AuditedBatch]:
    """Open one write transaction for a batch of audited changes (``bastion apply``)."""
    with store._db.transaction(write=True) as tx:
        yield AuditedBatch(store, tx)
