"""Every audit action bastion writes, by name.

The action strings are a contract: auditors filter on them (``bastion audit
--action login.``), alerting and SIEM rules match them, and old rows keep them
forever. So they live here, once, as plain ``str`` constants (plain strings, not
an enum: they go straight into the audit table and the hash chain, and
``audit_actions.LOGIN_OK == "login.ok"`` on both sides of every comparison).
Change a value only with a note in the release and the decisions log.

Actions are ``<area>.<event>``. A few are built from a value at run time; their
builders are below the constants and ``PREFIXES`` lists their areas.
"""

from __future__ import annotations

from typing import Final

# --- node ---------------------------------------------------------------------------
NODE_START: Final = "node.start"
"""``bastion serve`` started (actor ``node``)."""
NODE_STOP: Final = "node.stop"
"""``bastion serve`` stopped cleanly (details: ``unsealed`` sessions, normally 0)."""
NODE_RELOAD: Final = "node.reload"
"""SIGHUP applied the file's live settings (details: ``applied``, ``needs_restart``)."""
NODE_RELOAD_REFUSED: Final = "node.reload-refused"
"""SIGHUP found a file that does not load; nothing changed (details: ``error``)."""
NODE_DRAIN: Final = "node.drain"
"""An admin asked a node to stop accepting and stop by a deadline (details: ``until``)."""

# --- logins (SSH) -------------------------------------------------------------------
LOGIN_OK: Final = "login.ok"
"""Key and TOTP accepted."""
LOGIN_FAILED: Final = "login.failed"
"""A login refused; ``reason`` says why (unknown-user, locked, wrong-code, ...)."""
USER_LOCKED: Final = "user.locked"
"""The MFA lockout locked a user after too many failures (``by: lockout``)."""
AGENT_ALLOWED: Final = "agent.allowed"
AGENT_REFUSED: Final = "agent.refused"
CERTIFICATE_ISSUED: Final = "certificate.issued"
"""An upstream certificate was signed (serial, key id, validity)."""

# --- sessions -----------------------------------------------------------------------
SESSION_START: Final = "session.start"
SESSION_END: Final = "session.end"
SESSION_REFUSED: Final = "session.refused"
SESSION_TERMINATED: Final = "session.terminated"
"""The node ended a session (grant ended, admin request, idle, node stop, ...)."""
SESSION_TERMINATE_REQUESTED: Final = "session.terminate-requested"
"""An admin asked for a session's end, from the CLI or the control API (both write this;
the control API wrote ``control.terminate`` before the two were unified)."""
SESSION_RECOVERED: Final = "session.recovered"
"""A session left open by a crashed node was closed at the next start."""

# --- recordings ---------------------------------------------------------------------
RECORDING_FAILED: Final = "recording.failed"
RECORDING_REPACKED: Final = "recording.repacked"
RECORDING_REPACK_FAILED: Final = "recording.repack-failed"
RECORDING_UPLOADED: Final = "recording.uploaded"
"""A sealed recording reached S3 storage; its spool copy is removed next."""

# --- files and forwarding -----------------------------------------------------------
FILE_AUDIT_STOPPED: Final = "file.audit-stopped"
"""The scp/sftp parser gave up on a stream: later transfers in it are not itemised."""
FORWARD_OPEN: Final = "forward.open"
FORWARD_CLOSE: Final = "forward.close"
FORWARD_REFUSED: Final = "forward.refused"
FORWARD_TERMINATED: Final = "forward.terminated"
CHANNEL_REFUSED: Final = "channel.refused"
"""A channel open over ``[ssh] max_channels_per_connection`` (refused at channel open)."""

