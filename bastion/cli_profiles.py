"""Profile subcommands: named label selectors that grants and requests may name.

``bastion profile add staging-web --select 'env=staging,role=web' --login deploy
--max 4h`` defines a profile; ``bastion grant add alice --profile staging-web --for
4h`` grants it. What a profile reaches is decided when the contractor connects,
from the targets' labels at that moment (``bastion target label``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bastion.admin_actions import Origin
from bastion.cli_shared import opened
from bastion.cli_targets import _approver_names
from bastion.errors import NotFound, UsageError
from bastion.grants import format_time, parse_options
from bastion.profile_actions import add_profile, profile_details, remove_profile
from bastion.store import Store
from bastion.store.models import Profile
from bastion.timeparse import format_duration, parse_duration


def _line(p: Profile, reached: list[str]) -> str:
    state = "" if p.removed_at is None else f" (removed {format_time(p.removed_at)})"
    return (
        f"{p.name:<20} select {p.selector:<28} logins={','.join(p.logins) or '-'} "
        f"allow={','.join(sorted(p.options)) or '-'} "
        f"max={format_duration(p.max_duration) if p.max_duration else '-'} "
        f"reaches={','.join(reached) or '-'}{state}"
    )


def _json(p: Profile, reached: list[str]) -> dict[str, Any]:
    out = profile_details(p)
    out["reaches"] = reached
    return out


def _reach(store: Store, p: Profile) -> list[str]:
    return [t.name for t in store.targets_reached_by(p)]


def cmd_profile_add(args: argparse.Namespace) -> int:
    """Define an access profile (a label selector plus what grants under it allow)."""
    try:
        options = parse_options(args.allow or "")
    except ValueError as e:
        raise UsageError(str(e)) from e
    max_duration = parse_duration(args.max) if args.max else None
    if args.approvals is not None and args.approvals < 1:
        raise UsageError("--approvals must be at least 1")
    with opened(args) as (_c, store):
        approvers = _approver_names(store, args.approvers, False) or []
        profile = add_profile(
            store, Origin.cli(), name=args.name, selector=args.select, logins=args.login or [],
            credset=args.credset, options=sorted(options), max_duration=max_duration,
            approvals=args.approvals, approvers=approvers, now=time.time(),
        )  # fmt: skip
        reached = _reach(store, profile)
    if args.json:
        print(json.dumps(_json(profile, reached), indent=2))
    else:
        print(f"added profile {profile.name}: selects {profile.selector}")
        print(
            f"reaches now: {', '.join(reached) or 'no target (label some: bastion target label)'}"
        )
    return 0


def cmd_profile_list(args: argparse.Namespace) -> int:
    """List profiles with what each reaches now (removed ones too with --all)."""
    with opened(args) as (_c, store):
        found = [(p, _reach(store, p)) for p in store.list_profiles(all=args.all)]
    if args.json:
        print(json.dumps([_json(p, r) for p, r in found], indent=2))
    else:
        for p, r in found:
            print(_line(p, r))
    return 0


def cmd_profile_show(args: argparse.Namespace) -> int:
    """One profile: its selector, what it allows and the targets it reaches now."""
    with opened(args) as (config, store):
        p = store.get_profile(args.name)
        if p is None:
            raise NotFound(f"no profile named '{args.name}'; see 'bastion profile list'")
        reached = _reach(store, p)
    if args.json:
        print(json.dumps(_json(p, reached), indent=2))
        return 0
    print(f"profile {p.name} (created {format_time(p.created_at)} by {p.created_by})")
    print(f"  selects         {p.selector}")
    print(f"  reaches now     {', '.join(reached) or '-'}")
    print(f"  logins          {', '.join(p.logins) or '(the target default)'}")
    if p.credset:
        print(f"  credential set  {p.credset}")
    print(f"  allows          {','.join(sorted(p.options)) or '-'}")
    most = format_duration(p.max_duration) if p.max_duration else "no cap of its own"
    print(f"  max duration    {most}")
    print(
        f"  approvals       {p.approvals if p.approvals is not None else 'default'}"
        f" from {', '.join(p.approvers) or 'any approver or admin'}"
    )
    return 0


def cmd_profile_remove(args: argparse.Namespace) -> int:
    """Retire a profile: its grants reach nothing, their live sessions end within a poll."""
    with opened(args) as (_c, store):
        remove_profile(store, Origin.cli(), args.name, time.time())
    print(f"removed profile {args.name}; its grants reach nothing now")
    return 0
