"""Admin subcommands: users, targets, grants, audit.

Each command opens the state store named by the config, does one thing, audits
it with the operator as actor, and prints a table or ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import asyncssh

from bastion.ca import CertificateAuthority
from bastion.config import Config, load_config
from bastion.errors import BastionError, NotFound
from bastion.grants import format_time, parse_options
from bastion.mfa import new_totp_secret, provisioning_uri, qr_text
from bastion.secretbox import SecretBox
from bastion.ssh.login_name import valid_name
from bastion.store import Store, open_store
from bastion.store.models import Role, TargetKind
from bastion.target_setup import default_principal, render_target_setup
from bastion.timeparse import parse_duration, parse_time

Sub = Any  # argparse's private _SubParsersAction
AddOpt = Callable[[argparse.ArgumentParser], None]


def actor() -> str:
    """Who is running the CLI, for audit rows ($BASTION_ACTOR overrides the login name)."""
    return os.environ.get("BASTION_ACTOR") or f"cli:{getpass.getuser()}"


@contextmanager
def opened(args: argparse.Namespace) -> Iterator[tuple[Config, Store]]:
    """Config and store for one command; the store is closed afterwards."""
    config = load_config(args.config)
    store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
    try:
        yield config, store
    finally:
        store.close()


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if k != "totp_secret"}
    if isinstance(obj, list | tuple | frozenset | set):
        items = [_jsonable(v) for v in obj]
        return sorted(items) if isinstance(obj, frozenset | set) else items
    return obj


def emit(args: argparse.Namespace, rows: Sequence[Any], table: Callable[[Any], str]) -> None:
    """Print ``rows`` as JSON (--json) or one formatted line each."""
    if getattr(args, "json", False):
        print(json.dumps([_jsonable(r) for r in rows], indent=2, default=str))
        return
    for r in rows:
        print(table(r))


# --- users --------------------------------------------------------------------------


def _read_keys(paths: Sequence[str]) -> list[str]:
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


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a user with SSH key(s) and a fresh TOTP enrolment."""
    if not valid_name(args.name):
        raise ValueError(f"'{args.name}' is not a valid user name (letters, digits, . _ -)")
    keys = _read_keys(args.key or [])
    if not keys:
        raise ValueError("give at least one --key PUBKEY_FILE")
    with opened(args) as (config, store):
        secret = new_totp_secret()
        user = store.add_user(args.name, Role(args.role), keys, secret, time.time())
        store.append_audit(
            actor(),
            "user.add",
            user.name,
            {"role": user.role.value, "keys": len(keys)},
            time.time(),
        )
        if args.json:
            out = _jsonable(user) | {
                "otpauth_uri": provisioning_uri(secret, user.name, config.mfa.issuer)
            }
            print(json.dumps(out, indent=2))
        else:
            print(f"added {user.role.value} {user.name} with {len(keys)} key(s)")
            _print_enrolment(config, user.name, secret)
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    """List users with role, key count and lock state."""
    now = time.time()
    with opened(args) as (_c, store):
        users = store.list_users()

    def row(u: Any) -> str:
        state = (
            "disabled"
            if u.disabled
            else (
                f"locked until {format_time(u.locked_until)}"
                if u.locked_until and u.locked_until > now
                else "ok"
            )
        )
        mfa = "totp" if u.totp_secret else "no-mfa"
        return f"{u.name:<20} {u.role.value:<10} keys={len(u.ssh_keys)} {mfa:<6} {state}"

    emit(args, users, row)
    return 0


