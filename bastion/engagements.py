"""Contractor engagements: access that ends on a date, with reminders and no hand work.

A contractor carries a sponsor and an end date (``bastion user add --sponsor S
--until DATE``). Every node runs ``run_engagements``: at the end second it ends
the user's live sessions on this node (reason ``engagement-ended``), and the one
node whose conditional UPDATE wins disables the user, revokes their database
tokens, drops their pending requests, audits ``engagement.ended`` and notifies the
sinks. Seven days and one day before the end a reminder goes to the sinks (once
each, also decided by a conditional UPDATE) and the contractor's login banner
says so. The notification sinks are node-wide (``[[notify.webhook]]``): "the
sponsor is notified" means the event names the sponsor and goes to every sink
whose ``events`` match, not to a per-sponsor address.

The helpers at the top are pure (state, messages, which reminder is due); the
node pass below them is what ``BastionNode.start_background`` runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion import audit_actions as actions
from bastion.admin_actions import Origin
from bastion.errors import BastionError, StoreUnavailable, UsageError
from bastion.grants import format_time
from bastion.notify import Notification
from bastion.notify.event import ENGAGEMENT_ENDED, ENGAGEMENT_REMINDER
from bastion.session.reasons import EndReason
from bastion.store.models import Role, User

if TYPE_CHECKING:
    from bastion.service import BastionNode
    from bastion.store import Store

log = logging.getLogger(__name__)

DAY = 86400.0
REMINDER_DAYS = (7, 1)
"""Days before the end at which the sponsor is reminded and the banner warns."""
REMINDER_INTERVAL = 30.0
"""Seconds between two reminder passes (ends are checked at every time-box poll)."""
ENDED_BY = "engagement-ended"
"""``revoked_by`` of the tokens an engagement's end revoked."""

ACTIVE, ENDED, DISABLED, LOCKED = "active", "ended", "disabled", "locked"


def user_state(user: User, now: float) -> str:
    """``active``, ``ended`` (engagement over), ``disabled`` or ``locked``, for listings."""
    if has_ended(user, now):
        return ENDED
    if user.disabled:
        return DISABLED
    if user.locked_until is not None and user.locked_until > now:
        return LOCKED
    return ACTIVE


def has_ended(user: User, now: float) -> bool:
    """Has the user's engagement reached its end (whether or not a node ended it yet)?"""
    return user.engagement_until is not None and (
        user.engagement_until <= now or user.engagement_ended_at is not None
    )


def ended_words(until: float) -> str:
    """What the contractor is told when a session ends with the engagement."""
    return f"your engagement ended on {format_time(until)}"


def refusal(user: User, now: float) -> str | None:
    """The login refusal for a user whose engagement ended (None: it has not)."""
    if user.engagement_until is None or not has_ended(user, now):
        return None
    who = f"{user.sponsor} (your sponsor) or an admin" if user.sponsor else "an admin"
    return (
        f"the engagement of {user.name} ended on {format_time(user.engagement_until)}; "
        f"ask {who} to extend it"
    )


def time_left(seconds: float) -> str:
    """``3 days``, ``1 day``, ``5 hours``: how long until an end, rounded up."""
    if seconds >= DAY:
        days = math.ceil(seconds / DAY - 1e-9)
        return f"{days} day{'s' if days != 1 else ''}"
    hours = max(1, math.ceil(seconds / 3600 - 1e-9))
    return f"{hours} hour{'s' if hours != 1 else ''}"


def banner_line(user: User, now: float) -> str | None:
    """The login-banner line of a contractor whose engagement ends within the reminder time."""
    until = user.engagement_until
    if until is None or has_ended(user, now) or until - now > max(REMINDER_DAYS) * DAY:
        return None
    ask = f"ask {user.sponsor} to extend it" if user.sponsor else "ask an admin to extend it"
    return f"your engagement ends on {format_time(until)} (in {time_left(until - now)}); {ask}"


def reminder_due(user: User, now: float) -> int | None:
    """The reminder (days before the end) to send now, if one is due and not yet sent."""
    until = user.engagement_until
    if until is None or has_ended(user, now):
        return None
    passed = [d for d in REMINDER_DAYS if until - now <= d * DAY]
    if not passed:
        return None
    days = min(passed)
    if user.engagement_reminded is not None and user.engagement_reminded <= days:
        return None
    return days


