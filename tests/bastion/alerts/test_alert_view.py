"""The control API's view of alerts: audit rows in, newest first, rule changes out."""

from __future__ import annotations

from bastion.control.alert_view import alert_counts, is_alert, list_alerts
from bastion.session.hooks import Decision, Verdict
from bastion.session.reasons import EndReason
from tests.bastion.alerts.test_detectors import arm
from tests.bastion.session.kit import Kit
from tests.bastion.session.test_hooks import Fixed


async def test_alerts_newest_first_with_session_offsets_and_live_flags(kit: Kit) -> None:
    arm(kit, statement_rows=10)
    kit.node.hooks.register(Fixed(Decision(Verdict.WARN, "careful", rule="prod", hook="guard")))
    ended, _ = await kit.live_session()
    ended.rows_returned("select * from big", 500)
    ended.closed(EndReason.EXIT)
    await ended.finish()
    kit.clock.now += 30
    live, _ = await kit.live_session()
    kit.clock.now += 12
    assert await live.judge("command", "systemctl restart db", "exact")
    kit.node.store.append_audit("root", "policy.rule-add", "no-rm", {"action": "deny"})
    await kit.settle()

    found = list_alerts(kit.node.store)
    assert [a.action for a in found] == ["policy.warn", "alert.statement-rows"]
    warn, rows = found
    assert (warn.session, warn.live, warn.offset) == (live.id, True, 12.0)
    assert warn.marker == "policy warn" and warn.user == "alice" and warn.target == "web1"
    assert warn.what == "rule prod: command 'systemctl restart db' (careful)"
    assert (rows.session, rows.live, rows.marker) == (ended.id, False, "alert statement-rows")
    assert rows.what == "limit=10 rows=500 sql=select * from big"
    assert warn.id > rows.id
    assert list_alerts(kit.node.store, limit=1) == [warn]

    counts = alert_counts(kit.node.store, [(live.id, live.started_at)])
    assert counts == {live.id: 1}
    assert alert_counts(kit.node.store, []) == {}


def test_rule_changes_are_not_alerts() -> None:
    assert is_alert("alert.mfa-failures") and is_alert("policy.deny")
    assert is_alert("policy.shadow") and not is_alert("policy.rule-add")
    assert not is_alert("session.start")
