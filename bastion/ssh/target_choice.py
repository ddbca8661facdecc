"""Which target a session channel is for, when the user name does not say.

``ssh alice@bastion web1 CMD`` names it in the command, ``ssh -t alice@bastion``
gets a menu of live grants, ``ssh alice@bastion grants`` lists them and
``ssh alice@bastion db-token pg1 [CREDSET]`` issues a database token for the
PostgreSQL listener, and ``request``/``requests``/``approve``/``deny``/``drop``
are the access-request built-ins (``bastion.ssh.request_dialogue``). A built-in's
word wins over a target of that name in the command form; such a target is still
reached as ``ssh alice%NAME@bastion`` or from the menu. This mixin holds that
dialogue so the relay module stays about relaying.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncssh

from bastion.db_tokens import DbTokenDenied, connection_help, issue_for_request
from bastion.grants import format_time, is_usable
from bastion.service import BastionNode
from bastion.ssh.login_name import LoginName, valid_name
from bastion.ssh.menu import USAGE, LineInput, choose, render_menu
from bastion.ssh.request_commands import COMMANDS as REQUEST_COMMANDS
from bastion.ssh.request_commands import CommandError
from bastion.ssh.request_dialogue import RequestDialogue
from bastion.store.models import Grant, Target, TargetKind, User

DB_TOKEN_USAGE = "usage: ssh USER@BASTION db-token TARGET [CREDSET]\n"  # noqa: S105  help text
DB_TOKEN_HELP = "  ssh alice@BASTION db-token DB     password for psql (DB [CREDSET])\n"  # noqa: S105  help text


@dataclass(frozen=True)
class ConnectionContext:
    """Who is on the other end of a client connection."""

    node: BastionNode
    user: User
    login_name: LoginName
    client_addr: str
    key_fingerprint: str | None


@dataclass(frozen=True)
class PtyRequest:
    """The client's terminal as requested."""

    term_type: str
    width: int
    height: int
    pixwidth: int
    pixheight: int
    modes: dict[int, int]


