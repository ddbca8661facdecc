"""Admin subcommands: users and audit (the helpers every admin command shares are in
``cli_shared``).

Each command opens the state store named by the config, does one thing, audits
it with the operator as actor, and prints a table or ``--json``. Targets live in
``cli_targets``, grants and tokens in ``cli_grants``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion import admin_actions, engagements
from bastion import audit_actions as actions
from bastion.admin_actions import UNTIL_UNLOCKED, Origin
from bastion.cli_shared import actor, emit, jsonable, opened
from bastion.config import Config
from bastion.engagements import user_state
from bastion.errors import BastionError, UsageError
from bastion.grants import format_time
from bastion.mfa import new_totp_secret, provisioning_uri, qr_text
from bastion.ssh.login_name import valid_name
from bastion.store.models import Role
from bastion.timeparse import parse_duration, parse_time

# --- users --------------------------------------------------------------------------


def read_keys(paths: Sequence[str]) -> list[str]:
    """OpenSSH public key lines from files (raises BastionError naming a bad file)."""
    import asyncssh  # the SSH stack only for the commands that read keys

    keys: list[str] = []
    for p in paths:
        try:
            text = Path(p).read_text()
        except OSError as e:
            raise BastionError(f"cannot read public key file {p}: {e.strerror}") from e
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                asyncssh.import_public_key(line)
            except (asyncssh.KeyImportError, ValueError) as e:
                raise BastionError(f"{p} is not an OpenSSH public key file: {e}") from e
            keys.append(line)
    return keys


def _print_enrolment(config: Config, name: str, secret: str) -> None:
    uri = provisioning_uri(secret, name, config.mfa.issuer)
    print(f"TOTP enrolment for {name} — scan the QR code or enter the secret in an authenticator:")
    print(qr_text(uri))
    print(f"otpauth URI: {uri}")
    print(f"secret:      {secret}")


def group_names(values: Sequence[str] | None) -> list[str]:
    """Group names from repeatable, comma-separated options (``sre`` or ``@sre``)."""
    names = [g.strip().lstrip("@") for v in values or () for g in v.split(",") if g.strip()]
    for g in names:
        if not valid_name(g):
            raise UsageError(f"'{g}' is not a valid group name (letters, digits, . _ -)")
    return sorted(set(names))


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a user with SSH key(s) and a fresh TOTP enrolment."""
    if not valid_name(args.name):
        raise UsageError(f"'{args.name}' is not a valid user name (letters, digits, . _ -)")
    keys = read_keys(args.key or [])
    if not keys:
        raise UsageError("give at least one --key PUBKEY_FILE")
    groups = group_names(args.group)
    now = time.time()
    until = parse_time(args.until, now) if args.until else None
    with opened(args) as (config, store):
        engagements.check_new_user(
            store, name=args.name, role=Role(args.role), sponsor=args.sponsor, until=until,
            require_end_date=config.users.require_end_date, now=now,
        )  # fmt: skip
        secret = new_totp_secret()
        user = store.add_user(args.name, Role(args.role), keys, secret, now)
        if groups:
            store.set_user_groups(user.id, groups)
        if args.sponsor or until is not None or args.org:
            user = store.set_engagement(user.name, sponsor=args.sponsor, until=until, org=args.org)
        store.append_audit(
            actor(),
            actions.USER_ADD,
            user.name,
            {
                "role": user.role.value, "keys": len(keys), "groups": groups,
                "sponsor": user.sponsor, "until": user.engagement_until, "org": user.org,
                **Origin.cli().details,
            },
            time.time(),
        )  # fmt: skip
        if args.json:
            out = jsonable(user) | {
                "groups": groups,
                "otpauth_uri": provisioning_uri(secret, user.name, config.mfa.issuer),
            }
            print(json.dumps(out, indent=2))
        else:
            print(f"added {user.role.value} {user.name} with {len(keys)} key(s)")
            if user.engagement_until is not None:
                print(
                    f"engagement ends {format_time(user.engagement_until)} "
                    f"(sponsor {user.sponsor}); extend with 'bastion user set {user.name} "
                    f"--until DATE --as {user.sponsor}'"
                )
            _print_enrolment(config, user.name, secret)
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    """List every user (nothing is hidden: disabled and ended users stay listed)."""
    now = time.time()
    with opened(args) as (_c, store):
        users = store.list_users()
        groups = {u.id: store.user_groups(u.id) for u in users}
    if args.json:
        print(
            json.dumps(
                [
                    jsonable(u) | {"groups": list(groups[u.id]), "state": user_state(u, now)}
                    for u in users
                ],
                indent=2,
            )
        )
        return 0

    def row(u: Any) -> str:
        state = user_state(u, now)
        if state == "locked":
            state = f"locked until {format_time(u.locked_until)}"
        if u.engagement_until is not None:
            state += f" until={format_time(u.engagement_until)} sponsor={u.sponsor or '-'}"
        mfa = "totp" if u.totp_secret else "no-mfa"
        in_groups = ",".join(groups[u.id]) or "-"
        return (
            f"{u.name:<20} {u.role.value:<10} keys={len(u.ssh_keys)} {mfa:<6} "
            f"groups={in_groups:<16} {state}"
        )

    emit(args, users, row)
    return 0


