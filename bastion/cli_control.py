"""``bastion control ...`` (the control API from a shell) and ``bastion user control-token``.

``bastion control sessions`` and ``bastion control watch ID --raw`` talk to a running
node exactly as the TUI does (through ``ControlClient``), so they double as a way to
check the API without the TUI. ``bastion user control-token NAME`` issues the token a
remote admin needs for the TCP listener.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bastion import audit_actions as actions
from bastion.cli_shared import actor, opened
from bastion.config import load_config
from bastion.control.auth import CONTROL_ROLES, token_hash
from bastion.control.client import ControlClient
from bastion.control.messages import ControlError, LiveEnd, LiveOutput, Snapshot
from bastion.errors import ConfigError, NotFound
from bastion.grants import format_time
from bastion.store.models import TokenPurpose
from bastion.timeparse import parse_duration

CONTROL_TOKEN_PREFIX = "bct_"  # noqa: S105  a public prefix


def _operator(args: argparse.Namespace) -> str:
    name = args.as_user or os.environ.get("BASTION_OPERATOR")
    if not name:
        raise ConfigError("say which bastion admin/auditor you are: --as NAME or $BASTION_OPERATOR")
    return str(name)


async def _connect(args: argparse.Namespace) -> ControlClient:
    config = load_config(args.config)
    if config.control.socket is None:
        raise ConfigError("[control] socket is off in the config; set control.socket")
    try:
        return await ControlClient.connect(str(config.control.socket), user=_operator(args))
    except ControlError as e:
        raise ConfigError(str(e)) from e


async def _sessions(args: argparse.Namespace) -> int:
    client = await _connect(args)
    try:
        rows = await client.list_sessions(
            live=True if args.live else None, user=args.user, target=args.target, limit=args.limit
        )
    finally:
        await client.close()
    if args.json:
        print(json.dumps([asdict(s) for s in rows], indent=2))
        return 0
    for s in rows:
        state = "LIVE" if s.live else (s.end_reason or "ended")
        print(
            f"{s.id}  {s.user:<16} {s.target:<12} {s.protocol:<8} "
            f"{format_time(s.started_at)}  {state}"
        )
    return 0


async def _watch(args: argparse.Namespace) -> int:
    client = await _connect(args)
    out = sys.stdout.buffer
    try:
        async for event in client.watch(args.id):
            if isinstance(event, Snapshot):
                if args.raw:
                    out.write(event.screen_bytes)
                else:
                    print(f"[{event.cols}x{event.rows} at +{event.offset:.1f}s]", flush=True)
                    out.write(event.screen_bytes)
            elif isinstance(event, LiveOutput):
                out.write(event.data)
            elif isinstance(event, LiveEnd) and not args.raw:
                out.write(f"\r\n[session ended: {event.reason}]\r\n".encode())
            out.flush()
    except ControlError as e:
        raise ConfigError(str(e)) from e
    finally:
        await client.close()
    return 0


async def _terminate(args: argparse.Namespace) -> int:
    client = await _connect(args)
    try:
        await client.terminate(args.id, args.reason)
    except ControlError as e:
        raise ConfigError(str(e)) from e
    finally:
        await client.close()
    print(f"session {args.id}: termination requested")
    return 0


def _run(coro: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        result: int = asyncio.run(coro(args))
        return result

    return handler


cmd_control_sessions = _run(_sessions)
cmd_control_watch = _run(_watch)
cmd_control_terminate = _run(_terminate)


def cmd_control_token(args: argparse.Namespace) -> int:
    """Issue a control-API token for an admin, auditor or approver (printed once, stored hashed)."""
    with opened(args) as (_config, store):
        user = store.get_user(args.name)
        if user is None:
            raise NotFound(f"no user named '{args.name}'; see 'bastion user list'")
        if user.role not in CONTROL_ROLES:
            raise ConfigError(
                f"user {args.name} is a {user.role.value}; control tokens are for admins, "
                "auditors and approvers"
            )
        now = time.time()
        token = CONTROL_TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = store.add_token(
            purpose=TokenPurpose.CONTROL,
            user_id=user.id,
            token_hash=token_hash(token),
            expires_at=now + parse_duration(args.ttl),
            now=now,
            created_from=actor(),
        )
        store.append_audit(
            actor(), actions.USER_CONTROL_TOKEN, args.name, {"token": record.id}, time.time()
        )
    print(token)
    print(
        f"control token #{record.id} for {args.name}, valid until "
        f"{format_time(record.expires_at)}; it is shown only now",
        file=sys.stderr,
    )
    return 0
