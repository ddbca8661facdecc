"""Authorisation: is there a grant, active at this instant, for this user, target and login?

Pure policy over the user's grants for one target. Refusals name exactly what is
missing ("no grant for web1", "grant #12 expired at …") so a contractor knows
whom to ask for what.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from bastion.errors import AccessDenied
from bastion.store.models import GRANT_OPTIONS, Grant, GrantState


def format_time(t: float) -> str:
    """A grant boundary as people read it in refusals and listings (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def why_not(grant: Grant, now: float) -> str:
    """Why ``grant`` does not let anyone in at ``now`` (for refusals and ``bastion access``)."""
    state = grant.state_at(now)
    if state is GrantState.REVOKED:
        by = f" by {grant.revoked_by}" if grant.revoked_by else ""
        at = f" at {format_time(grant.revoked_at)}" if grant.revoked_at else ""
        return f"grant #{grant.id} was revoked{at}{by}"
    if state is GrantState.EXPIRED:
        return f"grant #{grant.id} expired at {format_time(grant.not_after)}"
    if state is GrantState.PENDING:
        return f"grant #{grant.id} is pending approval"
    if now < grant.not_before:
        return f"grant #{grant.id} starts at {format_time(grant.not_before)}"
    return f"grant #{grant.id} is not usable"  # pragma: no cover - all states covered above


def is_usable(grant: Grant, now: float) -> bool:
    """Active, started and not yet ended at ``now``."""
    return grant.state_at(now) is GrantState.ACTIVE and grant.not_before <= now < grant.not_after


def _longest_or_why_not(usable: Sequence[Grant], explain: Sequence[Grant], now: float) -> Grant:
    """The usable grant ending last (fewest surprises mid-session); with none, refuse
    by explaining the state of the most recent grant in ``explain``."""
    if usable:
        return max(usable, key=lambda g: (g.not_after, g.id))
    latest = max(explain, key=lambda g: (g.not_after, g.id))
    raise AccessDenied(why_not(latest, now))


def authorize(
    grants: Sequence[Grant],
    target_name: str,
    login: str | None,
    now: float,
    default_login: str | None = None,
) -> Grant:
    """Pick the grant that lets the user in as ``login`` (None: the grant's own login).

    ``grants`` are the user's grants for this target, in any state. When several
    are usable the one ending last wins (fewest surprises mid-session).

    Raises AccessDenied naming the missing piece.
    """
    if not grants:
        raise AccessDenied(f"no grant for {target_name}")
    usable = [g for g in grants if is_usable(g, now)]
    if login is not None:
        matching = [g for g in usable if g.login == login]
        if not matching and usable:
            allowed = ", ".join(sorted({g.login or "?" for g in usable}))
            raise AccessDenied(
                f"no grant for {target_name} as login '{login}' (granted: {allowed})"
            )
        usable = matching
    elif len({g.login for g in usable}) > 1:
        preferred = [g for g in usable if g.login == default_login]
        usable = preferred or usable
    return _longest_or_why_not(usable, grants, now)


def authorize_database(
    grants: Sequence[Grant], target_name: str, credset: str | None, now: float
) -> Grant:
    """Pick the grant that lets the user use credential set ``credset`` of a database target.

    ``credset`` None means "the one I was granted": fine when every usable grant
    names the same set, refused (naming the choices) when they differ, so a
    contractor never gets more privilege than they asked for. The PostgreSQL
    proxy calls this at every connection, so revoking a grant also ends the use
    of the database tokens issued under it.

    Raises AccessDenied naming the missing piece.
    """
    if not grants:
        raise AccessDenied(f"no grant for {target_name}")
    usable = [g for g in grants if is_usable(g, now)]
    if credset is not None:
        matching = [g for g in usable if g.credset == credset]
        if not matching and usable:
            allowed = ", ".join(sorted({g.credset or "?" for g in usable}))
            raise AccessDenied(
                f"no grant for {target_name} with credential set '{credset}' (granted: {allowed})"
            )
        usable = matching
    else:
        names = sorted({g.credset or "?" for g in usable})
        if len(names) > 1:
            raise AccessDenied(
                f"your grants for {target_name} allow several credential sets "
                f"({', '.join(names)}); name one, e.g. database '{target_name}/{names[0]}' "
                f"or 'db-token {target_name} {names[0]}'"
            )
    same_set = [g for g in grants if credset is None or g.credset == credset]
    return _longest_or_why_not(usable, same_set or grants, now)


def require_option(grant: Grant, *options: str) -> None:
    """Refuse unless the grant allows at least one of ``options`` (e.g. "sftp", "scp").

    Raises AccessDenied telling the user which option to ask for.
    """
    unknown = set(options) - GRANT_OPTIONS
    if unknown:
        raise ValueError(f"unknown grant option(s): {', '.join(sorted(unknown))}")
    if not grant.options.intersection(options):
        wanted = " or ".join(options)
        raise AccessDenied(
            f"grant #{grant.id} does not allow {wanted}; "
            f"ask an admin for a grant with --allow {options[0]}"
        )


def parse_options(text: str | Iterable[str]) -> frozenset[str]:
    """Parse ``--allow scp,sftp`` into a validated set (raises ValueError naming the bad one)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    opts = frozenset(i.strip() for i in items if i.strip())
    unknown = opts - GRANT_OPTIONS
    if unknown:
        raise ValueError(
            f"unknown grant option(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(sorted(GRANT_OPTIONS))}"
        )
    return opts
