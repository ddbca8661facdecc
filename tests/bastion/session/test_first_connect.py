"""``[requests] clock = "first-connect"``: a requested grant's duration starts at its first use."""

from __future__ import annotations

from bastion.request_flow import RequestFlow
from bastion.request_hooks import FirstConnectClock
from bastion.requests_config import RequestsConfig
from bastion.session.core import run_admission_hooks
from bastion.store.models import Role
from tests.bastion.session.kit import Kit


async def test_the_clock_starts_at_the_first_connection_and_only_once(kit: Kit) -> None:
    store = kit.node.store
    config = RequestsConfig(clock="first-connect", first_connect_ceiling=86400.0)
    flow = RequestFlow(store, config, kit.clock)
    store.add_user(name="appr", role=Role.APPROVER, ssh_keys=[], totp_secret=None, now=kit.clock())
    out = flow.create(kit.user, targets=[kit.target.name], duration=600, reason="x")
    (grant,) = flow.approve(out.request.id, "appr").grants
    approved_at = kit.clock()
    assert grant.not_after == approved_at + 86400.0  # usable, ending at the ceiling
    kit.node.hooks.register(FirstConnectClock(kit.node))

    kit.clock.now += 2 * 3600  # first connection two hours after approval
    access = kit.access()
    assert access.grant.id == grant.id
    await run_admission_hooks(
        kit.node, access, user=kit.user, protocol="ssh", kind="shell", client_addr="x"
    )
    started = store.get_grant(grant.id)
    assert started is not None and started.not_after == kit.clock() + 600

    s, _adapter = await kit.live_session()  # the grant now has a session row
    assert s.grant.id == grant.id
    kit.clock.now += 60
    await run_admission_hooks(
        kit.node, kit.access(), user=kit.user, protocol="ssh", kind="shell", client_addr="x"
    )
    again = store.get_grant(grant.id)
    assert again is not None and again.not_after == started.not_after  # not restarted
    s.terminate("admin-terminated")
    _adapter.legs_down("admin-terminated")
    await kit.settle()
    await s.finish()


async def test_grants_typed_by_an_admin_are_left_alone(kit: Kit) -> None:
    kit.node.hooks.register(FirstConnectClock(kit.node))
    before = kit.node.store.get_grant(kit.grant.id)
    await run_admission_hooks(
        kit.node, kit.access(), user=kit.user, protocol="ssh", kind="shell", client_addr="x"
    )
    assert kit.node.store.get_grant(kit.grant.id) == before
