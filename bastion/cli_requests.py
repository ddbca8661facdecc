"""Access-request subcommands: decide contractors' requests from the bastion host.

``bastion request list`` and ``show`` read requests with their approvals, grants
and history. ``approve``, ``deny`` and ``review`` decide as a named approver
(``--as NAME``: a user with role approver or admin, never the requester) through
the same workflow as ``ssh BASTION approve`` (``bastion.request_flow``), so the
rules cannot differ by door. Each audit row names that approver as actor and
carries the local uid and login; the decision is announced to the configured
notification sinks before the command exits, so nobody is left untold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bastion.admin_actions import Origin
from bastion.cli_shared import emit, jsonable, opened
from bastion.errors import NotFound, UsageError
from bastion.grants import format_time, parse_options
from bastion.notify import Notifier
from bastion.request_flow import Outcome, RequestEvent, RequestFlow
from bastion.request_hooks import notification_of
from bastion.store import Store
from bastion.store.models import AccessRequest, Grant, RequestKind, RequestState
from bastion.timeparse import format_duration, parse_duration

T = TypeVar("T")

NOTIFY_PATIENCE = 10.0
"""Seconds the CLI lets a failing sink retry before the last attempt at exit."""
NOTIFY_GRACE = 5.0
"""Seconds that last attempt may take (``Notifier.close``)."""


def request_id(text: str) -> int:
    """``12`` or ``#12`` -> 12 (raises UsageError)."""
    try:
        return int(str(text).lstrip("#"))
    except ValueError as e:
        raise UsageError(f"'{text}' is not a request number (e.g. 12 or #12)") from e


def _needed(request: AccessRequest, flow: RequestFlow) -> int:
    return flow.policy_of(request).approvals


def _asked(request: AccessRequest) -> str:
    """Its targets, or ``profile NAME``."""
    return f"profile {request.profile}" if request.profile else ",".join(request.targets)


def still_to_approve(request: AccessRequest, approvers: Sequence[str]) -> tuple[str, ...]:
    """Who may approve, less those who already did."""
    done = {a.approver for a in request.approvals}
    return tuple(a for a in approvers if a not in done)


def _state(request: AccessRequest, now: float) -> str:
    if request.state is RequestState.PENDING and request.lapses_at <= now:
        return "pending (lapsing)"
    if request.kind is RequestKind.BREAK_GLASS and request.reviewed_at is None:
        return f"{request.state.value} (unreviewed)"
    return request.state.value


def _line(request: AccessRequest, needed: int, now: float) -> str:
    approvals = (
        f"{len(request.approvals)}/{needed}" if request.kind is not RequestKind.BREAK_GLASS else "-"
    )
    if request.held is not None:  # what an approver decides on is the command itself
        return (
            f"#{request.id:<5} {request.user_name:<16} {request.kind.value:<11} "
            f"{_state(request, now):<20} {','.join(request.targets):<24} "
            f"held {request.held.kind} {request.held.text!r} approvals {approvals:<5}"
        )
    return (
        f"#{request.id:<5} {request.user_name:<16} {request.kind.value:<11} "
        f"{_state(request, now):<20} {_asked(request):<24} "
        f"{format_duration(request.duration):<7} approvals {approvals:<5} {request.reason}"
    )