# --- access requests (bastion.request_flow) ---------------------------------------
REQUEST_CREATED: Final = "request.created"
"""A contractor asked for access or an extension (details: request, duration, reason)."""
REQUEST_APPROVED: Final = "request.approved"
"""One approval (``final`` false while more are needed) or the decision with its grants."""
REQUEST_DENIED: Final = "request.denied"
"""An approver denied a request (details: reason)."""
REQUEST_LAPSED: Final = "request.lapsed"
"""Nobody decided within ``[requests] pending_ttl``."""
REQUEST_BREAK_GLASS: Final = "request.break-glass"
"""Immediate, capped access; reviewed afterwards."""
REQUEST_REVIEWED: Final = "request.reviewed"
"""A break-glass request's after-the-fact review was closed (details: note)."""
REQUEST_DROPPED: Final = "request.dropped"
"""A contractor gave a grant back early."""

# --- PostgreSQL and database tokens -------------------------------------------------
PG_CANCEL: Final = "pg.cancel"
DB_TOKEN_ISSUE: Final = "db-token.issue"
DB_TOKEN_REFUSED: Final = "db-token.refused"
DB_TOKEN_REVOKE: Final = "db-token.revoke"
CONTROL_TOKEN_REVOKE: Final = "control-token.revoke"

# --- control API --------------------------------------------------------------------
CONTROL_WATCH: Final = "control.watch"

# --- admin changes (CLI and control API) --------------------------------------------
USER_ADD: Final = "user.add"
USER_DISABLE: Final = "user.disable"
USER_ENABLE: Final = "user.enable"
USER_LOCK: Final = "user.lock"
"""An admin locked a user (the control API wrote ``control.lock`` before unification)."""
USER_UNLOCK: Final = "user.unlock"
USER_RESET_MFA: Final = "user.reset-mfa"
USER_ADD_KEY: Final = "user.add-key"
USER_SET_GROUPS: Final = "user.set-groups"
"""A user's groups changed (details: ``groups`` now, ``before``)."""
USER_SET_ENGAGEMENT: Final = "user.set-engagement"
"""A user's engagement changed (details: ``until``, ``before``, ``sponsor``, ``org``);
the actor is the sponsor or admin named by ``--as``."""
USER_CONTROL_TOKEN: Final = "user.control-token"
USER_TOTP_CODE: Final = "user.totp-code"
"""Someone printed a user's next TOTP code (``bastion totp-code``)."""
TARGET_ADD: Final = "target.add"
TARGET_REMOVE: Final = "target.remove"
TARGET_SET_POLICY: Final = "target.set-policy"
"""A target's request policy changed (details: ``approvals``, ``approvers``, ``max_request``)."""
GRANT_ADD: Final = "grant.add"
GRANT_REVOKE: Final = "grant.revoke"
USER_SET_ROLE: Final = "user.set-role"
"""``bastion apply`` changed a user's role (details: ``role``, ``before``)."""
USER_SET_KEYS: Final = "user.set-keys"
"""``bastion apply`` replaced a user's SSH keys (details: ``keys``, ``before``: counts)."""
TARGET_UPDATE: Final = "target.update"
"""``bastion apply`` changed a target in place (details: ``changes``, the new fields)."""

# --- guardrails (bastion.policy) -----------------------------------------------------
POLICY_RULE_ADD: Final = "policy.rule-add"
"""A guardrail rule was added (details: ``rule``, all its fields; ``before``)."""
POLICY_RULE_REMOVE: Final = "policy.rule-remove"
"""A guardrail rule was removed (details: ``rule``, all its fields as they were)."""
POLICY_SHADOW: Final = "policy.shadow"
"""A ``--shadow`` rule matched: reported, not enforced (details: ``rule``, ``text``)."""
POLICY_UNANALYSABLE: Final = "policy.unanalysable"
"""A command or statement could not be analysed (details: why, and what it got)."""
POLICY_HOLD_APPROVED: Final = "policy.hold-approved"
"""A held command was approved and runs (details: ``request``, ``approver``, ``text``)."""
POLICY_HOLD_DENIED: Final = "policy.hold-denied"
"""A held command was denied: by an approver, on ``[policy] hold_timeout``, or because
nobody can approve it (details: ``request``, ``outcome`` denied|lapsed|unapprovable,
``approver``, ``reason``)."""
POLICY_HOLD_DROPPED: Final = "policy.hold-dropped"
"""The session ended while its command was held; the request was dropped."""

