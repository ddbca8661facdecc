"""Grant and token subcommands: who may use which target, and the tokens derived from that.

``bastion grant add`` gives a user a time-boxed grant for an SSH target (as a
login) or a PostgreSQL target (as a credential set). ``bastion token list`` and
``bastion token revoke`` show and end the database tokens contractors fetch
with ``ssh BASTION db-token TARGET``; revoking the grant ends them too.
"""

from __future__ import annotations

import argparse
import json
import time

from bastion import audit_actions as actions
from bastion.admin_actions import Origin, revoke_grant
from bastion.cli_shared import actor, emit, jsonable, opened
from bastion.errors import NotFound, UsageError
from bastion.grants import format_time, parse_options
from bastion.profile_actions import add_profile_grant
from bastion.store.models import Grant, Target, TargetKind, TokenPurpose, TokenRecord
from bastion.timeparse import parse_duration, parse_time


def _grant_window(args: argparse.Namespace, now: float) -> tuple[float, float]:
    start = parse_time(args.start, now) if args.start else now
    if args.duration:
        end = start + parse_duration(args.duration)
    elif args.until:
        end = parse_time(args.until, now)
    else:
        raise UsageError("say how long: --for DURATION (e.g. 2h) or --until TIME")
    if end <= start:
        raise UsageError("the grant would end before it starts")
    return start, end


def _ssh_login(args: argparse.Namespace, target: Target) -> str | None:
    if args.credset:
        raise UsageError(
            f"--credset is for PostgreSQL targets; {target.name} is an SSH target (use --login)"
        )
    login = args.login or target.default_login
    if login not in target.logins:
        raise UsageError(
            f"target {target.name} has no login '{login}' (configured: {', '.join(target.logins)})"
        )
    return login


def _database_credset(args: argparse.Namespace, target: Target) -> str:
    if args.login:
        raise UsageError(
            f"--login is for SSH targets; {target.name} is a PostgreSQL target: "
            "grant a credential set with --credset NAME"
        )
    if args.allow:
        raise UsageError(f"--allow options are for SSH targets; {target.name} is a database")
    names = [c.name for c in target.credsets]
    if args.credset is None:
        if len(names) != 1:
            raise UsageError(
                f"target {target.name} has several credential sets ({', '.join(names)}); "
                "choose one with --credset NAME"
            )
        return names[0]
    if args.credset not in names:
        raise UsageError(
            f"target {target.name} has no credential set '{args.credset}' "
            f"(configured: {', '.join(names)})"
        )
    return str(args.credset)


def cmd_grant_add(args: argparse.Namespace) -> int:
    """Grant a user time-boxed access to a target (a login, or a database credential set)."""
    now = time.time()
    start, end = _grant_window(args, now)
    try:
        options = parse_options(args.allow or "")
    except ValueError as e:
        raise UsageError(str(e)) from e
    if (args.target is None) == (args.profile is None):
        raise UsageError("name a TARGET or --profile NAME (one of them)")
    if args.profile is not None:
        return _grant_profile(args, start, end, sorted(options) if args.allow else None, now)
    with opened(args) as (_c, store):
        user = store.get_user(args.user)
        if user is None:
            raise NotFound(f"no user named '{args.user}'; see 'bastion user list'")
        target = store.get_target(args.target)
        if target is None:
            raise NotFound(f"no target named '{args.target}'; see 'bastion target list'")
        login: str | None = None
        credset: str | None = None
        if target.kind == TargetKind.POSTGRES:
            credset = _database_credset(args, target)
        else:
            login = _ssh_login(args, target)
        grant = store.add_grant(
            user_id=user.id,
            target_id=target.id,
            login=login,
            credset=credset,
            not_before=start,
            not_after=end,
            reason=args.reason or "",
            requested_by=actor(),
            approved_by=actor(),
            options=options,
            now=now,
        )
        store.append_audit(
            actor(),
            actions.GRANT_ADD,
            f"grant #{grant.id}",
            {
                "user": user.name,
                "target": target.name,
                "login": login,
                "credset": credset,
                "not_before": start,
                "not_after": end,
                "options": sorted(options),
                "reason": grant.reason,
            },
            now,
        )
    if args.json:
        print(json.dumps(jsonable(grant), indent=2))
    else:
        how = f"with credential set {credset}" if credset else f"as {login}"
        print(
            f"grant #{grant.id}: {user.name} -> {target.name} {how} "
            f"from {format_time(start)} until {format_time(end)}"
            + (f" allowing {','.join(sorted(options))}" if options else "")
        )
        if credset:
            print(
                f"{user.name} gets a password with: ssh {user.name}@BASTION db-token {target.name}"
            )
    return 0


