"""The access-request workflow: create, approve, deny, lapse, break-glass, extend, drop, review.

Each step applies the rules of ``bastion.access_requests`` and changes state and
its audit row in one store transaction (``Store.audited_change``), so a decision
that happened is always audited and an audit row always means it happened. An
approved request becomes ordinary grants (one per target) that carry its id,
so the time box, revocation and every session path treat them like any grant.
A request may name an access profile instead of targets: its policy is the
profile's (``access_requests.policy_for_profile``) and approval makes one
profile grant, which reaches whatever the profile's selector matches at each
connection.
After the transaction, ``announce`` is told (notifications); it must not block.

Synchronous like the store: the SSH front end runs it through ``BastionNode.call``,
the CLI calls it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion import audit_actions as actions
from bastion.access_requests import (
    RequestPolicy,
    RequestRefused,
    approved_scope,
    approver_allowed,
    check_new_request,
    check_profile_request,
    distinct_approvers,
    extended_end,
    grant_window,
    narrowed,
    policy_for,
    policy_for_profile,
    who_can_approve,
)
from bastion.errors import NotFound, StoreError, UsageError
from bastion.profiles import check_profile_fit
from bastion.requests_config import RequestsConfig
from bastion.store import Store
from bastion.store.audited import AuditedChange
from bastion.store.models import (
    AccessRequest,
    Approval,
    Grant,
    GrantState,
    HeldCommand,
    Profile,
    RequestKind,
    RequestState,
    Target,
    TargetKind,
    User,
)

AUTO_APPROVER = "bastion:auto-approve"
"""The approver name of requests approved by an ``[[requests.auto_approve]]`` rule."""


@dataclass(frozen=True)
class RequestEvent:
    """Something happened to a request: what notification sinks are told."""

    event: str
    """``request.created``, ``request.approved``, ``request.denied``, ``request.lapsed``,
    ``request.break-glass``, ``request.extended``, ``request.dropped``, ``request.reviewed``."""
    request: AccessRequest
    actor: str
    decision: str | None = None
    reason: str | None = None
    approvers: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()

    def details(self) -> dict[str, Any]:
        """The JSON body's fields: event, request, requester, targets, reason, decision, who."""
        r = self.request
        return {
            "event": self.event,
            "request": r.id,
            "kind": r.kind.value,
            "requester": r.user_name,
            "targets": list(r.targets),
            "profile": r.profile,
            "duration": r.duration,
            "reason": r.reason,
            "state": r.state.value,
            "decision": self.decision,
            "decided_by": self.actor if self.decision else None,
            "decision_reason": self.reason,
            "approvers": list(self.approvers),
            "grants": [g.id for g in self.grants],
            "not_after": max((g.not_after for g in self.grants), default=None),
            **_held_details(r),
        }


def _held_details(r: AccessRequest) -> dict[str, Any]:
    """What a ``command`` request holds, for notifications (nothing for other kinds)."""
    if r.held is None:
        return {}
    return {
        "command": r.held.text,
        "held_kind": r.held.kind,
        "session": r.held.session_id,
        "rule": r.held.rule,
    }


@dataclass(frozen=True)
class Outcome:
    """What a step did: the request as it is now, its grants, and who can still approve."""

    request: AccessRequest
    grants: tuple[Grant, ...] = ()
    approvers: tuple[str, ...] = ()
    needed: int = 0
    """Approvals still missing (0 once approved)."""


Announce = Callable[[RequestEvent], None]


