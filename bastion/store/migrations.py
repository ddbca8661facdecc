"""Versioned schema migrations, one list for both backends.

Each migration is a version number and a list of SQL statements written once;
``{ID}``, ``{BIGINT}``, ``{FLOAT}``, ``{BLOB}`` and ``{BOOL}`` stand for the
backend's type names (see ``Backend.types``) and are the only differences
between SQLite and PostgreSQL. Applied versions are recorded in
``schema_migrations``; all pending migrations run in one transaction under an
advisory lock, so two nodes starting together on PostgreSQL do not race, and a
failure leaves the previous schema intact.

To change the schema, append a ``Migration`` with the next version; never edit
one that has shipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bastion.errors import StoreError
from bastion.store.backends import Backend, Tx

#: Advisory lock key serialising migrations across nodes ("bastion" + 0x01).
MIGRATE_LOCK = 0x62617374696F6E01


@dataclass(frozen=True)
class Migration:
    """One schema step; ``statements`` are templates filled with ``Backend.types``."""

    version: int
    name: str
    statements: tuple[str, ...]
    by_backend: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Statements for one backend only (by ``Backend.name``), run after ``statements``:
    for the few changes the two cannot spell the same way."""
    after: tuple[str, ...] = ()
    """Shared statements run after the backend-specific ones."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            """CREATE TABLE users (
                id {ID},
                name TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL,
                ssh_keys TEXT NOT NULL,
                totp_secret {BLOB},
                totp_last_step {BIGINT},
                locked_until {FLOAT},
                disabled {BOOL} NOT NULL DEFAULT FALSE,
                created_at {FLOAT} NOT NULL
            )""",
            """CREATE TABLE auth_failures (
                id {ID},
                user_id {BIGINT} NOT NULL REFERENCES users (id),
                at {FLOAT} NOT NULL,
                reason TEXT NOT NULL
            )""",
            "CREATE INDEX auth_failures_user_at ON auth_failures (user_id, at)",
            """CREATE TABLE targets (
                id {ID},
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                host TEXT NOT NULL,
                port INTEGER NOT NULL,
                logins TEXT NOT NULL,
                principal TEXT NOT NULL,
                host_keys TEXT NOT NULL,
                host_ca_keys TEXT NOT NULL,
                dbname TEXT,
                created_at {FLOAT} NOT NULL,
                removed_at {FLOAT}
            )""",
            # Removed targets keep their row (sessions and grants point at it);
            # only live targets need unique names.
            "CREATE UNIQUE INDEX targets_live_name ON targets (name) WHERE removed_at IS NULL",
            """CREATE TABLE credsets (
                id {ID},
                target_id {BIGINT} NOT NULL REFERENCES targets (id),
                name TEXT NOT NULL,
                db_user TEXT NOT NULL,
                password {BLOB},
                UNIQUE (target_id, name)
            )""",
            """CREATE TABLE grants (
                id {ID},
                user_id {BIGINT} NOT NULL REFERENCES users (id),
                target_id {BIGINT} NOT NULL REFERENCES targets (id),
                login TEXT,
                credset TEXT,
                not_before {FLOAT} NOT NULL,
                not_after {FLOAT} NOT NULL,
                reason TEXT NOT NULL,
                requested_by TEXT NOT NULL,
                approved_by TEXT,
                state TEXT NOT NULL,
                options TEXT NOT NULL,
                created_at {FLOAT} NOT NULL,
                revoked_at {FLOAT},
                revoked_by TEXT
            )""",
            "CREATE INDEX grants_user ON grants (user_id, target_id)",
            "CREATE INDEX grants_target ON grants (target_id)",
            """CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                user_id {BIGINT} NOT NULL REFERENCES users (id),
                target_id {BIGINT} NOT NULL REFERENCES targets (id),
                grant_id {BIGINT} REFERENCES grants (id),
                node TEXT NOT NULL,
                protocol TEXT NOT NULL,
                login TEXT,
                client_addr TEXT NOT NULL,
                started_at {FLOAT} NOT NULL,
                ended_at {FLOAT},
                end_reason TEXT,
                recording TEXT,
                bytes_in {BIGINT} NOT NULL DEFAULT 0,
                bytes_out {BIGINT} NOT NULL DEFAULT 0,
                events {BIGINT} NOT NULL DEFAULT 0,
                final_hash TEXT
            )""",
            "CREATE INDEX sessions_started ON sessions (started_at)",
            "CREATE INDEX sessions_user ON sessions (user_id)",
            "CREATE INDEX sessions_target ON sessions (target_id)",
            # session_id has no foreign key: a certificate is issued while the
            # session is being set up and must be recorded even if that fails.
            """CREATE TABLE certificates (
                serial {BIGINT} PRIMARY KEY,
                key_id TEXT NOT NULL,
                principals TEXT NOT NULL,
                valid_after {FLOAT} NOT NULL,
                valid_before {FLOAT} NOT NULL,
                session_id TEXT,
                user_id {BIGINT} NOT NULL REFERENCES users (id),
                target_id {BIGINT} NOT NULL REFERENCES targets (id),
                issued_at {FLOAT} NOT NULL
            )""",
            "CREATE INDEX certificates_session ON certificates (session_id)",
            # Ids are assigned by the appender (under a lock), not a sequence:
            # they are part of the hashed content and must have no gaps.
            """CREATE TABLE audit (
                id {BIGINT} PRIMARY KEY,
                at {FLOAT} NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                subject TEXT,
                details TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            "CREATE INDEX audit_at ON audit (at)",
            "CREATE INDEX audit_actor ON audit (actor)",
        ),
    ),
    Migration(
        2,
        "recording signature and command search",
        (
            "ALTER TABLE sessions ADD COLUMN final_signature TEXT",
            # Commands extracted from recordings (typed lines, later SQL text) for
            # search across sessions; derived data, the recording stays the evidence.
            """CREATE TABLE session_commands (
                session_id TEXT NOT NULL REFERENCES sessions (id),
                seq INTEGER NOT NULL,
                at {FLOAT} NOT NULL,
                text TEXT NOT NULL,
                PRIMARY KEY (session_id, seq)
            )""",
        ),
    ),
    Migration(
        3,
        "termination requests",
        (
            # An admin's request to end a live session, picked up by whichever node
            # runs it on its next time-box pass (no node-to-node messaging needed).
            "ALTER TABLE sessions ADD COLUMN terminate_requested_at {FLOAT}",
            "ALTER TABLE sessions ADD COLUMN terminate_by TEXT",
            "ALTER TABLE sessions ADD COLUMN terminate_reason TEXT",
        ),
    ),
    Migration(
        4,
        "bearer tokens and upstream TLS for database targets",
        (
            # Database tokens (purpose 'db', bound to a target and grant) and control
            # API tokens (purpose 'control'); only the SHA-256 of each token is kept.
            """CREATE TABLE tokens (
                id {ID},
                purpose TEXT NOT NULL,
                user_id {BIGINT} NOT NULL REFERENCES users (id),
                target_id {BIGINT} REFERENCES targets (id),
                grant_id {BIGINT} REFERENCES grants (id),
                credset TEXT,
                token_hash TEXT NOT NULL UNIQUE,
                created_at {FLOAT} NOT NULL,
                expires_at {FLOAT} NOT NULL,
                revoked_at {FLOAT},
                revoked_by TEXT,
                last_used_at {FLOAT},
                created_from TEXT NOT NULL
            )""",
            "CREATE INDEX tokens_user ON tokens (user_id, purpose)",
            "ALTER TABLE targets ADD COLUMN tls_mode TEXT NOT NULL DEFAULT 'prefer'",
            "ALTER TABLE targets ADD COLUMN tls_ca TEXT",
        ),
    ),
    Migration(
        5,
        "access requests, approvals, groups and per-target request policy",
        (
            # A contractor's request for access (or an extension, or break-glass),
            # kept for good whatever becomes of it.
            """CREATE TABLE access_requests (
                id {ID},
                user_id {BIGINT} NOT NULL REFERENCES users (id),
                kind TEXT NOT NULL,
                targets TEXT NOT NULL,
                login TEXT,
                options TEXT NOT NULL,
                duration {FLOAT} NOT NULL,
                start_at {FLOAT},
                reason TEXT NOT NULL,
                state TEXT NOT NULL,
                extends_grant_id {BIGINT} REFERENCES grants (id),
                created_at {FLOAT} NOT NULL,
                lapses_at {FLOAT} NOT NULL,
                decided_at {FLOAT},
                decided_by TEXT,
                decision_reason TEXT,
                reviewed_at {FLOAT},
                reviewed_by TEXT,
                review_note TEXT,
                client_addr TEXT
            )""",
            "CREATE INDEX access_requests_state ON access_requests (state, lapses_at)",
            "CREATE INDEX access_requests_user ON access_requests (user_id, id)",
            # One row per approval (N-of-M): who, when, and how they narrowed it.
            """CREATE TABLE request_approvals (
                request_id {BIGINT} NOT NULL REFERENCES access_requests (id),
                approver TEXT NOT NULL,
                at {FLOAT} NOT NULL,
                duration {FLOAT},
                targets TEXT,
                options TEXT,
                reason TEXT,
                PRIMARY KEY (request_id, approver)
            )""",
            """CREATE TABLE user_groups (
                user_id {BIGINT} NOT NULL REFERENCES users (id),
                name TEXT NOT NULL,
                PRIMARY KEY (user_id, name)
            )""",
            "ALTER TABLE targets ADD COLUMN approvals INTEGER",
            "ALTER TABLE targets ADD COLUMN approvers TEXT",
            "ALTER TABLE targets ADD COLUMN max_request {FLOAT}",
            "ALTER TABLE grants ADD COLUMN request_id {BIGINT}",
        ),
    ),
    Migration(
        6,
        "policy rules",
        (
            # Guardrail rules, in order (position: first match wins). Lists are JSON text.
            """CREATE TABLE policy_rules (
                id {ID},
                name TEXT NOT NULL UNIQUE,
                position INTEGER NOT NULL,
                kind TEXT NOT NULL,
                programs TEXT NOT NULL,
                args_regex TEXT,
                sql_classes TEXT NOT NULL,
                tables TEXT NOT NULL,
                file_glob TEXT,
                targets TEXT NOT NULL,
                users TEXT NOT NULL,
                action TEXT NOT NULL,
                shadow {BOOL} NOT NULL DEFAULT FALSE,
                created_at {FLOAT} NOT NULL,
                created_by TEXT NOT NULL
            )""",
            # One row: bumped by every change, so nodes reload only when rules changed.
            """CREATE TABLE policy_version (
                id INTEGER PRIMARY KEY,
                version {BIGINT} NOT NULL
            )""",
            "INSERT INTO policy_version (id, version) VALUES (1, 0)",
        ),
    ),
    Migration(
        8,
        "engagements",
        (
            # A contractor's engagement: who vouches for them, when their access ends,
            # their organisation. engagement_reminded is the smallest number of days
            # before the end already reminded (7, then 1); engagement_ended_at is set by
            # the one node whose conditional UPDATE ended the engagement.
            "ALTER TABLE users ADD COLUMN sponsor TEXT",
            "ALTER TABLE users ADD COLUMN engagement_until {FLOAT}",
            "ALTER TABLE users ADD COLUMN org TEXT",
            "ALTER TABLE users ADD COLUMN engagement_reminded INTEGER",
            "ALTER TABLE users ADD COLUMN engagement_ended_at {FLOAT}",
            "CREATE INDEX users_engagement ON users (engagement_until)",
        ),
    ),
    Migration(
        9,
        "target labels and access profiles",
        (
            # Labels describe a target (env=prod, role=db); profiles select targets by
            # them. One row per (target, key): a key has one value.
            """CREATE TABLE target_labels (
                target_id {BIGINT} NOT NULL REFERENCES targets (id),
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (target_id, key)
            )""",
            # A profile: a label selector plus what a grant under it allows. Removed
            # profiles keep their row (grants point at it); only live names are unique.
            """CREATE TABLE profiles (
                id {ID},
                name TEXT NOT NULL,
                selector TEXT NOT NULL,
                logins TEXT NOT NULL,
                credset TEXT,
                options TEXT NOT NULL,
                max_duration {FLOAT},
                approvals INTEGER,
                approvers TEXT NOT NULL,
                created_at {FLOAT} NOT NULL,
                created_by TEXT NOT NULL,
                removed_at {FLOAT}
            )""",
            "CREATE UNIQUE INDEX profiles_live_name ON profiles (name) WHERE removed_at IS NULL",
            # A request may name a profile instead of targets.
            "ALTER TABLE access_requests ADD COLUMN profile TEXT",
        ),
        {
            # A profile grant names a profile and no target, so target_id becomes
            # nullable. SQLite cannot drop NOT NULL in place and a rebuild of grants
            # is refused while sessions and tokens reference it with foreign keys
            # on; dropping a NOT NULL constraint leaves the stored rows as they
            # are, so the table's definition is edited (the documented way, see
            # "Making Other Kinds Of Table Schema Changes" in SQLite's ALTER TABLE
            # page); RESET reloads the schema, the next DDL bumps the schema cookie
            # so other connections reload it too.
            "postgresql": ("ALTER TABLE grants ALTER COLUMN target_id DROP NOT NULL",),
            "sqlite": (
                "PRAGMA writable_schema = ON",
                "UPDATE sqlite_master SET sql = replace(sql,"
                " 'target_id INTEGER NOT NULL REFERENCES targets (id)',"
                " 'target_id INTEGER REFERENCES targets (id)')"
                " WHERE type = 'table' AND name = 'grants'",
                "PRAGMA writable_schema = RESET",
            ),
        },
        (
            "ALTER TABLE grants ADD COLUMN profile_id {BIGINT} REFERENCES profiles (id)",
            "CREATE INDEX grants_profile ON grants (profile_id)",
        ),
    ),
    Migration(
        10,
        "commands held for approval",
        (
            # A request of kind 'command': what a hold rule stopped (held_kind is
            # command, statement or file), in which live session, by which rule.
            "ALTER TABLE access_requests ADD COLUMN held_kind TEXT",
            "ALTER TABLE access_requests ADD COLUMN held_text TEXT",
            "ALTER TABLE access_requests ADD COLUMN held_session TEXT",
            "ALTER TABLE access_requests ADD COLUMN held_rule TEXT",
        ),
    ),
    Migration(
        11,
        "node registry",
        (
            # One row per node (or worker) that ever started on this state: where its
            # listeners are, so a console on any node can reach it, and its heartbeat,
            # so a node that died without a word is seen as such. The certificate is
            # the control listener's, so peers pin it instead of trusting a CA.
            """CREATE TABLE nodes (
                name TEXT PRIMARY KEY,
                pid {BIGINT} NOT NULL,
                version TEXT NOT NULL,
                ssh_addr TEXT,
                pg_addr TEXT,
                control_addr TEXT,
                control_cert TEXT,
                started_at {FLOAT} NOT NULL,
                heartbeat_at {FLOAT} NOT NULL,
                stopped_at {FLOAT},
                draining_until {FLOAT}
            )""",
        ),
    ),
    Migration(
        13,
        "per-address login failures and blocks",
        (
            # Failed logins by source (IPv4 address or IPv6 /64), whatever the user
            # name: every node sharing the state DB counts the same rows.
            """CREATE TABLE address_failures (
                id {ID},
                source TEXT NOT NULL,
                at {FLOAT} NOT NULL,
                user_name TEXT NOT NULL,
                reason TEXT NOT NULL
            )""",
            "CREATE INDEX address_failures_source ON address_failures (source, at)",
            # A blocked source; strikes doubles the next block.
            """CREATE TABLE address_blocks (
                source TEXT PRIMARY KEY,
                until {FLOAT} NOT NULL,
                strikes INTEGER NOT NULL,
                failures INTEGER NOT NULL,
                blocked_at {FLOAT} NOT NULL
            )""",
        ),
    ),
    Migration(
        14,
        "search index: what sessions typed, showed, queried, returned and moved",
        (
            # A session's lines, a chunk per kind (and per ~64 KiB of text): ``offsets``
            # (zlib JSON) gives each line's first moment in seconds since the start.
            """CREATE TABLE search_chunks (
                id {ID},
                session_id TEXT NOT NULL REFERENCES sessions (id),
                kind TEXT NOT NULL,
                first_offset {FLOAT} NOT NULL,
                lines {BIGINT} NOT NULL,
                offsets {BLOB} NOT NULL,
                body {BLOB},
                text TEXT
            )""",
            "CREATE INDEX search_chunks_session ON search_chunks (session_id)",
            # The per-session marker, written in the same transaction as its chunks.
            """CREATE TABLE search_indexed (
                session_id TEXT PRIMARY KEY REFERENCES sessions (id),
                indexed_at {FLOAT} NOT NULL,
                entries {BIGINT} NOT NULL,
                source_bytes {BIGINT} NOT NULL
            )""",
        ),
        by_backend={
            # SQLite: the lines compressed in ``body``; a contentless FTS5 trigram index
            # without positions (detail=none) over them.
            "sqlite": (
                "CREATE VIRTUAL TABLE search_fts USING fts5(text, content='',"
                " tokenize='trigram', detail=none, columnsize=0)",
            ),
            # PostgreSQL: the lines in ``text`` (TOAST compresses it) under a pg_trgm GIN
            # index (pg_trgm is a trusted contrib extension since PostgreSQL 13).
            "postgresql": (
                "CREATE EXTENSION IF NOT EXISTS pg_trgm",
                "CREATE INDEX search_chunks_trgm ON search_chunks USING gin (text gin_trgm_ops)",
            ),
        },
    ),
    Migration(
        16,
        "cancel keys of the fleet",
        (
            # Which node handed out a client-facing PostgreSQL cancel key (the pid
            # half; the secret stays in that node's memory), so a CancelRequest a
            # load balancer sends to another node can be forwarded to the owner.
            """CREATE TABLE pg_cancel_keys (
                pid {BIGINT} PRIMARY KEY,
                node TEXT NOT NULL,
                issued_at {FLOAT} NOT NULL
            )""",
            "CREATE INDEX pg_cancel_keys_node ON pg_cancel_keys (node)",
        ),
    ),
    Migration(
        17,
        "search index: terminal output as postings only, its lines read from the recording",
        (
            # A digest of each chunk's lines (and offsets): what the chunk held, also for
            # the chunks whose lines are no longer stored (terminal output).
            "ALTER TABLE search_chunks ADD COLUMN digest {BLOB}",
            # Output chunks: every line of the session is in the recording's plain stream
            # (a search may rule the session out from the stream, without the emulator).
            "ALTER TABLE search_chunks ADD COLUMN in_stream {BOOL}",
        ),
        by_backend={
            # SQLite: the 4-grams of digit runs, one word each (a number's trigrams are
            # everywhere); contentless like search_fts, rowid = the chunk's id.
            "sqlite": (
                "CREATE VIRTUAL TABLE search_digits USING fts5(text, content='',"
                " tokenize='unicode61', detail=none, columnsize=0)",
            ),
            # PostgreSQL: each chunk's trigrams and digit 4-grams as a Bloom signature,
            # kept inline in the row (no TOAST), instead of the pg_trgm GIN index (which
            # needs the text stored beside it, and cost 2.5 KB a session for the small
            # kinds alone); rows from before keep their text and are always candidates.
            "postgresql": (
                "ALTER TABLE search_chunks ADD COLUMN sig bit varying",
                "ALTER TABLE search_chunks ALTER COLUMN sig SET STORAGE MAIN",
                "DROP INDEX IF EXISTS search_chunks_trgm",
            ),
        },
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_VERSIONS = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at {FLOAT} NOT NULL
)"""


def render(statement: str, backend: Backend) -> str:
    """Fill a migration template with the backend's type names."""
    return statement.format(**backend.types)


def _current(tx: Tx) -> int:
    row = tx.one("SELECT MAX(version) AS v FROM schema_migrations")
    return int(row["v"]) if row and row["v"] is not None else 0


def schema_version(backend: Backend) -> int:
    """The applied schema version (0 for an empty database)."""
    if not backend.table_exists("schema_migrations"):
        return 0
    with backend.transaction() as tx:
        return _current(tx)


def migrate(backend: Backend, now: float, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply pending migrations; return the resulting version. Idempotent.

    Raises StoreError if the database is newer than this code.
    """
    with backend.transaction(write=True) as tx:
        tx.lock(MIGRATE_LOCK)
        tx.run(render(_CREATE_VERSIONS, backend))
        current = _current(tx)
        latest = migrations[-1].version if migrations else 0
        if current > latest:
            raise StoreError(
                f"the state store has schema version {current} but this bastion only knows "
                f"up to {latest}; upgrade bastion on this node"
            )
        for m in migrations:
            if m.version <= current:
                continue
            for statement in (*m.statements, *m.by_backend.get(backend.name, ()), *m.after):
                tx.run(render(statement, backend))
            tx.run(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                [m.version, m.name, now],
            )
            current = m.version
    return current