def _user_change(args: argparse.Namespace, action: str) -> int:
    with opened(args) as (config, store):
        if action == "disable":
            store.set_user_disabled(args.name, True)
        elif action == "enable":
            store.set_user_disabled(args.name, False)
        elif action == "unlock":
            user = store.get_user(args.name)
            if user is None:
                raise NotFound(f"no user named '{args.name}'; see 'bastion user list'")
            store.lock_user(user.id, None)
            store.clear_auth_failures(user.id)
        elif action == "lock":
            user = store.get_user(args.name)
            if user is None:
                raise NotFound(f"no user named '{args.name}'; see 'bastion user list'")
            now = time.time()
            until = now + parse_duration(args.duration) if args.duration else now + 10 * 365 * 86400
            store.lock_user(user.id, until)
            live = store.list_sessions(live=True, user=user.name, limit=10_000)
            for s in live:
                store.request_termination(s.id, actor(), f"user {user.name} locked", now)
            print(
                f"user {user.name} locked until {format_time(until)}; "
                f"{len(live)} live session(s) will be ended"
            )
        elif action == "reset-mfa":
            secret = new_totp_secret()
            store.reset_totp(args.name, secret)
            _print_enrolment(config, args.name, secret)
        elif action == "add-key":
            for key in _read_keys(args.key):
                store.add_user_key(args.name, key)
        store.append_audit(actor(), f"user.{action}", args.name, {}, time.time())
    print(f"user {args.name}: {action} done")
    return 0


def add_user_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion user ...``"""
    user = sub.add_parser("user", help="manage users (contractors, admins, auditors)")
    us = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = us.add_parser("add", help="add a user and print their TOTP enrolment")
    p.add_argument("name")
    p.add_argument(
        "--key", action="append", metavar="PUBKEY_FILE", help="OpenSSH public key file (repeatable)"
    )
    p.add_argument("--role", choices=[r.value for r in Role], default="contractor")
    add_config(p)
    add_json(p)
    p.set_defaults(func=cmd_user_add)
    p = us.add_parser("list", help="list users")
    add_config(p)
    add_json(p)
    p.set_defaults(func=cmd_user_list)
    for action, text in [
        ("disable", "refuse all logins of a user"),
        ("enable", "allow a disabled user again"),
        ("unlock", "lift an MFA lockout"),
        ("reset-mfa", "issue a new TOTP secret (prints the enrolment)"),
    ]:
        p = us.add_parser(action, help=text)
        p.add_argument("name")
        add_config(p)
        p.set_defaults(func=lambda a, _x=action: _user_change(a, _x))
    p = us.add_parser("lock", help="refuse a user's logins and end their live sessions")
    p.add_argument("name")
    p.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="how long (e.g. 1h); default: until 'bastion user unlock'",
    )
    add_config(p)
    p.set_defaults(func=lambda a: _user_change(a, "lock"))
    p = us.add_parser("add-key", help="add an SSH public key to a user")
    p.add_argument("name")
    p.add_argument("--key", action="append", required=True, metavar="PUBKEY_FILE")
    add_config(p)
    p.set_defaults(func=lambda a: _user_change(a, "add-key"))


# --- targets --------------------------------------------------------------------------


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError as e:
        raise ValueError(f"'{text}' must be HOST or HOST:PORT") from e


def _scan_host_key(host: str, port: int) -> str:
    async def scan() -> asyncssh.SSHKey | None:
        return await asyncssh.get_server_host_key(host, port, server_host_key_algs=["ssh-ed25519"])

    key = asyncio.run(scan())
    if key is None:
        raise BastionError(f"{host}:{port} offered no host key")
    return key.export_public_key("openssh").decode().strip()


def cmd_target_add(args: argparse.Namespace) -> int:
    """Add an SSH target with its pinned host key (or host CA)."""
    if not valid_name(args.name):
        raise ValueError(f"'{args.name}' is not a valid target name (letters, digits, . _ -)")
    host, port = _host_port(args.ssh, 22)
    host_keys: list[str] = []
    if args.host_key:
        host_keys = _read_keys([args.host_key])
    elif args.scan:
        line = _scan_host_key(host, port)
        fp = asyncssh.import_public_key(line).get_fingerprint("sha256")
        print(f"scanned {host}:{port}: {fp}")
        print(
            "compare this fingerprint with the host's own (ssh-keygen -lf /etc/ssh/"
            "ssh_host_ed25519_key.pub) before granting access"
        )
        host_keys = [line]
    host_ca = _read_keys(args.host_ca) if args.host_ca else []
    if not host_keys and not host_ca:
        raise ValueError("pin the target's host key: --host-key FILE, --host-ca FILE or --scan")
    principal = args.principal or default_principal(args.name)
    with opened(args) as (config, store):
        target = store.add_target(
            name=args.name,
            kind=TargetKind.SSH,
            host=host,
            port=port,
            logins=args.login,
            principal=principal,
            host_keys=host_keys,
            host_ca_keys=host_ca,
            now=time.time(),
        )
        store.append_audit(
            actor(),
            "target.add",
            target.name,
            {"host": host, "port": port, "logins": list(args.login), "principal": principal},
            time.time(),
        )
    if args.json:
        print(json.dumps(_jsonable(target), indent=2))
    else:
        print(
            f"added target {target.name} ({host}:{port}), logins {', '.join(target.logins)}, "
            f"principal {principal}"
        )
        print(f"next: bastion target setup {target.name}   # lines to apply on the host")
    return 0


def cmd_target_list(args: argparse.Namespace) -> int:
    """List targets."""
    with opened(args) as (_c, store):
        targets = store.list_targets()
    emit(
        args,
        targets,
        lambda t: (
            f"{t.name:<20} {t.kind.value:<8} {t.host}:{t.port:<6} "
            f"logins={','.join(t.logins)} principal={t.principal}"
        ),
    )
    return 0


def cmd_target_remove(args: argparse.Namespace) -> int:
    """Remove a target; its active grants are revoked."""
    with opened(args) as (_c, store):
        store.remove_target(args.name, time.time())
        store.append_audit(actor(), "target.remove", args.name, {}, time.time())
    print(f"removed target {args.name}")
    return 0


def cmd_target_setup(args: argparse.Namespace) -> int:
    """Print what to apply on the target host."""
    with opened(args) as (config, store):
        target = store.get_target(args.name)
        if target is None:
            raise NotFound(f"no target named '{args.name}'; see 'bastion target list'")
        ca = CertificateAuthority.load(config.ca_key)
    print(render_target_setup(target, ca.public_key_line()), end="")
    return 0


def add_target_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion target ...``"""
    target = sub.add_parser("target", help="manage targets (SSH hosts)")
    ts = target.add_subparsers(dest="target_command", metavar="ACTION", required=True)
    p = ts.add_parser("add", help="add an SSH target")
    p.add_argument("name")
    p.add_argument("--ssh", required=True, metavar="HOST:PORT", help="address of the target sshd")
    p.add_argument(
        "--login",
        action="append",
        required=True,
        help="login (OS user) the bastion may use there; repeatable, first is default",
    )
    p.add_argument("--principal", help="certificate principal (default: bastion-NAME)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--host-key", metavar="FILE", help="pin this host public key file")
    key.add_argument(
        "--scan",
        action="store_true",
        help="fetch the host key now and pin it (check the printed fingerprint)",
    )
    p.add_argument(
        "--host-ca",
        action="append",
        metavar="FILE",
        help="trust host certificates signed by this CA public key",
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=cmd_target_add)
    p = ts.add_parser("list", help="list targets")
    add_config(p)
    add_json(p)
    p.set_defaults(func=cmd_target_list)
    p = ts.add_parser("remove", help="remove a target (revokes its grants)")
    p.add_argument("name")
    add_config(p)
    p.set_defaults(func=cmd_target_remove)
    p = ts.add_parser("setup", help="print the sshd_config lines and principals file for a target")
    p.add_argument("name")
    add_config(p)
    p.set_defaults(func=cmd_target_setup)