class Refusal(Exception):
    """A session is refused before it reaches the target; the message is shown to the user."""

    def __init__(self, reason: str, message: str, exit_status: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.exit_status = exit_status


class TargetChoice:
    """The target-choosing half of ``RelaySession`` (menu, command form, built-ins)."""

    ctx: ConnectionContext
    node: BastionNode
    chan: asyncssh.SSHServerChannel[bytes] | None
    pty: PtyRequest | None
    kind: str
    command: str | None
    line: LineInput | None
    _line_ready: asyncio.Event | None
    pending: bytearray
    closed: bool

    if TYPE_CHECKING:

        def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
            """Provided by the relay (RelaySession)."""

    async def _target_from_request(self) -> tuple[str, str | None]:
        if self.kind == "exec" and self.command is not None:
            words = self.command.strip().split(None, 1)
            if not words:
                raise Refusal("usage", USAGE, 2)
            first = words[0]
            if first in ("grants", "help", "--help"):
                await self._builtin(first)
            if first == "db-token":
                await self._db_token(words[1].split() if len(words) > 1 else [])
            if first in REQUEST_COMMANDS:
                await self._request_command(first, words[1] if len(words) > 1 else "")
            if not valid_name(first):
                raise Refusal("usage", f"'{first}' is not a target name\r\n{USAGE}", 2)
            rest = words[1] if len(words) > 1 else ""
            self.command = rest or None
            if self.command is None:
                self.kind = "shell"
            return first, None
        if self.kind == "shell" and self.pty is not None:
            grant = await self._menu()
            assert grant.target_name is not None  # noqa: S101  expanded: one view per target
            return grant.target_name, grant.login
        raise Refusal("usage", USAGE.replace("\n", "\r\n") if self.pty else USAGE, 2)

    async def _live_grants(self) -> list[Grant]:
        """Usable grants now, a profile grant once per target its selector matches now."""
        now = self.node.clock()
        grants = await self.node.call(
            self.node.store.list_grants, user_id=self.ctx.user.id, active_at=now, expand=True
        )
        return [g for g in grants if is_usable(g, now)]

    async def _builtin(self, name: str) -> None:
        if name == "grants":
            grants = await self._live_grants()
            targets = await self.node.call(self.node.store.list_targets)
            kinds = {t.id: t.kind.value for t in targets}
            lines = [
                f"#{g.id}\t{g.target_name}\t{kinds.get(g.target_id or 0, '?')}"
                f"\t{g.login or g.credset or '-'}\tuntil {format_time(g.not_after)}"
                f"\t{','.join(sorted(g.options)) or '-'}"
                + (f"\tprofile {g.profile_name}" if g.profile_name else "")
                for g in grants
            ] or ["no active grants"]
            text = "\n".join(lines) + "\n"
        else:
            text = USAGE + DB_TOKEN_HELP
        if self.pty is not None:
            text = text.replace("\n", "\r\n")
        assert self.chan is not None  # noqa: S101  set on channel open
        self.chan.write(text.encode())
        raise Refusal("builtin", "", 0)

    async def _menu(self) -> Grant:
        assert self.chan is not None  # noqa: S101  set on channel open
        grants = await self._live_grants()
        self.chan.write(render_menu(self.ctx.user.name, grants).encode())
        if not grants:
            raise Refusal("no-grant", "", 1)
        for _attempt in range(3):
            self.line = LineInput()
            self._line_ready = asyncio.Event()
            if self.pending:
                data, self.pending = bytes(self.pending), bytearray()
                self.data_received(data, None)
            await self._line_ready.wait()
            line, self.line = self.line, None
            if self.closed or line.cancelled or not line.buffer.strip():
                raise Refusal("menu-quit", "", 0)
            chosen = choose(grants, line.buffer)
            if chosen is not None:
                self.chan.pause_reading()
                return chosen
            self.chan.write(b"No such choice. Number or name: ")
        raise Refusal("menu-quit", "too many invalid choices", 1)

    def _postgres_refusal(self, target: Target) -> Refusal:
        """Refuse an SSH session to a database target, saying how to reach it instead."""
        user = self.ctx.user.name
        return Refusal(
            "postgres-target",
            f"{target.name} is a PostgreSQL target, not an SSH host: get a database token "
            f"with 'ssh {user}@BASTION db-token {target.name}' and connect with psql",
        )

    def _pg_endpoint(self) -> tuple[str, int]:
        """Host and port contractors' database clients should dial (for db-token's help)."""
        pg = self.node.config.postgres
        host = pg.public_host or socket.getfqdn()
        port = pg.listen[1] if pg.listen is not None else 6432
        return host, port

    async def _databases(self) -> str:
        """The databases a token can be had for now, directly or through a profile grant."""
        grants = await self._live_grants()
        targets = await self.node.call(self.node.store.list_targets)
        databases = {t.id for t in targets if t.kind is TargetKind.POSTGRES}
        lines = [
            f"  {g.target_name} {g.credset or '-'}\tgrant #{g.id} until {format_time(g.not_after)}"
            + (f"\tprofile {g.profile_name}" if g.profile_name else "")
            for g in grants
            if g.target_id in databases
        ]
        if not lines:
            return "no database grants now\n"
        return "databases you can get a token for now (TARGET CREDSET):\n" + "\n".join(lines) + "\n"

    async def _db_token(self, args: list[str]) -> None:
        """``db-token TARGET [CREDSET]``: issue a database token, print it and how to use it."""
        node, user = self.node, self.ctx.user
        if not 1 <= len(args) <= 2 or not all(valid_name(a) for a in args):
            text = DB_TOKEN_USAGE + (await self._databases() if not args else "")
            raise Refusal("builtin", "bastion: " + text.replace("\n", "\r\n"), 2)
        target_name, credset = args[0], (args[1] if len(args) > 1 else None)
        ttl = node.config.postgres.token_ttl
        try:
            target, issued = await node.call(
                issue_for_request,
                node.store,
                user=user,
                target_name=target_name,
                credset=credset,
                now=node.clock(),
                ttl=ttl,
                created_from=self.ctx.client_addr,
            )
        except DbTokenDenied as e:
            await node.audit(
                user.name,
                "db-token.refused",
                target_name,
                reason=e.reason,
                message=str(e),
                credset=credset,
                client=self.ctx.client_addr,
            )
            raise Refusal("builtin", f"bastion: {e}\r\n", 1) from e
        record = issued.record
        await node.audit(
            user.name,
            "db-token.issue",
            target.name,
            token=record.id,
            credset=record.credset,
            grant=issued.grant.id,
            expires=record.expires_at,
            client=self.ctx.client_addr,
        )
        host, port = self._pg_endpoint()
        text = connection_help(issued, target=target, user=user.name, host=host, port=port, ttl=ttl)
        if self.pty is not None:
            text = text.replace("\n", "\r\n")
        assert self.chan is not None  # noqa: S101  set on channel open
        self.chan.write(text.encode())
        raise Refusal("builtin", "", 0)

    async def _request_command(self, name: str, rest: str) -> None:
        """An access-request built-in; on a terminal, Ctrl-C or Enter stops a ``--wait``."""
        assert self.chan is not None  # noqa: S101  set on channel open
        chan, pty = self.chan, self.pty is not None
        if pty:
            self.line, self._line_ready = LineInput(), asyncio.Event()
            if self.pending:
                data, self.pending = bytes(self.pending), bytearray()
                self.data_received(data, None)
                chan.resume_reading()

        def write(text: str) -> None:
            if not self.closed:
                chan.write((text.replace("\n", "\r\n") if pty else text).encode())

        def stopped() -> bool:
            return self.closed or (self.line is not None and self.line.done)

        ctx = self.ctx
        dialogue = RequestDialogue(self.node, ctx.user, ctx.client_addr, write, stopped)
        try:
            status = await dialogue.run(name, rest)
        except CommandError as e:
            message = f"bastion: {e}".rstrip("\n").replace("\n", "\r\n") + "\r\n"
            raise Refusal("builtin", message, e.status) from e
        finally:
            self.line = None
        raise Refusal("builtin", "", status)