def _request_json(
    request: AccessRequest, needed: int, reach: Sequence[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = jsonable(request)
    out["approvals_needed"] = needed
    if request.profile is not None:
        out["reaches"] = list(reach or ())
    return out


def cmd_request_list(args: argparse.Namespace) -> int:
    """List requests, newest first: pending ones, unreviewed break-glass, or all."""
    now = time.time()
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with opened(args) as (config, store):
        user_id = None
        if args.user:
            u = store.get_user(args.user)
            if u is None:
                raise NotFound(f"no user named '{args.user}'; see 'bastion user list'")
            user_id = u.id
        found = store.list_requests(
            user_id=user_id,
            state=RequestState.PENDING if args.pending else None,
            unreviewed=args.unreviewed,
            limit=args.limit,
        )
        flow = RequestFlow(store, config.requests)
        needed = {r.id: _needed(r, flow) for r in found}
        reach = {r.id: flow.reach_of(r) for r in found if r.profile is not None}
    if args.json:
        out = [_request_json(r, needed[r.id], reach.get(r.id)) for r in found]
        print(json.dumps(out, indent=2))
        return 0
    if not found:
        print("no requests" + (" pending" if args.pending else ""), file=sys.stderr)
    emit(args, found, lambda r: _line(r, needed[r.id], now))
    return 0


def history(request: AccessRequest, grants: list[Grant]) -> list[dict[str, Any]]:
    """What happened to a request, oldest first: creation, each approval, the decision,
    the review, and the end of each grant it became."""
    events: list[dict[str, Any]] = [
        {"at": request.created_at, "event": "created", "by": request.user_name,
         "note": request.reason},
    ]  # fmt: skip
    for a in request.approvals:
        narrowed = []
        if a.duration is not None:
            narrowed.append(f"for {format_duration(a.duration)}")
        if a.targets is not None:
            narrowed.append(f"targets {','.join(a.targets)}")
        if a.options is not None:
            narrowed.append(f"allow {','.join(sorted(a.options)) or 'none'}")
        note = "; ".join([*narrowed, *([a.reason] if a.reason else [])])
        events.append({"at": a.at, "event": "approval", "by": a.approver, "note": note or None})
    if request.decided_at is not None:
        events.append({
            "at": request.decided_at, "event": request.state.value,
            "by": request.decided_by, "note": request.decision_reason,
        })  # fmt: skip
    if request.reviewed_at is not None:
        events.append({
            "at": request.reviewed_at, "event": "reviewed", "by": request.reviewed_by,
            "note": request.review_note,
        })  # fmt: skip
    for g in grants:
        if g.revoked_at is not None:
            events.append({
                "at": g.revoked_at, "event": f"grant #{g.id} revoked", "by": g.revoked_by,
                "note": None,
            })  # fmt: skip
    return sorted(events, key=lambda e: float(e["at"]))


def _grants_of(store: Store, request: AccessRequest) -> list[Grant]:
    ids = list(request.grant_ids)
    if request.extends_grant_id is not None and request.extends_grant_id not in ids:
        ids.append(request.extends_grant_id)
    return [g for i in ids if (g := store.get_grant(i)) is not None]


def _grant_text(g: Grant, now: float) -> str:
    how = f"with credential set {g.credset}" if g.credset else f"as {g.login or 'any login'}"
    to = g.target_name or f"profile {g.profile_name}"
    return (
        f"grant #{g.id}: {g.user_name} -> {to} {how} "
        f"from {format_time(g.not_before)} until {format_time(g.not_after)} "
        f"({g.state_at(now).value})"
    )


def cmd_request_show(args: argparse.Namespace) -> int:
    """One request with its approvals, who may still approve it, its grants and its history."""
    now = time.time()
    rid = request_id(args.id)
    with opened(args) as (config, store):
        request = store.get_request(rid)
        if request is None:
            raise NotFound(f"no request #{rid}; see 'bastion request list'")
        grants = _grants_of(store, request)
        flow = RequestFlow(store, config.requests)
        pending = request.state is RequestState.PENDING
        can_approve = still_to_approve(request, flow.approvers_for(request)) if pending else ()
        needed = _needed(request, flow)
        reach = flow.reach_of(request)
    events = history(request, grants)
    if args.json:
        out = _request_json(request, needed, reach)
        out["can_approve"] = list(can_approve)
        out["grants"] = [jsonable(g) for g in grants]
        out["history"] = events
        print(json.dumps(out, indent=2))
        return 0
    r = request
    print(f"request #{r.id} ({r.kind.value}) by {r.user_name}: {_state(r, now)}")
    login = f" as {r.login}" if r.login else ""
    allowing = f", allowing {','.join(sorted(r.options))}" if r.options else ""
    if r.profile is not None:
        print(f"  profile    {r.profile}{login}{allowing}")
        print(f"  reaches    {', '.join(reach) or 'nothing now'} (now; labels decide)")
    else:
        print(f"  targets    {', '.join(r.targets)}{login}{allowing}")
    start = f"from {format_time(r.start_at)}" if r.start_at else "from approval"
    if r.held is not None:
        print(f"  held       {r.held.kind} {r.held.text!r}")
        print(f"  session    {r.held.session_id} (live: bastion tui, requests, key w)")
        print(f"  rule       {r.held.rule or '-'}")
    else:
        print(f"  for        {format_duration(r.duration)} {start}")
    if r.extends_grant_id is not None:
        print(f"  extends    grant #{r.extends_grant_id}")
    print(f"  reason     {r.reason}")
    print(
        f"  created    {format_time(r.created_at)}"
        + (f" from {r.client_addr}" if r.client_addr else "")
    )
    if r.state is RequestState.PENDING:
        print(f"  lapses     {format_time(r.lapses_at)}")
        print(f"  approvals  {len(r.approvals)} of {needed}; can approve: "
              f"{', '.join(can_approve) or 'nobody (see bastion target show)'}")  # fmt: skip
    for g in grants:
        print(f"  {_grant_text(g, now)}")
    print("  history")
    for e in events:
        note = f": {e['note']}" if e["note"] else ""
        by = f" by {e['by']}" if e["by"] else ""
        print(f"    {format_time(e['at'])}  {e['event']}{by}{note}")
    return 0


# --- deciding ---------------------------------------------------------------------------


def _decided(args: argparse.Namespace, step: Callable[[RequestFlow], T]) -> T:
    """Run one workflow step as the CLI, with the configured notification sinks.

    The step runs inside an event loop only so the notifier can deliver in the
    background; it is synchronous and blocks nothing else. Before returning, the
    notifier gets ``NOTIFY_PATIENCE`` seconds for its retries and one last attempt;
    what still fails is audited (``notify.failed``) and named on stderr.
    """
    origin = Origin.cli()
    with opened(args) as (config, store):

        async def audit(
            actor: str, action: str, subject: str | None = None, **details: Any
        ) -> None:
            details.setdefault("node", config.node)
            store.append_audit(actor, action, subject, {**origin.details, **details}, time.time())

        async def run() -> T:
            notifier = Notifier.from_config(config.notify, audit, config.node)
            notifier.start()

            def announce(event: RequestEvent) -> None:
                notifier.send(notification_of(event, time.time()))

            flow = RequestFlow(store, config.requests, announce=announce, origin=origin.details)
            try:
                return step(flow)
            finally:
                await _flush(notifier)

        quiet = logging.getLogger("bastion.notify")
        quiet.addHandler(logging.NullHandler())  # our own one-line summary instead
        return asyncio.run(run())


async def _flush(notifier: Notifier) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    told = False
    while notifier.pending and loop.time() < start + NOTIFY_PATIENCE:
        if not told and loop.time() > start + 1.0:
            print("bastion: delivering notifications (a receiver is slow or down)...",
                  file=sys.stderr)  # fmt: skip
            told = True
        await asyncio.sleep(0.05)
    await notifier.close(NOTIFY_GRACE)
    for rec in notifier.recent:
        if rec.outcome in ("failed", "dropped"):
            print(
                f"bastion: notification {rec.event} to {rec.sink} not delivered "
                f"({rec.error}); audited as notify.failed",
                file=sys.stderr,
            )


def _options(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    try:
        return sorted(parse_options(text))
    except ValueError as e:
        raise UsageError(str(e)) from e


def _targets(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise UsageError("--targets needs at least one target name")
    return names


def _outcome_json(out: Outcome) -> dict[str, Any]:
    return {
        "request": jsonable(out.request),
        "grants": [jsonable(g) for g in out.grants],
        "approvals_missing": out.needed,
        "can_approve": list(still_to_approve(out.request, out.approvers)),
    }


def cmd_request_approve(args: argparse.Namespace) -> int:
    """Approve as ``--as NAME``; the last needed approval turns the request into grants."""
    rid = request_id(args.id)
    duration = parse_duration(args.duration) if args.duration else None
    targets = _targets(args.targets)
    options = _options(args.allow)

    def step(flow: RequestFlow) -> Outcome:
        return flow.approve(
            rid, args.approver, duration=duration, targets=targets, options=options,
            reason=args.reason,
        )  # fmt: skip

    out = _decided(args, step)
    if args.json:
        print(json.dumps(_outcome_json(out), indent=2))
        return 0
    r = out.request
    if r.state is RequestState.PENDING:
        who = ", ".join(still_to_approve(r, out.approvers)) or "nobody"
        print(
            f"request #{r.id}: approval by {args.approver} recorded; {out.needed} more "
            f"needed (can approve: {who})"
        )
        return 0
    print(f"request #{r.id} approved by {r.decided_by}")
    if r.held is not None:
        print(f"the held {r.held.kind} of {r.user_name} runs now: {r.held.text!r}")
    now = time.time()
    for g in out.grants:
        if r.kind is RequestKind.EXTEND:
            print(f"grant #{g.id} of {g.user_name} now ends {format_time(g.not_after)}")
        else:
            print(_grant_text(g, now))
    return 0


def cmd_request_deny(args: argparse.Namespace) -> int:
    """Deny a pending request as ``--as NAME``; the requester sees the reason."""
    rid = request_id(args.id)
    out = _decided(args, lambda flow: flow.deny(rid, args.approver, args.reason))
    if args.json:
        print(json.dumps(_outcome_json(out), indent=2))
    else:
        print(f"request #{rid} of {out.request.user_name} denied by {args.approver}")
    return 0


def cmd_request_review(args: argparse.Namespace) -> int:
    """Close the after-the-fact review of a break-glass request as ``--as NAME``."""
    rid = request_id(args.id)
    request = _decided(args, lambda flow: flow.review(rid, args.approver, args.note))
    if args.json:
        print(json.dumps(jsonable(request), indent=2))
    else:
        print(f"break-glass request #{rid} of {request.user_name} reviewed by {args.approver}")
    return 0
