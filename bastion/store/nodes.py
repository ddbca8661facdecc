"""The state store's node registry: which nodes serve this state, where, and are they alive.

A mixin of ``Store``. Each node writes its own row at start, a heartbeat every few
seconds and its stop; nothing else writes a node's row except ``drain``. Reading
the table is how a console on one node finds the control listener of another and
how ``bastion nodes list`` tells a stopped node from one that died silently.
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion.errors import AlreadyExists, NotFound
from bastion.store.backends import Backend, Row, Tx
from bastion.store.models import NodeRecord
from bastion.store.wakeups import WAKE_CHANNEL, WakeKind, Wakeup

_NODE_COLUMNS = (
    "n.name, n.pid, n.version, n.ssh_addr, n.pg_addr, n.control_addr, n.control_cert,"
    " n.started_at, n.heartbeat_at, n.stopped_at, n.draining_until"
)


def _node(row: Row) -> NodeRecord:
    return NodeRecord(
        name=str(row["name"]),
        pid=int(row["pid"]),
        version=str(row["version"]),
        ssh_addr=row["ssh_addr"],
        pg_addr=row["pg_addr"],
        control_addr=row["control_addr"],
        control_cert=row["control_cert"],
        started_at=float(row["started_at"]),
        heartbeat_at=float(row["heartbeat_at"]),
        stopped_at=None if row["stopped_at"] is None else float(row["stopped_at"]),
        draining_until=None if row["draining_until"] is None else float(row["draining_until"]),
        live_sessions=int(row["live"] or 0),
    )


class Nodes:
    """The ``nodes`` table; mixed into ``Store``."""

    _db: Backend

    def register_node(self, node: NodeRecord) -> None:
        """Write this node's row at start (a restart under the same name replaces it)."""
        with self._db.transaction(write=True) as tx:
            tx.run("DELETE FROM nodes WHERE name = ?", [node.name])
            tx.run(
                "INSERT INTO nodes (name, pid, version, ssh_addr, pg_addr, control_addr,"
                " control_cert, started_at, heartbeat_at, stopped_at, draining_until)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                [
                    node.name,
                    node.pid,
                    node.version,
                    node.ssh_addr,
                    node.pg_addr,
                    node.control_addr,
                    node.control_cert,
                    node.started_at,
                    node.heartbeat_at,
                ],
            )

    def node_heartbeat(self, name: str, now: float) -> float | None:
        """Record that ``name`` is alive; return its drain deadline if an admin set one."""
        with self._db.transaction(write=True) as tx:
            tx.run("UPDATE nodes SET heartbeat_at = ? WHERE name = ?", [now, name])
            row = tx.one("SELECT draining_until FROM nodes WHERE name = ?", [name])
        if row is None or row["draining_until"] is None:
            return None
        return float(row["draining_until"])

    def node_stopped(self, name: str, now: float) -> None:
        """Mark ``name`` stopped by a routine stop (a crash leaves it silent instead)."""
        with self._db.transaction(write=True) as tx:
            tx.run(
                "UPDATE nodes SET stopped_at = ?, heartbeat_at = ? WHERE name = ?", [now, now, name]
            )

    def _drain_node_tx(self, tx: Tx, name: str, until: float) -> None:
        """Drain node ``name``, or all its workers (``name/w1`` …) when given the node's name."""
        workers = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/w%"
        changed = tx.run(
            "UPDATE nodes SET draining_until = ?"
            " WHERE (name = ? OR name LIKE ? ESCAPE '\\') AND stopped_at IS NULL",
            [until, name, workers],
        )
        if not changed:
            raise NotFound(f"no running node named '{name}'; see 'bastion nodes list'")
        tx.notify(WAKE_CHANNEL, Wakeup(WakeKind.NODE, name).payload())

    def get_node(self, name: str) -> NodeRecord:
        """One node's row with its live session count. Raises NotFound."""
        found = self.list_nodes(names=[name])
        if not found:
            raise NotFound(f"no node named '{name}'; see 'bastion nodes list'")
        return found[0]

    def list_nodes(self, names: Sequence[str] | None = None) -> list[NodeRecord]:
        """Every registered node, by name, with how many sessions each runs now."""
        where, params = "", []
        if names is not None:
            where = " WHERE n.name IN (" + ", ".join("?" for _ in names) + ")"
            params = list(names)
        with self._db.transaction() as tx:
            rows = tx.all(
                f"SELECT {_NODE_COLUMNS}, (SELECT COUNT(*) FROM sessions s"  # noqa: S608  fixed SQL, ? values
                " WHERE s.node = n.name AND s.ended_at IS NULL) AS live"
                f" FROM nodes n{where} ORDER BY n.name",
                params,
            )
        return [_node(r) for r in rows]

    def claim_cancel_key(self, pid: int, node: str, now: float) -> bool:
        """Record that ``node`` handed out cancel key ``pid``; False if another has it."""
        try:
            with self._db.transaction(write=True) as tx:
                if tx.one("SELECT node FROM pg_cancel_keys WHERE pid = ?", [pid]) is not None:
                    return False
                tx.run(
                    "INSERT INTO pg_cancel_keys (pid, node, issued_at) VALUES (?, ?, ?)",
                    [pid, node, now],
                )
        except AlreadyExists:  # another node claimed it between the look and the insert
            return False
        return True

    def release_cancel_key(self, pid: int, node: str) -> None:
        """The connection that had ``pid`` ended (only its own node releases it)."""
        with self._db.transaction(write=True) as tx:
            tx.run("DELETE FROM pg_cancel_keys WHERE pid = ? AND node = ?", [pid, node])

    def release_node_cancel_keys(self, node: str) -> int:
        """Forget every key ``node`` handed out (it starts: its old connections are gone)."""
        with self._db.transaction(write=True) as tx:
            return tx.run("DELETE FROM pg_cancel_keys WHERE node = ?", [node])

    def cancel_key_node(self, pid: int) -> str | None:
        """The node that handed out cancel key ``pid``, or None."""
        with self._db.transaction() as tx:
            row = tx.one("SELECT node FROM pg_cancel_keys WHERE pid = ?", [pid])
        return None if row is None else str(row["node"])