# --- grants ---------------------------------------------------------------------------


def cmd_grant_add(args: argparse.Namespace) -> int:
    """Grant a user time-boxed access to a target."""
    now = time.time()
    start = parse_time(args.start, now) if args.start else now
    if args.duration:
        end = start + parse_duration(args.duration)
    elif args.until:
        end = parse_time(args.until, now)
    else:
        raise ValueError("say how long: --for DURATION (e.g. 2h) or --until TIME")
    if end <= start:
        raise ValueError("the grant would end before it starts")
    options = parse_options(args.allow or "")
    with opened(args) as (_c, store):
        user = store.get_user(args.user)
        if user is None:
            raise NotFound(f"no user named '{args.user}'; see 'bastion user list'")
        target = store.get_target(args.target)
        if target is None:
            raise NotFound(f"no target named '{args.target}'; see 'bastion target list'")
        login = args.login or target.default_login
        if login not in target.logins:
            raise ValueError(
                f"target {target.name} has no login '{login}' "
                f"(configured: {', '.join(target.logins)})"
            )
        grant = store.add_grant(
            user_id=user.id,
            target_id=target.id,
            login=login,
            credset=None,
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
            "grant.add",
            f"grant #{grant.id}",
            {
                "user": user.name,
                "target": target.name,
                "login": login,
                "not_before": start,
                "not_after": end,
                "options": sorted(options),
                "reason": grant.reason,
            },
            now,
        )
    if args.json:
        print(json.dumps(_jsonable(grant), indent=2))
    else:
        print(
            f"grant #{grant.id}: {user.name} -> {target.name} as {login} "
            f"from {format_time(start)} until {format_time(end)}"
            + (f" allowing {','.join(sorted(options))}" if options else "")
        )
    return 0