# --- the node pass ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ended:
    """What ending one engagement did (only on the node that won the update)."""

    user: str
    until: float
    sponsor: str | None
    org: str | None
    sessions: tuple[str, ...]
    tokens_revoked: int
    requests_dropped: tuple[int, ...]


class Refused(BastionError):
    """The acting user may not change this engagement."""


class _AlreadyEnded(Exception):
    """Another node's conditional UPDATE ended this engagement first."""


def end_engagement(store: Store, user: User, now: float) -> Ended | None:
    """Disable ``user``, revoke their tokens and drop their pending requests, audited.

    None if another node already did it (nothing is written then).
    """
    until = user.engagement_until
    assert until is not None  # noqa: S101  engagements_ending only returns users with an end
    try:
        with store.audited_change("bastion", actions.ENGAGEMENT_ENDED, user.name, now) as c:
            if not c.end_engagement(user.id, now):
                raise _AlreadyEnded
            tokens = c.revoke_user_tokens(user.id, ENDED_BY, now)
            dropped = c.drop_user_requests(
                user.id, now, f"the engagement of {user.name} ended on {format_time(until)}"
            )
            sessions = c.live_sessions(user.id)
            c.details.update(
                until=until, sponsor=user.sponsor, org=user.org, sessions=sessions,
                tokens_revoked=tokens, requests_dropped=dropped,
            )  # fmt: skip
    except _AlreadyEnded:
        return None
    return Ended(user.name, until, user.sponsor, user.org, tuple(sessions), tokens, tuple(dropped))


async def end_local_sessions(node: BastionNode) -> list[str]:
    """End this node's live sessions of users whose engagement has ended; their ids."""
    users = sorted({s.user for s in node.live.list()})
    if not users:
        return []
    ends = await node.call(node.store.engagement_ends, users)
    now = node.clock()
    ended: list[str] = []
    for name, until in ends.items():
        if until <= now:
            ended += node.live.end_user(name, EndReason.ENGAGEMENT_ENDED, ended_words(until))
    return ended


async def end_due(node: BastionNode) -> list[Ended]:
    """End every engagement that reached its end and that no node ended yet; notify."""
    now = node.clock()
    done: list[Ended] = []
    for user in await node.call(node.store.engagements_ending, now):
        result = await node.call(end_engagement, node.store, user, now)
        if result is None:
            continue
        done.append(result)
        log.info("engagement of %s ended (until %s)", user.name, format_time(result.until))
        node.notifier.send(
            Notification(
                ENGAGEMENT_ENDED, now, "bastion", f"user {user.name}",
                {
                    "user": user.name, "sponsor": user.sponsor, "org": user.org,
                    "until": result.until, "until_text": format_time(result.until),
                    "sessions": list(result.sessions), "tokens_revoked": result.tokens_revoked,
                    "requests_dropped": list(result.requests_dropped),
                },
            )
        )  # fmt: skip
    return done


async def send_reminders(node: BastionNode) -> list[tuple[str, int]]:
    """Send the due 7-day and 1-day reminders (each once, whichever node wins); (user, days)."""
    now = node.clock()
    sent: list[tuple[str, int]] = []
    for user in await node.call(node.store.engagements_to_remind, now, max(REMINDER_DAYS) * DAY):
        days = reminder_due(user, now)
        until = user.engagement_until
        if days is None or until is None:
            continue
        if not await node.call(node.store.claim_reminder, user.id, days, until):
            continue
        sent.append((user.name, days))
        await node.audit(
            "bastion", actions.ENGAGEMENT_REMINDED, user.name,
            days=days, until=until, sponsor=user.sponsor,
        )  # fmt: skip
        node.notifier.send(
            Notification(
                ENGAGEMENT_REMINDER, now, "bastion", f"user {user.name}",
                {
                    "user": user.name, "sponsor": user.sponsor, "org": user.org,
                    "until": until, "until_text": format_time(until), "days": days,
                    "left": time_left(until - now),
                },
            )
        )  # fmt: skip
    return sent


