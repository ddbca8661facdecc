"""Running the request built-ins on the node for one SSH channel.

The words are parsed by ``bastion.ssh.request_commands``; the workflow
(``node.requests``, a ``RequestFlow``) applies the rules and audits every step.
This module only calls it off the event loop, writes the answer, and for
``--wait`` polls the store until the request is decided, the client goes away
or the person stops waiting (Ctrl-C on a terminal).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from bastion.access_requests import APPROVER_ROLES, RequestRefused, approver_allowed
from bastion.errors import StoreError
from bastion.request_flow import RequestFlow
from bastion.service import BastionNode
from bastion.ssh.request_commands import (
    Approve,
    CommandError,
    Deny,
    DropGrant,
    ExtendRequest,
    ListRequests,
    NewRequest,
    approve_text,
    break_glass_text,
    created_text,
    decision_text,
    deny_text,
    drop_text,
    own_requests_text,
    parse,
    pending_text,
)
from bastion.store.models import AccessRequest, Grant, RequestKind, RequestState, User

WAIT_POLL = 0.5
"""Seconds between two reads of a request that ``--wait`` is waiting for."""


def decidable_by(flow: RequestFlow, approver: User) -> list[tuple[AccessRequest, int]]:
    """Pending requests ``approver`` may approve now, with the approvals each needs (blocking)."""
    store, now = flow.store, flow.clock()
    groups = store.user_groups(approver.id)
    found = []
    for r in store.list_requests(state=RequestState.PENDING):
        if r.lapses_at <= now:
            continue
        policy = flow.policy_of(r)
        try:
            approver_allowed(approver, groups, r, policy)
        except RequestRefused:
            continue
        found.append((r, policy.approvals))
    return found


@dataclass
class RequestDialogue:
    """One request built-in on one channel: run it, write the answer, return the exit status."""

    node: BastionNode
    user: User
    client_addr: str
    write: Callable[[str], None]
    """Text for the client's stdout (``\\n`` line ends; the caller adapts them to a PTY)."""
    stopped: Callable[[], bool]
    """True once the client is gone or asked to stop waiting."""
    poll: float = WAIT_POLL

    async def run(self, command: str, text: str) -> int:
        """Run ``command`` with the rest of the line; raises CommandError for the person."""
        cmd = parse(command, text, self.node.clock())
        try:
            if isinstance(cmd, NewRequest):
                return await self._request(cmd)
            if isinstance(cmd, ExtendRequest):
                return await self._extend(cmd)
            if isinstance(cmd, ListRequests):
                return await self._list(cmd)
            if isinstance(cmd, DropGrant):
                grant = await self.node.call(self.node.requests.drop, self.user, cmd.grant_id)
                self.write(drop_text(grant))
                return 0
            if isinstance(cmd, Approve):
                return await self._approve(cmd)
            return await self._deny(cmd)
        except StoreError as e:  # NotFound: an unknown request or grant
            if "no request #" in str(e):
                raise CommandError(str(e).split(";")[0]) from e
            raise CommandError(str(e)) from e
        except RequestRefused as e:
            raise CommandError(str(e)) from e

    async def _request(self, cmd: NewRequest) -> int:
        flow, user = self.node.requests, self.user
        if cmd.break_glass:
            out = await self.node.call(
                flow.break_glass, user, targets=cmd.targets, reason=cmd.reason,
                duration=cmd.duration, login=cmd.login, options=cmd.options,
                client_addr=self.client_addr,
            )  # fmt: skip
            self.write(break_glass_text(out.request, out.grants, out.approvers, cmd.duration))
            return 0
        assert cmd.duration is not None  # noqa: S101  parse requires --for here
        out = await self.node.call(
            flow.create, user, targets=cmd.targets, duration=cmd.duration, reason=cmd.reason,
            login=cmd.login, options=cmd.options, start_at=cmd.start_at,
            client_addr=self.client_addr, profile=cmd.profile,
        )  # fmt: skip
        reach = await self._reach(out.request)
        self.write(created_text(out.request, out.grants, out.approvers, out.needed, reach))
        if cmd.wait and out.request.state is RequestState.PENDING:
            return await self._wait(out.request.id)
        return 0

    async def _reach(self, request: AccessRequest) -> tuple[str, ...] | None:
        """What a profile request's profile reaches now (None for a target request)."""
        if request.profile is None:
            return None
        return await self.node.call(self.node.requests.reach_of, request)

    async def _extend(self, cmd: ExtendRequest) -> int:
        out = await self.node.call(
            self.node.requests.extend, self.user, grant_id=cmd.grant_id,
            duration=cmd.duration, reason=cmd.reason, client_addr=self.client_addr,
        )  # fmt: skip
        self.write(created_text(out.request, out.grants, out.approvers, out.needed))
        return await self._wait(out.request.id) if cmd.wait else 0

    async def _wait(self, request_id: int) -> int:
        """Poll until decided; 0 if approved, 1 if denied or lapsed (or stopped: 0)."""
        self.write("waiting for a decision (Ctrl-C stops waiting; the request stays)...\n")
        store = self.node.store
        while True:
            if self.stopped():
                self.write(f"stopped waiting; request #{request_id} stays pending\n")
                return 0
            request = await self.node.call(store.get_request, request_id)
            if request is None:
                raise CommandError(f"request #{request_id} is gone")
            if request.state is not RequestState.PENDING:
                break
            await asyncio.sleep(self.poll)
        self.write(decision_text(request, await self._grants_of(request)))
        return 0 if request.state is RequestState.APPROVED else 1

    async def _grants_of(self, request: AccessRequest) -> list[Grant]:
        ids = list(request.grant_ids)
        if request.kind is RequestKind.EXTEND and request.extends_grant_id is not None:
            ids = ids or [request.extends_grant_id]
        grants = [await self.node.call(self.node.store.get_grant, i) for i in ids]
        return [g for g in grants if g is not None]

    async def _list(self, cmd: ListRequests) -> int:
        store = self.node.store
        if not cmd.pending:
            mine = await self.node.call(store.list_requests, user_id=self.user.id, limit=50)
            self.write(own_requests_text(mine))
            return 0
        if self.user.role not in APPROVER_ROLES:
            raise CommandError(
                f"{self.user.name} is not an approver (role {self.user.role.value}); "
                "see your own requests with 'requests'"
            )
        found = await self.node.call(decidable_by, self.node.requests, self.user)
        reaches = {r.id: reach for r, _ in found if (reach := await self._reach(r)) is not None}
        self.write(pending_text(found, reaches))
        return 0

    async def _approve(self, cmd: Approve) -> int:
        out = await self.node.call(
            self.node.requests.approve, cmd.request_id, self.user.name, duration=cmd.duration,
            targets=cmd.targets, options=cmd.options, reason=cmd.reason,
        )  # fmt: skip
        self.write(approve_text(out.request, out.grants, out.approvers, out.needed))
        return 0

    async def _deny(self, cmd: Deny) -> int:
        out = await self.node.call(
            self.node.requests.deny, cmd.request_id, self.user.name, cmd.reason
        )
        self.write(deny_text(out.request))
        return 0