def cmd_grant_list(args: argparse.Namespace) -> int:
    """List grants, optionally only those active now."""
    now = time.time()
    with opened(args) as (_c, store):
        user_id = target_id = None
        if args.user:
            u = store.get_user(args.user)
            if u is None:
                raise NotFound(f"no user named '{args.user}'")
            user_id = u.id
        if args.target:
            t = store.get_target(args.target)
            if t is None:
                raise NotFound(f"no target named '{args.target}'")
            target_id = t.id
        grants = store.list_grants(
            user_id=user_id, target_id=target_id, active_at=now if args.active else None
        )
    emit(
        args,
        grants,
        lambda g: (
            f"#{g.id:<5} {g.user_name:<16} {g.target_name:<16} {g.login or '-':<10} "
            f"{g.state_at(now).value:<8} {format_time(g.not_before)} -> {format_time(g.not_after)} "
            f"{','.join(sorted(g.options)) or '-'} {g.reason}"
        ),
    )
    return 0


def cmd_grant_revoke(args: argparse.Namespace) -> int:
    """Revoke a grant; its live sessions end within a second."""
    grant_id = int(str(args.id).lstrip("#"))
    with opened(args) as (_c, store):
        grant = store.revoke_grant(grant_id, actor(), time.time())
        store.append_audit(
            actor(),
            "grant.revoke",
            f"grant #{grant.id}",
            {"user": grant.user_name, "target": grant.target_name},
            time.time(),
        )
    print(f"revoked grant #{grant.id} ({grant.user_name} -> {grant.target_name})")
    return 0


def add_grant_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion grant ...``"""
    grant = sub.add_parser("grant", help="manage time-boxed grants")
    gs = grant.add_subparsers(dest="grant_command", metavar="ACTION", required=True)
    p = gs.add_parser("add", help="grant USER access to TARGET for a while")
    p.add_argument("user")
    p.add_argument("target")
    p.add_argument("--login", help="login on the target (default: the target's first login)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 30m, 2h, 1d")
    when.add_argument("--until", metavar="TIME", help="ISO 8601 (UTC unless a zone is given)")
    p.add_argument("--from", dest="start", metavar="TIME", help="start time (default: now)")
    p.add_argument("--reason", help="ticket or reason, shown in audits")
    p.add_argument(
        "--allow",
        metavar="OPTIONS",
        help="comma list of scp, sftp, port-forward, agent (default: none)",
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=cmd_grant_add)
    p = gs.add_parser("list", help="list grants")
    p.add_argument("--active", action="store_true", help="only grants usable right now")
    p.add_argument("--user")
    p.add_argument("--target")
    add_config(p)
    add_json(p)
    p.set_defaults(func=cmd_grant_list)
    p = gs.add_parser("revoke", help="revoke a grant (ends its live sessions)")
    p.add_argument("id", help="grant number, e.g. 12 or #12")
    add_config(p)
    p.set_defaults(func=cmd_grant_revoke)


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


def add_audit_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion audit``"""
    p = sub.add_parser("audit", help="show the audit log")
    p.add_argument("--since", help="ISO time, or a duration back from now (e.g. 1h)")
    p.add_argument("--user", help="only rows by this actor")
    p.add_argument("--action", help="only actions starting with this (e.g. login.)")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--verify", action="store_true", help="also check the hash chain")
    add_config(p)
    add_json(p)
    p.set_defaults(func=cmd_audit)