async def engagement_pass(node: BastionNode, *, reminders: bool = True) -> None:
    """One pass: local sessions first (the end second matters most), then the store."""
    await end_local_sessions(node)
    await end_due(node)
    if reminders:
        await send_reminders(node)


async def run_engagements(node: BastionNode) -> None:
    """Run ``engagement_pass`` every time-box poll until cancelled (reminders less often)."""
    last_reminders = -math.inf
    while True:
        await asyncio.sleep(node.live.poll_interval)
        now = node.clock()
        remind = now - last_reminders >= REMINDER_INTERVAL
        try:
            await engagement_pass(node, reminders=remind)
        except StoreUnavailable:  # logged once by the store; /healthz says it
            continue
        except Exception:  # keep the pass alive through a store hiccup
            log.exception("engagement pass failed; retrying")
            continue
        if remind:
            last_reminders = now


# --- admin side: checks and the audited change --------------------------------------------


def check_new_user(
    store: Store,
    *,
    name: str,
    role: Role,
    sponsor: str | None,
    until: float | None,
    require_end_date: bool,
    now: float,
) -> None:
    """Refuse a new user's engagement that breaks the rules (raises UsageError).

    A contractor needs an end date unless ``[users] require_end_date = false``; an
    end date needs a sponsor (someone to remind and to extend it) who is an
    existing user other than a contractor, and lies in the future.
    """
    if role is Role.CONTRACTOR and until is None and require_end_date:
        raise UsageError(
            f"contractor {name} needs an end date: --sponsor NAME --until DATE "
            "(e.g. 2027-01-31); [users] require_end_date = false allows none"
        )
    if until is not None:
        if until <= now:
            raise UsageError(f"--until {format_time(until)} is not in the future")
        if sponsor is None:
            raise UsageError("an end date needs a sponsor: --sponsor NAME (reminded, may extend)")
    if sponsor is not None:
        check_sponsor(store, sponsor, name)


def check_sponsor(store: Store, sponsor: str, name: str) -> User:
    """The sponsor, if it may sponsor ``name`` (raises UsageError)."""
    found = store.get_user(sponsor)
    if found is None:
        raise UsageError(f"no user named '{sponsor}' to sponsor {name}; add them first")
    if found.role is Role.CONTRACTOR or found.name == name:
        raise UsageError(f"{sponsor} cannot sponsor {name}: a sponsor is an admin or approver")
    return found


def set_engagement(
    store: Store,
    origin: Origin,
    name: str,
    *,
    until: float | None = None,
    sponsor: str | None = None,
    org: str | None = None,
    now: float,
) -> User:
    """Change a user's end date (the sponsor or an admin), sponsor or org (an admin).

    ``origin.actor`` is the acting bastion user (``--as``). Audits
    ``user.set-engagement``. Raises NotFound, or Refused when the actor may not.
    """
    actor = store.get_user(origin.actor)
    if actor is None or actor.disabled:
        raise Refused(f"no enabled user named '{origin.actor}' to act as")
    with store.audited_change(origin.actor, actions.USER_SET_ENGAGEMENT, name, now) as c:
        user = c.user(name)
        admin = actor.role is Role.ADMIN
        if until is not None and not (admin or (user.sponsor and actor.name == user.sponsor)):
            who = f"its sponsor ({user.sponsor}) or an admin" if user.sponsor else "an admin"
            raise Refused(f"{actor.name} may not change the end of {name}'s engagement: {who} may")
        if (sponsor is not None or org is not None) and not admin:
            raise Refused(f"only an admin may change the sponsor or organisation of {name}")
        if until is not None and until <= now:
            raise UsageError(f"--until {format_time(until)} is not in the future")
        if sponsor is not None:
            check_sponsor(store, sponsor, name)
        fields: dict[str, object] = {}
        if until is not None:
            fields["until"] = until
        if sponsor is not None:
            fields["sponsor"] = sponsor
        if org is not None:
            fields["org"] = org
        after = c.set_engagement(name, **fields)
        c.details.update(
            origin.details, until=after.engagement_until, before=user.engagement_until,
            sponsor=after.sponsor, org=after.org, acting_role=actor.role.value,
        )  # fmt: skip
    return after