def _grant_profile(
    args: argparse.Namespace, start: float, end: float, options: list[str] | None, now: float
) -> int:
    with opened(args) as (_c, store):
        grant = add_profile_grant(
            store, Origin.cli(), user=args.user, profile=args.profile, not_before=start,
            not_after=end, login=args.login, credset=args.credset, options=options,
            reason=args.reason or "", now=now,
        )  # fmt: skip
        reached = [t.name for t in store.targets_reached_by(args.profile)]
    if args.json:
        print(json.dumps(jsonable(grant) | {"reaches": reached}, indent=2))
        return 0
    print(
        f"grant #{grant.id}: {grant.user_name} -> profile {args.profile} "
        f"from {format_time(start)} until {format_time(end)}"
        + (f" as {grant.login}" if grant.login else "")
        + (f" allowing {','.join(sorted(grant.options))}" if grant.options else "")
    )
    print(f"reaches now (labels decide at each connect): {', '.join(reached) or '-'}")
    return 0


def _grant_line(g: Grant, now: float) -> str:
    where = g.target_name or f"profile:{g.profile_name}"
    return (
        f"#{g.id:<5} {g.user_name:<16} {where:<16} {g.login or g.credset or '-':<10} "
        f"{g.state_at(now).value:<8} {format_time(g.not_before)} -> {format_time(g.not_after)} "
        f"{','.join(sorted(g.options)) or '-'} {g.reason}"
    )


def cmd_grant_list(args: argparse.Namespace) -> int:
    """List grants, ended and revoked ones too (``--all`` says so), or only those active now.

    ``--target`` names a live target, or else a removed one: its grants stay listed.
    """
    now = time.time()
    with opened(args) as (_c, store):
        user_id = target_id = None
        removed: str | None = None
        if args.user:
            u = store.get_user(args.user)
            if u is None:
                raise NotFound(f"no user named '{args.user}'")
            user_id = u.id
        if args.target:
            t = store.get_target(args.target)
            if t is not None:
                target_id = t.id
            elif any(x.name == args.target for x in store.list_targets(all=True)):
                removed = args.target
            else:
                raise NotFound(f"no target named '{args.target}'")
        grants = store.list_grants(
            user_id=user_id, target_id=target_id, active_at=now if args.active else None
        )
    if removed is not None:
        grants = [g for g in grants if g.target_name == removed]
    emit(args, grants, lambda g: _grant_line(g, now))
    return 0


def cmd_grant_revoke(args: argparse.Namespace) -> int:
    """Revoke a grant; its live sessions end within a second and its tokens stop working."""
    grant_id = int(str(args.id).lstrip("#"))
    with opened(args) as (_c, store):
        grant = revoke_grant(store, Origin.cli(), grant_id, time.time())
    where = grant.target_name or f"profile {grant.profile_name}"
    print(f"revoked grant #{grant.id} ({grant.user_name} -> {where})")
    return 0


# --- tokens ---------------------------------------------------------------------------


def token_state(t: TokenRecord, now: float) -> str:
    """live, expired, or revoked (by whom), as listings show it."""
    if t.revoked_at is not None:
        return f"revoked by {t.revoked_by or '?'}"
    return "live" if now < t.expires_at else "expired"


def _token_line(t: TokenRecord, now: float) -> str:
    where = f"{t.target_name or '-'}/{t.credset}" if t.credset else t.target_name or "-"
    used = format_time(t.last_used_at) if t.last_used_at else "never"
    return (
        f"#{t.id:<5} {t.user_name:<16} {t.purpose.value:<7} {where:<24} "
        f"{token_state(t, now):<10} expires {format_time(t.expires_at)} "
        f"used {used} from {t.created_from}"
    )


def cmd_token_list(args: argparse.Namespace) -> int:
    """List bearer tokens (never the tokens themselves): live ones unless --all."""
    now = time.time()
    with opened(args) as (_c, store):
        if args.user and store.get_user(args.user) is None:
            raise NotFound(f"no user named '{args.user}'; see 'bastion user list'")
        tokens = store.list_tokens(
            user=args.user,
            purpose=TokenPurpose(args.purpose) if args.purpose else None,
            live_only=not args.all,
            now=now,
        )
    emit(args, tokens, lambda t: _token_line(t, now))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke a token now; connections already open are not cut (revoke the grant for that)."""
    token_id = int(str(args.id).lstrip("#"))
    now = time.time()
    with opened(args) as (_c, store):
        token = store.revoke_token(token_id, actor(), now)
        store.append_audit(
            actor(),
            actions.token_revoke(token.purpose.value),
            f"token #{token.id}",
            {"user": token.user_name, "target": token.target_name, "credset": token.credset},
            now,
        )
    print(f"revoked token #{token.id} of {token.user_name}")
    return 0
