"""Which target a session channel is for, when the user name does not say.

``ssh alice@bastion web1 CMD`` names it in the command, ``ssh -t alice@bastion``
gets a menu of live grants, ``ssh alice@bastion grants`` lists them. This mixin
holds that dialogue so the relay module stays about relaying.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncssh

from bastion.grants import format_time, is_usable
from bastion.service import BastionNode
from bastion.ssh.login_name import LoginName, valid_name
from bastion.ssh.menu import USAGE, LineInput, choose, render_menu
from bastion.store.models import Grant, User


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
            if not valid_name(first):
                raise Refusal("usage", f"'{first}' is not a target name\r\n{USAGE}", 2)
            rest = words[1] if len(words) > 1 else ""
            self.command = rest or None
            if self.command is None:
                self.kind = "shell"
            return first, None
        if self.kind == "shell" and self.pty is not None:
            grant = await self._menu()
            return grant.target_name, grant.login
        raise Refusal("usage", USAGE.replace("\n", "\r\n") if self.pty else USAGE, 2)

    async def _live_grants(self) -> list[Grant]:
        now = self.node.clock()
        grants = await self.node.call(
            self.node.store.list_grants, user_id=self.ctx.user.id, active_at=now
        )
        return [g for g in grants if is_usable(g, now)]

    async def _builtin(self, name: str) -> None:
        if name == "grants":
            grants = await self._live_grants()
            lines = [
                f"#{g.id}\t{g.target_name}\t{g.login or '-'}\tuntil {format_time(g.not_after)}"
                f"\t{','.join(sorted(g.options)) or '-'}"
                for g in grants
            ] or ["no active grants"]
            text = "\n".join(lines) + "\n"
        else:
            text = USAGE
        if self.pty is not None:
            text = text.replace("\n", "\r\n")
        assert self.chan is not None
        self.chan.write(text.encode())
        raise Refusal("builtin", "", 0)

    async def _menu(self) -> Grant:
        assert self.chan is not None
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