# --- engagements (actor ``bastion``) -------------------------------------------------
ENGAGEMENT_ENDED: Final = "engagement.ended"
"""A contractor's engagement reached its end: user disabled, sessions ended, tokens and
pending requests revoked (details: ``until``, ``sponsor``, ``sessions``, ``tokens_revoked``,
``requests_dropped``). Written once, by the node that won the conditional update."""
ENGAGEMENT_REMINDED: Final = "engagement.reminded"
"""The sponsor was reminded of an engagement's end (details: ``days``, ``until``)."""

# --- labels and access profiles ---------------------------------------------------
TARGET_LABEL: Final = "target.label"
"""A target's labels changed (details: ``set``, ``removed``, ``labels`` now, ``before``)."""
PROFILE_ADD: Final = "profile.add"
"""An access profile was created (details: its fields)."""
PROFILE_SET: Final = "profile.set"
"""An access profile changed (details: its fields now, ``before``)."""
PROFILE_REMOVE: Final = "profile.remove"
"""An access profile was retired; its grants reach nothing (details: its fields as they were)."""

# --- notifications ------------------------------------------------------------------
NOTIFY_FAILED: Final = "notify.failed"
"""A notification did not reach a sink: last retry failed, dropped from a full queue, or
still pending at node stop (subject: the sink; details: ``event``, ``id``, ``error``)."""

# --- per-address login limits (bastion.login_guard) ---------------------------------
ADDRESS_BLOCKED: Final = "address.blocked"
"""A source reached ``[login_limits] address_max_failures`` failed logins and is refused
(subject: the source; details: ``until``, ``failures``, ``strikes``, ``last_user``)."""
ADDRESS_UNBLOCKED: Final = "address.unblocked"
"""An admin lifted a source's block (``bastion lockouts unblock``)."""

# --- search ---------------------------------------------------------------------------
SESSION_SEARCH: Final = "session.search"
"""Someone searched what sessions typed, showed or returned (searching is itself sensitive;
details: ``text``, ``regex``, ``kinds``, ``user``, ``target``, ``since``, ``hits``, ``via``)."""

# --- built at run time --------------------------------------------------------------
FILE_PREFIX: Final = "file."
UPSTREAM_PREFIX: Final = "upstream."
POLICY_PREFIX: Final = "policy."
ALERT_PREFIX: Final = "alert."
PREFIXES: Final = (FILE_PREFIX, UPSTREAM_PREFIX, POLICY_PREFIX, ALERT_PREFIX)
"""Areas whose second part comes from a value (a file operation, an upstream failure)."""


def file_op(op: str) -> str:
    """``file.<op>`` for one scp/sftp operation (upload, download, rename, ...)."""
    return FILE_PREFIX + op


def upstream_failure(reason: str) -> str:
    """``upstream.<reason>`` (host-key-mismatch, refused, unreachable, grant-ended)."""
    return UPSTREAM_PREFIX + reason


def policy_decision(verdict: str) -> str:
    """``policy.<verdict>`` (warn, hold, deny, terminate, lock) for a hook's decision."""
    return POLICY_PREFIX + verdict


def alert(name: str) -> str:
    """``alert.<name>`` for a detector (mfa-failures, new-source, session-bytes-out, ...)."""
    if not name or any(c.isspace() or c == "." for c in name):
        raise ValueError(f"alert names are one word such as 'mfa-failures', not {name!r}")
    return ALERT_PREFIX + name


def token_revoke(purpose: str) -> str:
    """``db-token.revoke`` or ``control-token.revoke`` for a token's purpose."""
    action = f"{purpose}-token.revoke"
    if action not in (DB_TOKEN_REVOKE, CONTROL_TOKEN_REVOKE):
        raise ValueError(f"no token purpose {purpose!r}")
    return action


ALL: Final = frozenset(
    value for name, value in dict(globals()).items() if name.isupper() and isinstance(value, str)
) - {FILE_PREFIX, UPSTREAM_PREFIX, POLICY_PREFIX, ALERT_PREFIX}
"""Every fixed action name (the ``PREFIXES`` areas aside)."""