@dataclass
class RequestFlow:
    """The workflow over one store and the ``[requests]`` settings."""

    store: Store
    config: RequestsConfig
    clock: Callable[[], float] = time.time
    announce: Announce | None = None
    origin: Mapping[str, Any] = field(default_factory=dict)
    """Added to every audit row's details (``via``, ``uid``, ``node``...)."""

    # --- helpers ---------------------------------------------------------------------

    def _targets(self, change: AuditedChange, names: Sequence[str]) -> list[Target]:
        found = []
        for name in dict.fromkeys(names):
            t = change.target(name)
            if t is None:
                raise RequestRefused(f"no target named '{name}'")
            found.append(t)
        return found

    def _profile(self, change: AuditedChange, name: str) -> Profile:
        try:
            return change.profile(name)
        except NotFound as e:
            raise RequestRefused(
                f"there is no profile named '{name}' (any more); ask an admin which "
                "profiles exist, or request targets by name"
            ) from e

    def _policy(self, change: AuditedChange, request: AccessRequest) -> RequestPolicy:
        if request.profile is not None:
            try:
                return policy_for_profile(change.profile(request.profile), self.config)
            except NotFound:  # removed since: still deniable; approval refuses it
                return policy_for([], self.config)
        return policy_for(self._targets(change, request.targets), self.config)

    def _approvers(self, policy: RequestPolicy, requester: str) -> tuple[str, ...]:
        users = self.store.list_users()
        groups = {u.name: self.store.user_groups(u.id) for u in users}
        return tuple(who_can_approve(policy, users, requester, groups))

    def _tell(self, event: RequestEvent) -> None:
        if self.announce is not None:
            self.announce(event)

    def _audit(self, change: AuditedChange, **details: Any) -> None:
        change.details.update({**self.origin, **details})

    def _login_for(self, target: Target, login: str | None) -> tuple[str | None, str | None]:
        """(ssh login, credential set) the grant for ``target`` gets."""
        if target.kind is TargetKind.POSTGRES:
            names = [c.name for c in target.credsets]
            if login is None and len(names) == 1:
                return None, names[0]
            if login is None or login not in names:
                raise RequestRefused(
                    f"{target.name} is a database: name its credential set with --login "
                    f"({', '.join(names) or 'none configured'})"
                )
            return None, login
        return login or target.default_login, None

    def _grants_for(
        self,
        change: AuditedChange,
        request: AccessRequest,
        approved_by: str,
        approved_at: float,
        policy: RequestPolicy,
        approvals: Sequence[Approval],
    ) -> tuple[Grant, ...]:
        scope = approved_scope(request, approvals)
        not_before, not_after = grant_window(
            request, approved_at, scope.duration, policy, self.config
        )
        if request.profile is not None:
            return (
                self._profile_grant(
                    change, request, approved_by, approved_at, scope.options,
                    (not_before, not_after),
                ),
            )  # fmt: skip
        made = []
        for target in self._targets(change, scope.targets):
            login, credset = self._login_for(target, request.login)
            made.append(
                change.add_grant(
                    user_id=request.user_id,
                    target_id=target.id,
                    login=login,
                    credset=credset,
                    not_before=not_before,
                    not_after=not_after,
                    reason=f"request #{request.id}: {request.reason}",
                    requested_by=request.user_name,
                    approved_by=approved_by,
                    options=scope.options,
                    now=approved_at,
                    state=GrantState.ACTIVE,
                    request_id=request.id,
                )
            )
        return tuple(made)

    def _profile_grant(
        self,
        change: AuditedChange,
        request: AccessRequest,
        approved_by: str,
        approved_at: float,
        options: frozenset[str],
        window: tuple[float, float],
    ) -> Grant:
        """The one grant an approved profile request becomes (checked against the profile now)."""
        assert request.profile is not None  # noqa: S101  only called for profile requests
        profile = self._profile(change, request.profile)
        try:
            check_profile_fit(profile, request.login, options)
        except UsageError as e:
            raise RequestRefused(f"profile {profile.name} changed since the request: {e}") from e
        return change.add_grant(
            user_id=request.user_id,
            target_id=None,
            profile_id=profile.id,
            login=request.login,
            credset=profile.credset,
            not_before=window[0],
            not_after=window[1],
            reason=f"request #{request.id}: {request.reason}",
            requested_by=request.user_name,
            approved_by=approved_by,
            options=options,
            now=approved_at,
            state=GrantState.ACTIVE,
            request_id=request.id,
        )

    def _new_profile_request(
        self,
        change: AuditedChange,
        user: User,
        kind: RequestKind,
        name: str,
        *,
        duration: float,
        login: str | None,
        options: frozenset[str],
        start_at: float | None,
        reason: str,
        now: float,
        lapses_at: float,
        client_addr: str | None,
        extends_grant_id: int | None = None,
    ) -> tuple[AccessRequest, RequestPolicy]:
        """Check a new request naming a profile against its rules and store it (pending)."""
        profile = self._profile(change, name)
        policy = policy_for_profile(profile, self.config)
        extending = kind is RequestKind.EXTEND  # the grant's own login and options
        check_profile_request(
            profile=profile, duration=duration, options=frozenset() if extending else options,
            login=None if extending else login, policy=policy,
        )  # fmt: skip
        request = change.add_request(
            user_id=user.id, kind=kind, targets=[], login=login, options=options,
            duration=duration, start_at=start_at, reason=reason, now=now, lapses_at=lapses_at,
            extends_grant_id=extends_grant_id, client_addr=client_addr, profile=profile.name,
        )  # fmt: skip
        return request, policy

    def _new_request(
        self,
        change: AuditedChange,
        user: User,
        kind: RequestKind,
        target_names: Sequence[str],
        *,
        duration: float,
        login: str | None,
        options: frozenset[str],
        start_at: float | None,
        reason: str,
        now: float,
        lapses_at: float,
        client_addr: str | None,
        extends_grant_id: int | None = None,
    ) -> tuple[AccessRequest, RequestPolicy]:
        """Check a new request against the rules and store it (pending)."""
        found = self._targets(change, target_names)
        policy = policy_for(found, self.config)
        extending = kind is RequestKind.EXTEND  # the grant's own login, already checked
        check_new_request(
            targets=found, duration=duration, options=options,
            login=None if extending else login, policy=policy, kind=kind, config=self.config,
        )  # fmt: skip
        if kind is RequestKind.ACCESS:
            for t in found:
                self._login_for(t, login)
        request = change.add_request(
            user_id=user.id,
            kind=kind,
            targets=[t.name for t in found],
            login=login,
            options=options,
            duration=duration,
            start_at=start_at,
            reason=reason,
            now=now,
            lapses_at=lapses_at,
            extends_grant_id=extends_grant_id,
            client_addr=client_addr,
        )
        return request, policy

    # --- contractor steps --------------------------------------------------------------

    def create(
        self,
        user: User,
        *,
        targets: Sequence[str] = (),
        duration: float,
        reason: str,
        login: str | None = None,
        options: Sequence[str] = (),
        start_at: float | None = None,
        client_addr: str | None = None,
        profile: str | None = None,
    ) -> Outcome:
        """A request for access to ``targets`` or under ``profile`` (one of the two);
        approved at once by a matching auto-approve rule.

        Raises RequestRefused naming what the rules do not allow.
        """
        if not reason.strip():
            raise RequestRefused("say why with --reason (it goes to the approvers)")
        if profile is not None and targets:
            raise RequestRefused("name targets or a --profile, not both")
        now = self.clock()
        subject = f"profile {profile}" if profile is not None else ",".join(targets)
        with self.store.audited_change(user.name, actions.REQUEST_CREATED, subject, now) as change:
            opts = frozenset(options)
            common: dict[str, Any] = dict(
                duration=duration, login=login, options=opts, start_at=start_at, reason=reason,
                now=now, lapses_at=now + self.config.pending_ttl, client_addr=client_addr,
            )  # fmt: skip
            if profile is not None:
                request, policy = self._new_profile_request(
                    change, user, RequestKind.ACCESS, profile, **common
                )
                reach = [t.name for t in change.reached(self._profile(change, profile))]
                self._audit(change, profile=profile, reaches=reach)
            else:
                request, policy = self._new_request(
                    change, user, RequestKind.ACCESS, targets, **common
                )
            self._audit(
                change, request=request.id, duration=duration, reason=reason,
                options=sorted(opts), login=login, lapses_at=request.lapses_at,
            )  # fmt: skip
        approvers = self._approvers(policy, user.name)
        self._tell(RequestEvent("request.created", request, user.name, approvers=approvers))
        rule = self._auto_rule(user, request)
        if rule is not None:
            return self._approve(request.id, AUTO_APPROVER, reason=rule, auto=True)
        return Outcome(request, approvers=approvers, needed=policy.approvals)

    def _auto_rule(self, user: User, request: AccessRequest) -> str | None:
        groups = self.store.user_groups(user.id)
        for rule in self.config.auto_approve:
            if rule.matches(
                user=user.name, groups=groups, targets=request.targets,
                duration=request.duration, now=self.clock(), profile=request.profile,
            ):  # fmt: skip
                return rule.describe()
        return None

    def break_glass(
        self,
        user: User,
        *,
        targets: Sequence[str],
        reason: str,
        duration: float | None = None,
        login: str | None = None,
        options: Sequence[str] = (),
        client_addr: str | None = None,
    ) -> Outcome:
        """Access at once, capped at ``break_glass_max``, marked for review after the fact."""
        if not reason.strip():
            raise RequestRefused("break-glass needs a --reason; every approver is told")
        now = self.clock()
        length = min(duration or self.config.break_glass_max, self.config.break_glass_max)
        with self.store.audited_change(
            user.name, actions.REQUEST_BREAK_GLASS, ",".join(targets), now
        ) as change:
            request, policy = self._new_request(
                change, user, RequestKind.BREAK_GLASS, targets, duration=length, login=login,
                options=frozenset(options), start_at=None, reason=reason, now=now,
                lapses_at=now, client_addr=client_addr,
            )  # fmt: skip
            request = change.decide_request(
                request.id, RequestState.APPROVED, by="break-glass", at=now, reason=reason
            )
            grants = self._grants_for(change, request, "break-glass", now, policy, ())
            request = change.request(request.id)
            self._audit(
                change, request=request.id, duration=length, reason=reason,
                grants=[g.id for g in grants], not_after=grants[0].not_after if grants else None,
            )  # fmt: skip
        approvers = self._approvers(policy, user.name)
        self._tell(
            RequestEvent(
                "request.break-glass", request, user.name, decision="approved",
                reason=reason, approvers=approvers, grants=grants,
            )
        )  # fmt: skip
        return Outcome(request, grants=grants, approvers=approvers)

    def extend(
        self, user: User, *, grant_id: int, duration: float, reason: str,
        client_addr: str | None = None,
    ) -> Outcome:  # fmt: skip
        """Ask for a grant's end to move later (approved like any request)."""
        if not reason.strip():
            raise RequestRefused("say why with --reason (it goes to the approvers)")
        grant = self.store.get_grant(grant_id)
        if grant is None or grant.user_id != user.id:
            raise RequestRefused(f"you have no grant #{grant_id}; see 'ssh BASTION grants'")
        if grant.state_at(self.clock()) is not GrantState.ACTIVE:
            raise RequestRefused(f"grant #{grant_id} is no longer active; request new access")
        now = self.clock()
        subject = grant.target_name or f"profile {grant.profile_name}"
        with self.store.audited_change(user.name, actions.REQUEST_CREATED, subject, now) as change:
            common: dict[str, Any] = dict(
                duration=duration, login=grant.login or grant.credset, options=grant.options,
                start_at=None, reason=reason, now=now, lapses_at=now + self.config.pending_ttl,
                client_addr=client_addr, extends_grant_id=grant.id,
            )  # fmt: skip
            if grant.target_name is None:
                assert grant.profile_name is not None  # noqa: S101  no target: a profile grant
                request, policy = self._new_profile_request(
                    change, user, RequestKind.EXTEND, grant.profile_name, **common
                )
            else:
                request, policy = self._new_request(
                    change, user, RequestKind.EXTEND, [grant.target_name], **common
                )
            self._audit(
                change, request=request.id, extends=grant.id, duration=duration, reason=reason
            )
        approvers = self._approvers(policy, user.name)
        self._tell(RequestEvent("request.created", request, user.name, approvers=approvers))
        return Outcome(request, approvers=approvers, needed=policy.approvals)

    def drop(self, user: User, grant_id: int) -> Grant:
        """Give a grant back early (its live sessions end at the time box's next pass)."""
        now = self.clock()
        grant = self.store.get_grant(grant_id)
        if grant is None or grant.user_id != user.id:
            raise RequestRefused(f"you have no grant #{grant_id}; see 'ssh BASTION grants'")
        subject = grant.target_name or f"profile {grant.profile_name}"
        with self.store.audited_change(user.name, actions.REQUEST_DROPPED, subject, now) as change:
            try:
                dropped = change.revoke_grant(grant_id, f"{user.name} (dropped)", now)
            except StoreError as e:
                raise RequestRefused(str(e)) from e
            self._audit(change, grant=grant_id, request=grant.request_id)
        if grant.request_id is not None:
            request = self.store.get_request(grant.request_id)
            if request is not None:
                self._tell(
                    RequestEvent(
                        "request.dropped", request, user.name, decision="dropped",
                        grants=(dropped,),
                    )
                )  # fmt: skip
        return dropped

    # --- approver steps ------------------------------------------------------------------

    def approve(
        self,
        request_id: int,
        approver: str,
        *,
        duration: float | None = None,
        targets: Sequence[str] | None = None,
        options: Sequence[str] | None = None,
        reason: str | None = None,
    ) -> Outcome:
        """One approval; the request is approved once it has enough distinct approvers.

        Raises RequestRefused (self-approval, not an approver, widening, not
        pending) and NotFound for an unknown request or approver.
        """
        return self._approve(
            request_id, approver, duration=duration, targets=targets, options=options,
            reason=reason,
        )  # fmt: skip

    def _approve(
        self,
        request_id: int,
        approver: str,
        *,
        duration: float | None = None,
        targets: Sequence[str] | None = None,
        options: Sequence[str] | None = None,
        reason: str | None = None,
        auto: bool = False,
    ) -> Outcome:
        now = self.clock()
        opts = None if options is None else frozenset(options)
        with self.store.audited_change(
            approver, actions.REQUEST_APPROVED, f"request #{request_id}", now
        ) as change:
            request = change.request(request_id)
            if request.state is RequestState.PENDING and request.lapses_at <= now:
                raise RequestRefused(f"request #{request_id} lapsed; it can no longer be approved")
            if request.profile is not None:  # approving a removed profile: say so first
                profile = self._profile(change, request.profile)
                self._audit(
                    change, profile=profile.name,
                    reaches=[t.name for t in change.reached(profile)],
                )  # fmt: skip
            policy = self._policy(change, request)
            if not auto:
                who = change.user(approver)
                approver_allowed(who, change.user_groups(who.id), request, policy)
            elif request.state is not RequestState.PENDING:
                raise RequestRefused(f"request #{request_id} is {request.state.value}")
            if request.kind is RequestKind.COMMAND and (duration or targets or opts is not None):
                raise RequestRefused(
                    f"request #{request_id} holds a command: it is approved as it is "
                    "(leave out --for, --targets and --allow)"
                )
            narrowed(request, duration=duration, targets=targets, options=opts)
            change.add_approval(
                request_id, approver, now, duration=duration, targets=targets, options=opts,
                reason=reason,
            )  # fmt: skip
            request = change.request(request_id)
            have = distinct_approvers(request.approvals)
            needed = 1 if auto else policy.approvals
            if have < needed:
                self._audit(
                    change, request=request_id, approvals=have, needed=needed, final=False,
                    duration=duration, targets=targets, reason=reason,
                )  # fmt: skip
                partial = True
            else:
                partial = False
                grants = self._decide(change, request, policy, now, reason)
                request = change.request(request_id)
                self._audit(
                    change, request=request_id, approvals=have, needed=needed, final=True,
                    grants=[g.id for g in grants],
                    not_after=max((g.not_after for g in grants), default=None),
                    duration=duration, targets=targets, reason=reason, auto=auto or None,
                )  # fmt: skip
        if partial:
            approvers = self._approvers(policy, request.user_name)
            return Outcome(request, approvers=approvers, needed=needed - have)
        decided_by = ",".join(a.approver for a in request.approvals)
        event = "request.extended" if request.kind is RequestKind.EXTEND else "request.approved"
        self._tell(
            RequestEvent(event, request, decided_by, decision="approved", reason=reason,
                         grants=grants)
        )  # fmt: skip
        return Outcome(request, grants=grants)

    def _decide(
        self,
        change: AuditedChange,
        request: AccessRequest,
        policy: RequestPolicy,
        now: float,
        reason: str | None,
    ) -> tuple[Grant, ...]:
        """Enough approvals: make the grants (or move the extended grant's end)."""
        decided_by = ",".join(a.approver for a in request.approvals)
        if request.kind is RequestKind.EXTEND:
            return self._extend(change, request, policy, now)
        if request.kind is RequestKind.COMMAND:  # the held command runs; nothing is granted
            change.decide_request(
                request.id, RequestState.APPROVED, by=decided_by, at=now, reason=reason
            )
            return ()
        change.decide_request(
            request.id, RequestState.APPROVED, by=decided_by, at=now, reason=reason
        )
        return self._grants_for(change, request, decided_by, now, policy, request.approvals)

    def _extend(
        self, change: AuditedChange, request: AccessRequest, policy: RequestPolicy, now: float
    ) -> tuple[Grant, ...]:
        assert request.extends_grant_id is not None  # noqa: S101  kind EXTEND always names one
        grant = change.grant(request.extends_grant_id)
        if grant is None or grant.state_at(now) is not GrantState.ACTIVE:
            raise RequestRefused(
                f"grant #{request.extends_grant_id} ended before the extension was approved"
            )
        scope = approved_scope(request, request.approvals)
        end = extended_end(grant, scope.duration, now, policy)
        change.decide_request(
            request.id, RequestState.APPROVED,
            by=",".join(a.approver for a in request.approvals), at=now, reason=None,
        )  # fmt: skip
        if end <= grant.not_after:
            return (grant,)
        return (change.extend_grant(grant.id, end),)

    def deny(self, request_id: int, approver: str, reason: str) -> Outcome:
        """Deny a pending request with a reason the requester sees."""
        if not reason.strip():
            raise RequestRefused("say why with --reason (the requester is told)")
        now = self.clock()
        with self.store.audited_change(
            approver, actions.REQUEST_DENIED, f"request #{request_id}", now
        ) as change:
            request = change.request(request_id)
            who = change.user(approver)
            policy = self._policy(change, request)
            approver_allowed(
                who, change.user_groups(who.id),
                request if not request.approvals else _without(request, approver), policy,
            )  # fmt: skip
            request = change.decide_request(
                request_id, RequestState.DENIED, by=approver, at=now, reason=reason
            )
            self._audit(change, request=request_id, reason=reason)
        self._tell(RequestEvent("request.denied", request, approver, "denied", reason))
        return Outcome(request)

    def review(self, request_id: int, reviewer: str, note: str) -> AccessRequest:
        """Close the after-the-fact review of a break-glass request."""
        now = self.clock()
        with self.store.audited_change(
            reviewer, actions.REQUEST_REVIEWED, f"request #{request_id}", now
        ) as change:
            request = change.request(request_id)
            if reviewer == request.user_name:
                raise RequestRefused("nobody reviews their own break-glass access")
            who = change.user(reviewer)
            if who.role.value not in ("approver", "admin"):
                raise RequestRefused(f"{reviewer} is not an approver or admin")
            try:
                request = change.review_request(request_id, reviewer, now, note)
            except StoreError as e:
                raise RequestRefused(str(e)) from e
            self._audit(change, request=request_id, note=note)
        self._tell(RequestEvent("request.reviewed", request, reviewer, "reviewed", note))
        return request

    # --- held commands (``hold`` rules; the session core waits on these) -----------

    def hold(
        self,
        user: User,
        *,
        target: str,
        login: str | None,
        held: HeldCommand,
        reason: str,
        timeout: float,
        client_addr: str | None = None,
    ) -> Outcome:
        """Store a command a ``hold`` rule stopped, pending until approved or ``timeout``.

        The same approver rules as access requests apply (the target's approvers,
        N distinct approvals, never the contractor), so the outcome names who can approve.
        """
        now = self.clock()
        with self.store.audited_change(user.name, actions.REQUEST_CREATED, target, now) as change:
            policy = policy_for(self._targets(change, [target]), self.config)
            request = change.add_request(
                user_id=user.id, kind=RequestKind.COMMAND, targets=[target], login=login,
                options=(), duration=timeout, start_at=None, reason=reason, now=now,
                lapses_at=now + timeout, client_addr=client_addr, held=held,
            )  # fmt: skip
            self._audit(
                change, request=request.id, kind=RequestKind.COMMAND.value, held=held.kind,
                text=held.text, session=held.session_id, rule=held.rule,
                lapses_at=request.lapses_at,
            )  # fmt: skip
        approvers = self._approvers(policy, user.name)
        self._tell(RequestEvent("request.created", request, user.name, approvers=approvers))
        return Outcome(request, approvers=approvers, needed=policy.approvals)

    def settle(self, request_id: int, state: RequestState, reason: str) -> AccessRequest:
        """Close a request nobody decided: ``lapsed`` (timed out) or ``dropped`` (its
        session ended). Returns the request as stored: decided meanwhile, it is left as
        it is (the store is the truth, whichever node or door decided it)."""
        now = self.clock()
        action = actions.REQUEST_LAPSED if state is RequestState.LAPSED else actions.REQUEST_DROPPED
        try:
            with self.store.audited_change(
                "bastion", action, f"request #{request_id}", now
            ) as change:
                request = change.decide_request(request_id, state, by=None, at=now, reason=reason)
                self._audit(change, request=request_id, reason=reason)
        except StoreError:
            found = self.store.get_request(request_id)
            if found is None:
                raise
            return found
        self._tell(RequestEvent(action, request, "bastion", state.value, reason))
        return request

    def lapse_due(self) -> list[AccessRequest]:
        """Lapse every pending request past its ``lapses_at`` (each audited)."""
        now = self.clock()
        lapsed = []
        for request_id in self.store.due_lapses(now):
            try:
                with self.store.audited_change(
                    "bastion", actions.REQUEST_LAPSED, f"request #{request_id}", now
                ) as change:
                    request = change.decide_request(
                        request_id, RequestState.LAPSED, by=None, at=now,
                        reason="nobody decided in time",
                    )  # fmt: skip
                    self._audit(change, request=request_id)
            except StoreError:
                continue  # decided meanwhile (another node, an approver)
            lapsed.append(request)
            self._tell(RequestEvent("request.lapsed", request, "bastion", "lapsed"))
        return lapsed

    def policy_of(self, request: AccessRequest) -> RequestPolicy:
        """The policy ``request`` is decided under now (its profile's, or its targets')."""
        if request.profile is not None:
            profile = self.store.get_profile(request.profile)
            if profile is not None:
                return policy_for_profile(profile, self.config)
            return policy_for([], self.config)
        targets = [t for name in request.targets if (t := self.store.get_target(name))]
        return policy_for(targets, self.config)

    def reach_of(self, request: AccessRequest) -> tuple[str, ...]:
        """What a profile request's profile reaches now (target names); () for others."""
        if request.profile is None:
            return ()
        profile = self.store.get_profile(request.profile)
        if profile is None:
            return ()
        return tuple(t.name for t in self.store.targets_reached_by(profile))

    def approvers_for(self, request: AccessRequest) -> tuple[str, ...]:
        """Who could approve ``request`` now (for the requester and listings)."""
        return self._approvers(self.policy_of(request), request.user_name)


def _without(request: AccessRequest, approver: str) -> AccessRequest:
    """The request as if ``approver`` had not approved (an approver may deny after all)."""
    from dataclasses import replace

    return replace(request, approvals=tuple(a for a in request.approvals if a.approver != approver))


__all__ = [
    "AUTO_APPROVER",
    "NotFound",
    "Outcome",
    "RequestEvent",
    "RequestFlow",
    "RequestRefused",
]
