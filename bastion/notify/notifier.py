"""Background delivery of notifications: queued, retried with back-off, failures audited.

``Notifier.send`` only appends to a queue and returns, so a request decision or an
alert never waits on a webhook. Each sink has its own queue and worker, so a dead
receiver slows only itself; each delivery has its own retry schedule, so one
failing notification does not hold back the next. Blocking I/O (urllib, sockets)
runs in the notifier's own small thread pool, never in the default executor the
state store's calls use. A delivery that fails its last attempt, or is dropped from
a full queue, or is still pending when the node stops, is audited as
``notify.failed``: an auditor learns that someone was *not* told.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion import audit_actions as actions
from bastion.notify.event import Notification
from bastion.notify.settings import NotifyConfig
from bastion.notify.syslog import SyslogSink
from bastion.notify.webhook import DeliveryError, WebhookSink

log = logging.getLogger(__name__)

RETRY_DELAYS: tuple[float, ...] = (2.0, 5.0, 15.0, 40.0)
"""Seconds between attempts: five attempts over about a minute."""
MAX_PENDING = 1000
"""Per sink; when full, the oldest pending notification is dropped (and audited)."""
RECENT = 100
"""Delivery outcomes kept in ``Notifier.recent``."""


class Sink(Protocol):
    """Where notifications go. ``deliver`` blocks and raises on failure."""

    name: str

    def wants(self, event: str) -> bool: ...
    def deliver(self, notification: Notification) -> None: ...
    def close(self) -> None: ...


class AuditFn(Protocol):
    """``BastionNode.audit``'s shape: the notifier audits without importing the node."""

    def __call__(
        self, actor: str, action: str, subject: str | None = None, **details: Any
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class DeliveryRecord:
    """One outcome in the delivery log: ``delivered``, ``retry``, ``failed`` or ``dropped``."""

    at: float
    sink: str
    event: str
    id: str
    outcome: str
    attempts: int
    error: str = ""


@dataclass(order=True)
class _Pending:
    seq: int
    notification: Notification = field(compare=False)
    attempts: int = field(default=0, compare=False)
    error: str = field(default="", compare=False)


class _SinkQueue:
    """One sink's pending deliveries: ready ones in order, retries by due time."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.ready: deque[_Pending] = deque()
        self.waiting: list[tuple[float, int, _Pending]] = []
        self.wake = asyncio.Event()
        self.in_flight = False
        self.idle = asyncio.Event()
        self.idle.set()

    def __len__(self) -> int:
        return len(self.ready) + len(self.waiting)

    def pop_oldest(self) -> _Pending:
        if self.waiting:
            i = min(range(len(self.waiting)), key=lambda j: self.waiting[j][2].seq)
            if not self.ready or self.waiting[i][2].seq < self.ready[0].seq:
                item = self.waiting.pop(i)[2]
                heapq.heapify(self.waiting)
                return item
        return self.ready.popleft()

    def next_due(self, now: float, flushing: bool) -> _Pending | None:
        if self.waiting and (flushing or self.waiting[0][0] <= now):
            return heapq.heappop(self.waiting)[2]
        return self.ready.popleft() if self.ready else None

    def seconds_to_next(self, now: float) -> float | None:
        return max(0.0, self.waiting[0][0] - now) if self.waiting else None

    def drained(self) -> None:
        if not self and not self.in_flight:
            self.idle.set()


class Notifier:
    """Queues notifications per sink and delivers them in the background.

    ``audit`` is called as ``await audit("notify", "notify.failed", sink_name, event=...,
    id=..., error=..., attempts=...)``. ``retry_delays`` are the waits between attempts
    (attempts = len + 1); tests pass short ones.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        audit: AuditFn,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.sinks = tuple(sinks)
        self._audit = audit
        self._delays = tuple(retry_delays)
        self._max_pending = max_pending
        self._queues = [_SinkQueue(s) for s in self.sinks]
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._audits: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, min(4, len(self.sinks))), thread_name_prefix="bastion-notify"
        )
        self._flushing = False
        self._closed = False
        self.counts: Counter[str] = Counter()
        """``delivered``, ``retried``, ``failed``, ``dropped`` (over all sinks)."""
        self.recent: deque[DeliveryRecord] = deque(maxlen=RECENT)
        """The last delivery outcomes, newest last."""

    @classmethod
    def from_config(
        cls, config: NotifyConfig, audit: AuditFn, node: str, **kwargs: Any
    ) -> Notifier:
        """Sinks for every ``[[notify.*]]`` table; reads secret files (raises ConfigError)."""
        sinks: list[Sink] = [WebhookSink(c, node, i) for i, c in enumerate(config.webhooks, 1)]
        sinks += [SyslogSink(c, node, i) for i, c in enumerate(config.syslogs, 1)]
        return cls(sinks, audit, **kwargs)

    @property
    def pending(self) -> int:
        """Deliveries queued or waiting for a retry, over all sinks."""
        return sum(len(q) + q.in_flight for q in self._queues)

    def start(self) -> None:
        """Start one worker per sink on the running loop (pending sends go out then)."""
        self._loop = asyncio.get_running_loop()
        for q in self._queues:
            task = self._loop.create_task(self._run(q), name=f"notify {q.sink.name}")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    def send(self, notification: Notification) -> None:
        """Queue ``notification`` for every sink that wants it; returns at once, never raises
        for a sink's sake. Safe from the event loop and, once started, from other threads."""
        if not self._queues:
            return
        if self._closed:
            log.warning("notifier closed: %s %s not sent", notification.event, notification.id)
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._enqueue, notification)
                return
        self._enqueue(notification)

    def _enqueue(self, notification: Notification) -> None:
        for q in self._queues:
            if not q.sink.wants(notification.event):
                continue
            if len(q) >= self._max_pending:
                old = q.pop_oldest()
                log.warning(
                    "notify queue for %s full (%d): dropped %s %s",
                    q.sink.name, self._max_pending, old.notification.event, old.notification.id,
                )  # fmt: skip
                self._finish(q, old, "dropped", f"queue full ({self._max_pending} pending)")
            q.ready.append(_Pending(next(self._seq), notification))
            q.idle.clear()
            q.wake.set()

    async def _run(self, q: _SinkQueue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = q.next_due(loop.time(), self._flushing)
            if item is None:
                q.drained()
                q.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(q.wake.wait(), q.seconds_to_next(loop.time()))
                continue
            q.in_flight = True
            try:
                await self._attempt(q, item, loop)
            except asyncio.CancelledError:
                q.ready.appendleft(item)  # close() audits it as not delivered
                raise
            finally:
                q.in_flight = False

    async def _attempt(
        self, q: _SinkQueue, item: _Pending, loop: asyncio.AbstractEventLoop
    ) -> None:
        item.attempts += 1
        try:
            await loop.run_in_executor(self._executor, q.sink.deliver, item.notification)
        except (DeliveryError, OSError) as e:
            item.error = str(e) or type(e).__name__
        except Exception as e:  # a bug in a sink: no retry, but still audited
            log.exception("notify sink %s failed unexpectedly", q.sink.name)
            item.error = f"{type(e).__name__}: {e}"
            item.attempts = max(item.attempts, len(self._delays) + 1)
        else:
            self._record(q, item, "delivered")
            return
        if item.attempts > len(self._delays) or self._flushing:
            log.error(
                "notification %s to %s failed after %d attempts: %s",
                item.notification.event, q.sink.name, item.attempts, item.error,
            )  # fmt: skip
            self._finish(q, item, "failed", item.error)
            return
        delay = self._delays[item.attempts - 1]
        log.warning(
            "notification %s to %s failed (attempt %d): %s; retrying in %gs",
            item.notification.event, q.sink.name, item.attempts, item.error, delay,
        )  # fmt: skip
        self._record(q, item, "retried")
        heapq.heappush(q.waiting, (loop.time() + delay, item.seq, item))

    def _record(self, q: _SinkQueue, item: _Pending, outcome: str, error: str = "") -> None:
        self.counts[outcome] += 1
        n = item.notification
        self.recent.append(
            DeliveryRecord(time.time(), q.sink.name, n.event, n.id, outcome, item.attempts, error)
        )

    def _finish(self, q: _SinkQueue, item: _Pending, outcome: str, error: str) -> None:
        """A delivery that will not happen: counted, logged and audited."""
        self._record(q, item, outcome, error)
        n = item.notification
        coro = self._audit(
            "notify",
            actions.NOTIFY_FAILED,
            q.sink.name,
            event=n.event,
            id=n.id,
            error=error,
            attempts=item.attempts,
        )
        try:
            task = asyncio.get_running_loop().create_task(self._audited(coro))
        except RuntimeError:  # dropped before the node started: nothing to audit with yet
            close = getattr(coro, "close", None)
            if close is not None:
                close()
            return
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)

    @staticmethod
    async def _audited(coro: Awaitable[None]) -> None:
        try:
            await coro
        except Exception:
            log.exception("could not audit a failed notification")

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking notifications, try what is pending once more (retries no longer
        wait) for up to ``grace`` seconds, audit what is left, then stop the workers."""
        self._closed = True
        self._flushing = True
        for q in self._queues:
            q.wake.set()
        if self._workers:
            waits = [asyncio.ensure_future(q.idle.wait()) for q in self._queues]
            _done, not_done = await asyncio.wait(waits, timeout=grace)
            for w in not_done:
                w.cancel()
        for task in list(self._workers):
            task.cancel()
        for task in list(self._workers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for q in self._queues:
            while q:
                item = q.pop_oldest()
                self._finish(q, item, "failed", "not delivered before the node stopped")
        if self._audits:
            await asyncio.gather(*self._audits, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        for q in self._queues:
            q.sink.close()
