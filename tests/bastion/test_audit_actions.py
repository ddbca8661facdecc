"""The audit action names: a contract, listed once, used everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bastion
from bastion import audit_actions as actions

#: Every fixed action name, spelled out: changing one breaks stored rows' meaning and
#: every filter on it, so it must be a deliberate edit here too.
CONTRACT = {
    "node.start", "node.stop", "node.reload", "node.reload-refused", "login.ok", "login.failed",
    "user.locked", "agent.allowed",
    "agent.refused", "certificate.issued", "session.start", "session.end",
    "session.refused", "session.terminated", "session.terminate-requested",
    "session.recovered", "recording.failed", "recording.repacked",
    "recording.repack-failed", "file.audit-stopped", "forward.open", "forward.close",
    "forward.refused", "forward.terminated", "pg.cancel", "db-token.issue",
    "db-token.refused", "db-token.revoke", "control-token.revoke", "control.watch",
    "user.add", "user.disable", "user.enable", "user.lock", "user.unlock",
    "user.reset-mfa", "user.add-key", "user.control-token", "user.totp-code",
    "user.set-groups", "user.set-engagement", "engagement.ended", "engagement.reminded",
    "target.add", "target.remove", "target.set-policy", "grant.add",
    "grant.revoke",
    "request.created", "request.approved", "request.denied", "request.lapsed",
    "request.break-glass", "request.reviewed", "request.dropped",
    "notify.failed",
    "policy.rule-add", "policy.rule-remove", "policy.shadow", "policy.unanalysable",
    "user.set-role", "user.set-keys", "target.update",
    "target.label", "profile.add", "profile.set", "profile.remove",

    "policy.hold-approved", "policy.hold-denied", "policy.hold-dropped",
    "node.drain",

    "address.blocked", "address.unblocked",

    "recording.uploaded",

    "channel.refused",

    "session.search",
}  # fmt: skip

#: An audit call and the first lines of its arguments.
_CALL = re.compile(r"(?:\.audit|append_audit|audited_change)\((?:[^()]|\([^()]*\)){0,400}", re.S)
_LITERAL = re.compile(r"""["']([a-z-]+\.[a-z.-]+)["']""")


def test_the_names_are_the_contract() -> None:
    assert actions.ALL == CONTRACT


def test_every_literal_action_in_bastion_is_a_known_one() -> None:
    """Call sites not yet converted to the constants still use only known names."""
    root = Path(bastion.__file__).parent
    seen: set[str] = set()
    for path in root.rglob("*.py"):
        for call in _CALL.finditer(path.read_text()):
            seen.update(m.group(1) for m in _LITERAL.finditer(call.group(0)))
    unknown = {s for s in seen if s not in actions.ALL and not s.startswith(actions.PREFIXES)}
    assert not unknown, f"audit actions missing from bastion.audit_actions: {sorted(unknown)}"


def test_builders() -> None:
    assert actions.file_op("upload") == "file.upload"
    assert actions.upstream_failure("refused") == "upstream.refused"
    assert actions.policy_decision("deny") == "policy.deny"
    assert actions.alert("mfa-failures") == "alert.mfa-failures"
    assert actions.alert("mfa-failures").startswith(actions.PREFIXES)
    for bad in ("", "a b", "x.y"):
        with pytest.raises(ValueError, match="alert names"):
            actions.alert(bad)
    assert actions.token_revoke("db") == "db-token.revoke"
    assert actions.token_revoke("control") == "control-token.revoke"
    with pytest.raises(ValueError, match="no token purpose"):
        actions.token_revoke("api")
