"""The running bastion node: configuration, state store, CA and live sessions in one place.

Protocol front ends (``bastion.ssh``) get one ``BastionNode`` and call policy
through it; blocking store calls run in worker threads so a slow database never
stalls the event loop that relays everyone's keystrokes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

from bastion import audit_actions as actions
from bastion import loop_lag
from bastion.ca import CertificateAuthority
from bastion.config import Config
from bastion.engagements import run_engagements
from bastion.errors import StoreUnavailable
from bastion.metrics import Metrics
from bastion.mfa import LockoutPolicy
from bastion.notify import Notifier
from bastion.penalties import Penalties
from bastion.policy.hook import PolicyHook
from bastion.recording import RecordingService
from bastion.request_flow import RequestEvent, RequestFlow
from bastion.request_hooks import FirstConnectClock, notification_of, run_lapses
from bastion.search_indexer import SearchIndexer
from bastion.secretbox import SecretBox
from bastion.session.hold import HoldWaits
from bastion.session.hooks import Hooks
from bastion.session.registry import SessionRegistry
from bastion.session.timebox import LiveSessions
from bastion.startups import StartupLimits
from bastion.store import Store, open_store
from bastion.store.audit_chain import normalize_details
from bastion.store.models import GrantState, User
from bastion.store.outbox import Outbox, StateWriter
from bastion.uploader import RecordingUploader

log = logging.getLogger(__name__)

POLICY_LOCK_SECONDS = 10 * 365 * 86400.0
"""A policy lock lasts until an admin unlocks the user."""
NOTIFY_FLUSH_SECONDS = 5.0
"""At stop, how long pending notifications get before they are audited as not delivered."""
STATE_PROBE_SECONDS = 1.0
"""How often the node checks the state database (for /healthz) and replays its outbox."""


class Buffered(Protocol):
    """Something on a data path that can say how many bytes it holds now."""

    def buffered(self) -> int:
        """Bytes held now."""


P = ParamSpec("P")
R = TypeVar("R")


class BastionNode:
    """Everything one node needs at run time."""

    def __init__(
        self,
        config: Config,
        store: Store,
        ca: CertificateAuthority,
        recordings: RecordingService | None = None,
    ) -> None:
        self.config = config
        self.recordings = recordings if recordings is not None else RecordingService(config)
        self.store = store
        self.ca = ca
        self.node = config.node
        self.clock: Callable[[], float] = time.time
        self.lockout = LockoutPolicy(
            max_failures=config.mfa.max_failures,
            window=config.mfa.failure_window,
            duration=config.mfa.lockout,
        )
        self.live = LiveSessions(
            warn_before=config.timebox.warn_before, idle_timeout=config.ssh.idle_timeout
        )
        self.live.outage_grace = config.state_outage_grace
        self.writer = StateWriter(store, Outbox(config.outbox_path))
        """The node's own writes (sessions, audit): to the database, or the outbox meanwhile."""
        self.sessions = SessionRegistry()
        """Every session from admission to its final row (the time box holds the live ones)."""
        self.hooks = Hooks()
        """Admission, policy and observer hooks registered at start."""
        self.policy = PolicyHook(self)
        """Guardrail rules from the state store (registered in ``start_background``)."""
        self.stopping = False
        """Set when the node stops: new sessions are refused."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ssh_connections: set[Buffered] = set()
        """Contractor SSH connections past the startup check (their transport buffers)."""
        self.ssh_startups = StartupLimits(
            config.ssh.max_startups, config.ssh.per_source_max_startups
        )
        """SSH connections still authenticating (ssh.max_startups, per_source_max_startups)."""
        self.penalties = Penalties(
            config.login_limits.penalties, config.login_limits.penalty_exempt
        )
        """Per-source penalties, shared by both listeners (``bastion.penalties``)."""
        self.notifier = Notifier.from_config(config.notify, self.audit, config.node)
        self.hold_waits = HoldWaits()
        """Commands held for approval here: a decision announced on this node wakes them."""
        self.requests = RequestFlow(
            store,
            config.requests,
            clock=lambda: self.clock(),
            announce=self._announce_request,
            origin={"via": "ssh", "node": config.node},
        )
        """The access-request workflow (blocking: run its steps through ``call``)."""
        """Webhook and syslog sinks: ``notifier.send(Notification(...))`` returns at once."""
        self.uploads: RecordingUploader | None = None
        """Sealed recordings to S3 (``[recording] storage = "s3://..."``), else None."""
        if config.recording_s3 is not None:
            self.uploads = RecordingUploader(
                config.recording_s3, self.recordings.storage, store, self.audit
            )

        self.indexer = SearchIndexer(store, config)
        """The search index's thread: sealed sessions are queued to it, never indexed inline."""
        self.metrics = Metrics()
        self.metrics.gauges.update(
            live_sessions=lambda: len(self.live.list()),
            sessions=lambda: len(self.sessions),
            unauthenticated_connections=lambda: self.ssh_startups.in_progress,
            live_recordings=lambda: self.recordings.live_count,
            notifications_pending=lambda: self.notifier.pending,
            state_outbox_pending=lambda: self.writer.pending,
            state_unavailable=lambda: 1 if self.store.unavailable else 0,
        )
        self.loop_lag = loop_lag.LoopLag()
        """Timer lateness of this node's event loop (a gauge, probed 4 times a second)."""
        self.metrics.gauges.update(
            event_loop_lag_seconds=self.loop_lag.worst,
            asyncio_tasks=loop_lag.task_count,
            open_fds=loop_lag.open_descriptors,
            resident_memory_bytes=loop_lag.resident_bytes,
            penalised_sources=lambda: len(self.penalties.penalised(self.clock())),
            recordings_awaiting_upload=lambda: self.uploads.pending if self.uploads else 0,
            stalled_sessions=lambda: sum(
                1 for s in self.live.list() if s.stalled_since is not None
            ),
            relay_buffered_bytes=self._relay_buffered,
        )

    def _relay_buffered(self) -> int:
        """Bytes this node holds for all sessions' relays now (read at scrape time only)."""
        from bastion.session.core import Buffering

        held = sum(c.buffered() for c in self.ssh_connections)
        return held + sum(
            s.adapter.buffered() for s in self.sessions.all() if isinstance(s.adapter, Buffering)
        )

    @classmethod
    def from_config(cls, config: Config) -> BastionNode:
        """Open the store and load keys named by ``config`` (raises ConfigError)."""
        box = SecretBox.from_env_or_file(config.secret_key_file)
        store = open_store(config.state_url, box)
        return cls(config, store, CertificateAuthority.load(config.ca_key))

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a blocking store call in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def write(self, op: str, **args: Any) -> None:
        """One of the node's own state writes (``bastion.store.outbox`` names them).

        While the state database is unreachable it waits in the outbox and reaches
        the database, in order, when it returns; nothing is lost and nobody waits.
        """
        await self.call(self.writer.write, op, **args)

    def state_problem(self) -> str | None:
        """What is wrong with the state database, for /healthz (None: it answers)."""
        reason = self.store.unavailable
        if reason is None:
            pending = self.writer.pending
            if pending:  # reachable again, the backlog is still going in (order is kept)
                return f"{pending} state write(s) still being replayed from the outbox"
            return None
        since = self.store.down_since
        down = f" for {self.clock() - since:.0f}s" if since is not None else ""
        return (
            f"state database unreachable{down} ({reason}); new logins are refused, live "
            f"sessions end after {self.config.state_outage_grace:g}s, "
            f"{self.writer.pending} write(s) wait in the outbox {self.writer.outbox.path}"
        )

    async def watch_state(self) -> None:
        """Probe the state database every second and replay the outbox when it answers."""
        while True:
            await asyncio.sleep(STATE_PROBE_SECONDS)
            try:
                await self.call(self.store.ping)
                if self.writer.pending:
                    done = await self.call(self.writer.replay)
                    log.warning(
                        "state outbox: replayed %d write(s), %d still waiting",
                        done,
                        self.writer.pending,
                    )
            except StoreUnavailable:
                continue  # the store logged the transition once; /healthz says the rest
            except Exception:  # keep probing; the outbox keeps every write meanwhile
                log.exception("state probe or outbox replay failed; retrying")

    async def audit(
        self, actor: str, action: str, subject: str | None = None, **details: Any
    ) -> None:
        """Append an audit row; a failure to audit is logged loudly, never swallowed silently."""
        details.setdefault("node", self.node)
        self.metrics.count(action)
        try:
            await self.write(
                "append_audit",
                actor=actor,
                action=action,
                subject=subject,
                details=normalize_details(details),
                at=self.clock(),
            )
        except Exception:
            log.exception("AUDIT WRITE FAILED: %s %s %s %s", actor, action, subject, details)
            raise

    def _announce_request(self, event: RequestEvent) -> None:
        """A request changed: tell the notification sinks (never blocks), wake a held command."""
        self.hold_waits.wake(event.request.id)
        self.notifier.send(notification_of(event, self.clock()))

    async def lock_user_for_policy(self, user: User, reason: str) -> None:
        """Lock ``user`` until an admin unlocks (a policy rule with action ``lock``)."""
        until = self.clock() + POLICY_LOCK_SECONDS
        await self.call(self.store.lock_user, user.id, until)
        await self.audit(
            "policy", actions.USER_LOCKED, user.name, until=until, by="policy", reason=reason
        )

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Start a background task and keep a reference until it finishes."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _grant_states(self, ids: Sequence[int]) -> dict[int, tuple[GrantState, float]]:
        return await self.call(self.store.grant_states, list(ids))

    async def _terminations(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        return await self.call(self.store.termination_requests, list(ids))

    async def _unreached(self, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
        return await self.call(self.store.unreached, list(pairs))

    def start_background(self) -> None:
        """Start the time box (grant end, revocation, idleness) and the recording ticker."""
        self.spawn(
            self.live.watch(
                self._grant_states,
                self.config.timebox.poll_interval,
                self._terminations,
                self._unreached,
            )
        )
        self.spawn(self.recordings.run_ticker())
        self.spawn(self.loop_lag.run())
        self.spawn(self.watch_state())
        if self.uploads is not None:
            self.spawn(self.uploads.run())

        self.indexer.start()
        self.notifier.start()
        self.spawn(run_lapses(self))
        self.hooks.register(self.policy)
        self.spawn(run_engagements(self))
        if self.config.requests.clock == "first-connect":
            self.hooks.register(FirstConnectClock(self))
        if self.config.alerts.any:
            from bastion.alerts.detectors import AlertHook

            self.hooks.register(AlertHook(self))

    async def close(self) -> None:
        """Flush notifications, cancel background tasks and close the store."""
        await self.notifier.close(NOTIFY_FLUSH_SECONDS)
        await asyncio.to_thread(self.indexer.close)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):  # the outbox keeps what could not be written
            await self.call(self.writer.replay)
        self.writer.outbox.close()
        self.store.close()
