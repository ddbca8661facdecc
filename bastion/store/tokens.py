"""Bearer tokens: database tokens for the PostgreSQL listener, control API tokens.

A mixin of ``Store`` (kept apart to keep modules small); it only needs the
backend in ``self._db``. The store never sees a token, only its SHA-256 hash:
a leaked state store gives nobody a usable token. Which token is accepted
where is policy and lives in ``bastion.db_tokens`` (and the control API).
"""

from __future__ import annotations

import time
from typing import Any

from bastion.errors import NotFound, StoreError
from bastion.store import rows
from bastion.store.backends import Backend, Tx
from bastion.store.history import where_clause
from bastion.store.models import TokenPurpose, TokenRecord


def _no_token(token_id: int) -> NotFound:
    return NotFound(f"no token #{token_id}; see 'bastion token list'")


# SQL here is built only from fixed text: the column lists in rows.py, conditions
# written in this file and "?" marks; every value is a parameter ("noqa: S608" below).
class Tokens:
    """Issued bearer tokens of a ``Store``, looked up by hash."""

    _db: Backend

    def _token(self, tx: Tx, where: str, param: Any) -> TokenRecord | None:
        row = tx.one(f"{rows.TOKEN_SELECT} WHERE {where} = ?", [param])
        return None if row is None else rows.token(row)

    def add_token(
        self,
        *,
        purpose: TokenPurpose,
        user_id: int,
        token_hash: str,
        expires_at: float,
        now: float,
        created_from: str,
        target_id: int | None = None,
        grant_id: int | None = None,
        credset: str | None = None,
    ) -> TokenRecord:
        """Record a newly issued token by its hash.

        Raises NotFound for an unknown user, StoreError for a token that would be
        born expired, and AlreadyExists for a duplicate hash (never for random tokens).
        """
        if not expires_at > now:
            raise StoreError("a token must expire after it is issued (expires_at > now)")
        with self._db.transaction(write=True) as tx:
            if tx.one("SELECT id FROM users WHERE id = ?", [user_id]) is None:
                raise NotFound(f"no user with id {user_id}; see 'bastion user list'")
            token_id = tx.insert(
                "INSERT INTO tokens (purpose, user_id, target_id, grant_id, credset, token_hash,"
                " created_at, expires_at, created_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                [
                    TokenPurpose(purpose).value,
                    user_id,
                    target_id,
                    grant_id,
                    credset,
                    token_hash,
                    float(now),
                    float(expires_at),
                    created_from,
                ],
            )
            found = self._token(tx, "k.id", token_id)
        assert found is not None  # noqa: S101  inserted just above
        return found

    def find_token(self, token_hash: str) -> TokenRecord | None:
        """The token with this SHA-256 hash (any state), or None."""
        with self._db.transaction() as tx:
            return self._token(tx, "k.token_hash", token_hash)

    def get_token(self, token_id: int) -> TokenRecord | None:
        """The token with this id (any state), or None."""
        with self._db.transaction() as tx:
            return self._token(tx, "k.id", token_id)

    def list_tokens(
        self,
        user: str | None = None,
        purpose: TokenPurpose | None = None,
        live_only: bool = False,
        now: float | None = None,
    ) -> list[TokenRecord]:
        """Tokens by id; ``live_only`` keeps those neither revoked nor expired at ``now``."""
        where: list[str] = []
        params: list[Any] = []
        if user is not None:
            where.append("u.name = ?")
            params.append(user)
        if purpose is not None:
            where.append("k.purpose = ?")
            params.append(TokenPurpose(purpose).value)
        if live_only:
            where.append("k.revoked_at IS NULL AND k.expires_at > ?")
            params.append(float(time.time() if now is None else now))
        sql = rows.TOKEN_SELECT + where_clause(where) + " ORDER BY k.id"
        with self._db.transaction() as tx:
            return [rows.token(r) for r in tx.all(sql, params)]

    def revoke_token(self, token_id: int, by: str, at: float) -> TokenRecord:
        """Revoke one token. Raises NotFound, or StoreError if it was already revoked."""
        with self._db.transaction(write=True) as tx:
            changed = tx.run(
                "UPDATE tokens SET revoked_at = ?, revoked_by = ?"
                " WHERE id = ? AND revoked_at IS NULL",
                [float(at), by, token_id],
            )
            found = self._token(tx, "k.id", token_id)
        if found is None:
            raise _no_token(token_id)
        if changed == 0:
            raise StoreError(
                f"token #{token_id} was already revoked by {found.revoked_by or 'someone'}"
            )
        return found

    def revoke_user_tokens(
        self, user_id: int, by: str, at: float, purpose: TokenPurpose | None = None
    ) -> int:
        """Revoke every unexpired, unrevoked token of a user (e.g. on lock); return how many."""
        with self._db.transaction(write=True) as tx:
            return self._revoke_user_tokens_tx(tx, user_id, by, at, purpose)

    def _revoke_user_tokens_tx(
        self, tx: Tx, user_id: int, by: str, at: float, purpose: TokenPurpose | None = None
    ) -> int:
        where = "user_id = ? AND revoked_at IS NULL AND expires_at > ?"
        params: list[Any] = [float(at), by, user_id, float(at)]
        if purpose is not None:
            where += " AND purpose = ?"
            params.append(TokenPurpose(purpose).value)
        sql = f"UPDATE tokens SET revoked_at = ?, revoked_by = ? WHERE {where}"  # noqa: S608  fixed SQL, ? values
        return tx.run(sql, params)

    def touch_token(self, token_id: int, at: float) -> None:
        """Remember when a token was last used (shown by 'bastion token list')."""
        with self._db.transaction(write=True) as tx:
            tx.run("UPDATE tokens SET last_used_at = ? WHERE id = ?", [float(at), token_id])
