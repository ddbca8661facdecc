"""The state store's per-address login failures and blocks (migration 13).

A mixin of ``Store`` (like ``Engagements``). Every node sharing the state DB
records its failures here and reads the same blocks, so guessing spread over
the nodes of a fleet counts once. Counting and blocking happen in one write
transaction under an advisory lock, so two nodes cannot both miss the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.store.backends import Backend, Row

ADDRESS_LOCK = 0x62617374696F6E0D
"""Advisory lock key serialising failure counts across nodes ("bastion" + 13)."""


@dataclass(frozen=True)
class AddressBlock:
    """A source refused until ``until`` (its ``strikes``-th block)."""

    source: str
    until: float
    strikes: int
    failures: int
    blocked_at: float


def _block(r: Row) -> AddressBlock:
    return AddressBlock(
        source=str(r["source"]),
        until=float(r["until"]),
        strikes=int(r["strikes"]),
        failures=int(r["failures"]),
        blocked_at=float(r["blocked_at"]),
    )


_COLUMNS = "source, until, strikes, failures, blocked_at"


class AddressBlocks:
    """Per-address failure counts and blocks; mixed into ``Store``."""

    _db: Backend

    def record_address_failure(
        self,
        source: str,
        user_name: str,
        reason: str,
        at: float,
        *,
        max_failures: int,
        window: float,
        block_seconds: tuple[float, float] = (60.0, 3600.0),
        strikes_forgotten: float = 86400.0,
    ) -> AddressBlock | None:
        """Count one failed login from ``source``; return the new block if this one
        reached ``max_failures`` within ``window`` seconds (None otherwise).

        The ``n``-th block lasts ``block_seconds[0] * 2**(n-1)`` seconds, at most
        ``block_seconds[1]``; earlier blocks count while the last one ended less
        than ``strikes_forgotten`` seconds ago. A block clears the source's count.
        """
        with self._db.transaction(write=True) as tx:
            tx.lock(ADDRESS_LOCK)
            tx.run(
                "DELETE FROM address_failures WHERE source = ? AND at < ?", [source, at - window]
            )
            tx.run(
                "INSERT INTO address_failures (source, at, user_name, reason) VALUES (?, ?, ?, ?)",
                [source, float(at), user_name, reason],
            )
            row = tx.one("SELECT COUNT(*) AS n FROM address_failures WHERE source = ?", [source])
            failures = int(row["n"]) if row else 0
            if max_failures <= 0 or failures < max_failures:
                return None
            old = tx.one(f"SELECT {_COLUMNS} FROM address_blocks WHERE source = ?", [source])  # noqa: S608  fixed SQL
            strikes = 1
            if old is not None and float(old["until"]) > at - strikes_forgotten:
                strikes = int(old["strikes"]) + 1
            first, cap = block_seconds
            until = at + min(first * 2 ** (strikes - 1), cap)
            tx.run("DELETE FROM address_blocks WHERE source = ?", [source])
            tx.run(
                f"INSERT INTO address_blocks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",  # noqa: S608  fixed SQL
                [source, until, strikes, failures, float(at)],
            )
            tx.run("DELETE FROM address_failures WHERE source = ?", [source])
            return AddressBlock(source, until, strikes, failures, float(at))

    def address_block(self, source: str, now: float) -> AddressBlock | None:
        """The block refusing ``source`` now, if any."""
        with self._db.transaction() as tx:
            row = tx.one(
                f"SELECT {_COLUMNS} FROM address_blocks WHERE source = ? AND until > ?",  # noqa: S608  fixed SQL
                [source, float(now)],
            )
        return _block(row) if row is not None else None

    def address_blocks(self, now: float) -> list[AddressBlock]:
        """Sources blocked now, the latest-ending first."""
        with self._db.transaction() as tx:
            found = tx.all(
                f"SELECT {_COLUMNS} FROM address_blocks WHERE until > ? ORDER BY until DESC",  # noqa: S608  fixed SQL
                [float(now)],
            )
        return [_block(r) for r in found]

    def address_failure_count(self, source: str, since: float) -> int:
        """Failed logins from ``source`` at or after ``since`` not yet turned into a block."""
        with self._db.transaction() as tx:
            row = tx.one(
                "SELECT COUNT(*) AS n FROM address_failures WHERE source = ? AND at >= ?",
                [source, float(since)],
            )
        return int(row["n"]) if row else 0

    def unblock_address(self, source: str) -> bool:
        """Lift ``source``'s block and forget its failures and strikes; False if none."""
        with self._db.transaction(write=True) as tx:
            tx.lock(ADDRESS_LOCK)
            gone = tx.run("DELETE FROM address_blocks WHERE source = ?", [source])
            tx.run("DELETE FROM address_failures WHERE source = ?", [source])
        return gone > 0
