"""Store writes only ``bastion apply`` needs: a user's role and keys, a target in place.

Functions over a caller's transaction (``AuditedChange`` calls them), so every
change of one ``apply`` commits together with its audit rows or not at all.
Changing a target in place keeps its id, so its grants, tokens and live
sessions stay attached to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bastion.errors import NotFound
from bastion.store import rows
from bastion.store.backends import Tx
from bastion.store.models import Credset, Role

if TYPE_CHECKING:
    from bastion.secretbox import SecretBox


def set_user_role_tx(tx: Tx, user_id: int, role: Role) -> None:
    """Change a user's role. Raises NotFound."""
    if tx.run("UPDATE users SET role = ? WHERE id = ?", [Role(role).value, user_id]) == 0:
        raise NotFound(f"no user with id {user_id}")


def set_user_keys_tx(tx: Tx, user_id: int, keys: Sequence[str]) -> None:
    """Replace a user's SSH public keys. Raises NotFound."""
    clean = [k.strip() for k in keys if k.strip()]
    if tx.run("UPDATE users SET ssh_keys = ? WHERE id = ?", [rows.dump_list(clean), user_id]) == 0:
        raise NotFound(f"no user with id {user_id}")


def update_target_tx(
    tx: Tx,
    box: SecretBox,
    *,
    target_id: int,
    name: str,
    host: str,
    port: int,
    logins: Sequence[str],
    principal: str,
    host_keys: Sequence[str],
    host_ca_keys: Sequence[str],
    database: str | None,
    credsets: Sequence[Credset],
    tls_mode: str,
    tls_ca: str | None,
) -> None:
    """Rewrite a live target's connection fields and credential sets, keeping its id.

    Raises NotFound if the target is gone.
    """
    changed = tx.run(
        "UPDATE targets SET host = ?, port = ?, logins = ?, principal = ?, host_keys = ?,"
        " host_ca_keys = ?, dbname = ?, tls_mode = ?, tls_ca = ?"
        " WHERE id = ? AND removed_at IS NULL",
        [
            host, int(port), rows.dump_list(logins), principal, rows.dump_list(host_keys),
            rows.dump_list(host_ca_keys), database, tls_mode, tls_ca, target_id,
        ],
    )  # fmt: skip
    if changed == 0:
        raise NotFound(f"no live target named '{name}'; see 'bastion target list'")
    tx.run("DELETE FROM credsets WHERE target_id = ?", [target_id])
    for c in credsets:
        tx.run(
            "INSERT INTO credsets (target_id, name, db_user, password) VALUES (?, ?, ?, ?)",
            [
                target_id,
                c.name,
                c.user,
                rows.seal(box, c.password, rows.credset_context(name, c.name)),
            ],  # fmt: skip
        )