def cmd_user_set(args: argparse.Namespace) -> int:
    """Change a user's groups (replace, add, remove) and/or engagement (--until, as --as)."""
    replace = group_names(args.group) if args.group is not None or args.no_groups else None
    add, remove = group_names(args.add_group), group_names(args.remove_group)
    engagement = args.until or args.sponsor or args.org
    if replace is None and not add and not remove and not engagement:
        raise UsageError(
            "say what to change: --group G, --add-group G, --remove-group G, --until DATE"
        )
    if engagement:
        _set_engagement(args)
        if replace is None and not add and not remove:
            return 0
    with opened(args) as (_c, store):
        now = admin_actions.set_user_groups(
            store, Origin.cli(), args.name, groups=replace, add=add, remove=remove,
            now=time.time(),
        )  # fmt: skip
    print(f"user {args.name}: groups {', '.join(now) or '(none)'}")
    return 0


def _set_engagement(args: argparse.Namespace) -> None:
    if not args.acting:
        raise UsageError("say who is changing the engagement: --as NAME (its sponsor or an admin)")
    now = time.time()
    until = parse_time(args.until, now) if args.until else None
    with opened(args) as (_c, store):
        origin = Origin(args.acting, Origin.cli().details)
        user = engagements.set_engagement(
            store, origin, args.name, until=until, sponsor=args.sponsor, org=args.org, now=now
        )
    end = format_time(user.engagement_until) if user.engagement_until else "none"
    print(f"user {user.name}: engagement ends {end}, sponsor {user.sponsor or '-'}")
    if user.disabled:
        print(f"user {user.name} is still disabled; an admin re-enables: bastion user enable")


_USER_ACTIONS = {
    "disable": actions.USER_DISABLE,
    "enable": actions.USER_ENABLE,
    "reset-mfa": actions.USER_RESET_MFA,
    "add-key": actions.USER_ADD_KEY,
}


def _user_change(args: argparse.Namespace, action: str) -> int:
    details: dict[str, Any] = {}
    with opened(args) as (config, store):
        if action == "disable":
            off = admin_actions.disable_user(store, Origin.cli(), args.name, None, time.time())
            print(
                f"user {off.user} disabled; {len(off.sessions)} live session(s) will be ended, "
                f"{off.tokens_revoked} token(s) revoked"
            )
        elif action == "enable":
            store.set_user_disabled(args.name, False)
        elif action == "unlock":
            admin_actions.unlock_user(store, Origin.cli(), args.name, time.time())
        elif action == "lock":
            now = time.time()
            span = parse_duration(args.duration) if args.duration else UNTIL_UNLOCKED
            done = admin_actions.lock_user(store, Origin.cli(), args.name, now + span, None, now)
            print(
                f"user {done.user} locked until {format_time(done.until)}; "
                f"{len(done.sessions)} live session(s) will be ended, "
                f"{done.tokens_revoked} token(s) revoked"
            )
        elif action == "reset-mfa":
            secret = new_totp_secret()
            store.reset_totp(args.name, secret)
            _print_enrolment(config, args.name, secret)
        elif action == "add-key":
            for key in read_keys(args.key):
                store.add_user_key(args.name, key)
        if action not in ("lock", "unlock", "disable"):  # those audit in their own transaction
            store.append_audit(actor(), _USER_ACTIONS[action], args.name, details, time.time())
    print(f"user {args.name}: {action} done")
    return 0


def cmd_user_change(args: argparse.Namespace) -> int:
    """``bastion user disable|enable|unlock|lock|reset-mfa|add-key`` (the sub-command names it)."""
    action: str = args.user_command
    return _user_change(args, action)


# --- audit ----------------------------------------------------------------------------


def cmd_audit(args: argparse.Namespace) -> int:
    """Show audit rows and check the hash chain."""
    now = time.time()
    since: float | None = None
    if args.since:
        try:
            since = now - parse_duration(args.since)
        except ValueError:
            since = parse_time(args.since, now)
    if args.follow or args.after is not None:
        return _follow_audit(args)
    with opened(args) as (_c, store):
        rows = store.list_audit(
            since=since, actor=args.user, action_prefix=args.action, limit=args.limit
        )
        broken = store.verify_audit_chain() if args.verify else None
    emit(
        args,
        rows,
        lambda e: (
            f"{format_time(e.at)} {e.actor:<16} {e.action:<22} {e.subject or '-':<16} "
            + " ".join(f"{k}={v}" for k, v in e.details.items() if v is not None)
        ),
    )
    if args.verify:
        if broken is None:
            print("audit chain intact", file=sys.stderr)
        else:
            print(f"audit chain BROKEN at row {broken}", file=sys.stderr)
            return 3
    return 0


def _follow_audit(args: argparse.Namespace) -> int:
    from bastion import cli_audit_feed

    with opened(args) as (_c, store):
        try:
            cursor = cli_audit_feed.start_cursor(args, store)
        except ValueError as e:
            raise UsageError(str(e)) from e
        if not args.follow:  # --after alone: what is there now, then stop
            for event in store.audit_after(
                cursor, actor=args.user, action_prefix=args.action, limit=args.limit
            ):
                print(cli_audit_feed.feed_line(event, args.json))
            return 0
        return cli_audit_feed.follow(args, store, cursor)
