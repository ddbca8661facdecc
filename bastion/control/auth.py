"""Who may use the control API, and for what: pure policy plus the peer-credential read.

Over the Unix socket the gate is the operating system first (like the ``bastion``
CLI, which needs the config and keys): the peer process must run as root or as the
node's own uid. Then the ``hello`` must name a bastion user with role admin,
auditor or approver that is neither disabled nor locked. Over TCP a control token
(``bastion user control-token NAME``) is required instead of the uid check. Admins
may do everything; auditors may browse, search and read recordings and list access
requests, not watch live, terminate, lock or decide requests; approvers may list
and decide access requests and nothing else (they are not auditors of sessions).
"""

from __future__ import annotations

import hashlib
import socket
import struct

from bastion.control.messages import ControlError, Operator
from bastion.store.models import Role, TokenPurpose, TokenRecord, User

__all__ = [
    "ADMIN_ONLY",
    "APPROVER_OPS",
    "CONTROL_ROLES",
    "DECISIONS",
    "authorize_operator",
    "check_token",
    "peer_uid",
    "peer_uid_allowed",
    "require_role",
    "token_hash",
]

ADMIN_ONLY = frozenset({"watch", "terminate", "lock_user"})
"""Operations that act on live sessions or users (auditors only read)."""

DECISIONS = frozenset({"approve_request", "deny_request"})
"""Deciding access requests: admins and approvers (the request flow checks the rest)."""

APPROVER_OPS = frozenset({"whoami", "list_requests"}) | DECISIONS
"""All an approver may do through the control API."""

CONTROL_ROLES = (Role.ADMIN, Role.AUDITOR, Role.APPROVER)
"""Who may use the control API at all (contractors may not)."""


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def peer_uid_allowed(peer: int, node_uid: int) -> bool:
    """True for root and for the uid the node runs as (who can read its keys anyway)."""
    return peer == 0 or peer == node_uid


def authorize_operator(name: str, user: User | None, now: float) -> Operator:
    """The operator for a ``hello`` naming ``name`` (raises ControlError if refused)."""
    if user is None:
        raise ControlError(f"no bastion user named '{name}'; see 'bastion user list'")
    if user.role not in CONTROL_ROLES:
        raise ControlError(
            f"user {name} is a {user.role.value}; the control API is for admins, auditors "
            f"and approvers (an admin can change the role)"
        )
    if user.disabled:
        raise ControlError(f"user {name} is disabled; ask an admin to 'bastion user enable'")
    if user.locked_until is not None and user.locked_until > now:
        raise ControlError(f"user {name} is locked; ask an admin to 'bastion user unlock'")
    return Operator(name=user.name, role=user.role.value)


def require_role(operator: Operator, op: str) -> None:
    """Raise ControlError if ``operator`` may not run ``op``."""
    if operator.role == Role.APPROVER.value:
        if op not in APPROVER_OPS:
            raise ControlError(
                f"'{op}' needs the admin or auditor role; {operator.name} is an approver "
                "(approvers can list, approve and deny access requests)"
            )
        return
    if op in DECISIONS and operator.role != Role.ADMIN.value:
        raise ControlError(
            f"'{op}' needs the approver or admin role; {operator.name} is an {operator.role} "
            "(auditors can list access requests, not decide them)"
        )
    if op in ADMIN_ONLY and operator.role != Role.ADMIN.value:
        raise ControlError(
            f"'{op}' needs the admin role; {operator.name} is an {operator.role} "
            "(auditors can list, search and replay recordings)"
        )


def token_hash(token: str) -> str:
    """How tokens are stored: hex SHA-256 of the token text."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_token(name: str, record: TokenRecord | None, now: float) -> None:
    """Raise ControlError unless ``record`` is a live control token of user ``name``."""
    if record is None or record.purpose != TokenPurpose.CONTROL or record.user_name != name:
        raise ControlError(
            f"invalid control token for {name}; create one with 'bastion user control-token {name}'"
        )
    if not record.live_at(now):
        raise ControlError(
            f"control token #{record.id} of {name} is expired or revoked; create a new one with "
            f"'bastion user control-token {name}'"
        )
