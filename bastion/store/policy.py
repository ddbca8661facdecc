"""Guardrail rules as stored: an ordered list every node reads, and a version counter.

A mixin of ``Store``. It stores plain records (``StoredRule``); turning one into
a checked ``bastion.policy.rules.Rule`` is ``bastion.policy.stored``'s job, so the
store never imports the policy engine. Every change bumps ``policy_version`` in
the same transaction: a node re-reads the rules only when that number moved.
Removing a rule deletes its row; the audit row of the removal keeps the whole rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.errors import AlreadyExists, NotFound
from bastion.store import rows
from bastion.store.backends import Backend, Tx

_COLUMNS = (
    "id, name, position, kind, programs, args_regex, sql_classes, tables, file_glob,"
    " targets, users, action, shadow, created_at, created_by"
)


@dataclass(frozen=True)
class StoredRule:
    """One row of ``policy_rules`` (fields as ``bastion.policy.rules.Rule`` names them)."""

    name: str
    kind: str
    action: str
    programs: tuple[str, ...] = ()
    args_regex: str | None = None
    sql_classes: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    file_glob: str | None = None
    targets: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    shadow: bool = False
    created_at: float = 0.0
    created_by: str = ""
    position: int = 0
    id: int = 0


def _no_rule(name: str) -> NotFound:
    return NotFound(f"no policy rule named '{name}'; see 'bastion policy list'")


def _rule(r: Any) -> StoredRule:
    return StoredRule(
        id=int(r["id"]),
        name=r["name"],
        position=int(r["position"]),
        kind=r["kind"],
        programs=rows.load_list(r["programs"]),
        args_regex=r["args_regex"],
        sql_classes=rows.load_list(r["sql_classes"]),
        tables=rows.load_list(r["tables"]),
        file_glob=r["file_glob"],
        targets=rows.load_list(r["targets"]),
        users=rows.load_list(r["users"]),
        action=r["action"],
        shadow=bool(r["shadow"]),
        created_at=float(r["created_at"]),
        created_by=r["created_by"],
    )


# SQL here is fixed text with "?" marks; every value is a parameter.
class Policies:
    """Guardrail rules of a ``Store``."""

    _db: Backend

    def policy_rules(self) -> list[StoredRule]:
        """Every rule, in the order they are tried."""
        with self._db.transaction() as tx:
            return self._policy_rules_tx(tx)

    def _policy_rules_tx(self, tx: Tx) -> list[StoredRule]:
        found = tx.all(f"SELECT {_COLUMNS} FROM policy_rules ORDER BY position, id")  # noqa: S608  fixed SQL
        return [_rule(r) for r in found]

    def policy_version(self) -> int:
        """A number that changes whenever a rule is added or removed (cheap to poll)."""
        with self._db.transaction() as tx:
            return self._policy_version_tx(tx)

    def _policy_version_tx(self, tx: Tx) -> int:
        row = tx.one("SELECT version FROM policy_version WHERE id = 1")
        return int(row["version"]) if row is not None else 0

    def policy_snapshot(self) -> tuple[int, list[StoredRule]]:
        """The version and the rules it stands for, read together."""
        with self._db.transaction() as tx:
            return self._policy_version_tx(tx), self._policy_rules_tx(tx)

    def _bump_policy_version_tx(self, tx: Tx) -> None:
        tx.run("UPDATE policy_version SET version = version + 1 WHERE id = 1")

    def _add_policy_rule_tx(self, tx: Tx, rule: StoredRule, before: str | None) -> StoredRule:
        if tx.one("SELECT id FROM policy_rules WHERE name = ?", [rule.name]) is not None:
            raise AlreadyExists(
                f"policy rule '{rule.name}' already exists; see 'bastion policy list'"
            )
        if before is None:
            row = tx.one("SELECT MAX(position) AS p FROM policy_rules")
            position = 0 if row is None or row["p"] is None else int(row["p"]) + 1
        else:
            row = tx.one("SELECT position FROM policy_rules WHERE name = ?", [before])
            if row is None:
                raise _no_rule(before)
            position = int(row["position"])
            tx.run(
                "UPDATE policy_rules SET position = position + 1 WHERE position >= ?", [position]
            )
        tx.run(
            "INSERT INTO policy_rules (name, position, kind, programs, args_regex, sql_classes,"
            " tables, file_glob, targets, users, action, shadow, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                rule.name,
                position,
                rule.kind,
                rows.dump_list(rule.programs),
                rule.args_regex,
                rows.dump_list(rule.sql_classes),
                rows.dump_list(rule.tables),
                rule.file_glob,
                rows.dump_list(rule.targets),
                rows.dump_list(rule.users),
                rule.action,
                bool(rule.shadow),
                float(rule.created_at),
                rule.created_by,
            ],
        )
        self._bump_policy_version_tx(tx)
        return self._policy_rule_tx(tx, rule.name)

    def _policy_rule_tx(self, tx: Tx, name: str) -> StoredRule:
        row = tx.one(f"SELECT {_COLUMNS} FROM policy_rules WHERE name = ?", [name])  # noqa: S608  fixed SQL, ? values
        if row is None:
            raise _no_rule(name)
        return _rule(row)

    def _remove_policy_rule_tx(self, tx: Tx, name: str) -> StoredRule:
        found = self._policy_rule_tx(tx, name)
        tx.run("DELETE FROM policy_rules WHERE id = ?", [found.id])
        self._bump_policy_version_tx(tx)
        return found
