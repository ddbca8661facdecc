"""Several processes on one node's ports: what each worker runs with, and the supervisor.

One CPython process relays on one core. ``[node] workers = N`` starts N worker
processes that each bind the node's SSH and PostgreSQL ports with SO_REUSEPORT
(the kernel spreads new connections over them) and share the state store and
the recording spool. Each worker is a node of its own in the registry
(``NAME/w1`` …) with its own control socket and ports, so a worker that dies
takes only its own sessions with it: the supervisor restarts it, and the new
worker closes what the dead one left open as ``node-crash``.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bastion.config import Config

log = logging.getLogger(__name__)

RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds before restarting a worker that died, growing while it keeps dying young."""
HEALTHY_AFTER = 60.0
"""A worker that ran this long before dying is restarted at the first back-off step."""
POLL_SECONDS = 0.2


def worker_name(node: str, worker: int) -> str:
    """The registry and session-row name of worker ``worker`` of node ``node``."""
    return f"{node}/w{worker}"


def _shifted(listen: tuple[str, int] | None, worker: int) -> tuple[str, int] | None:
    if listen is None or listen[1] == 0:
        return listen
    return (listen[0], listen[1] + worker - 1)


def _socket_for(path: Path | None, worker: int) -> Path | None:
    """``control.sock`` for worker 1, ``control.wI.sock`` for worker I (likewise any file)."""
    if path is None or worker == 1:
        return path
    return path.with_name(f"{path.stem}.w{worker}{path.suffix}")


def worker_config(config: Config, worker: int) -> Config:
    """The config worker ``worker`` (1-based) runs with.

    Worker 1 keeps the configured control socket and TCP ports, so the CLI and
    monitoring find a node as before; worker ``i`` gets ``control.wI.sock`` and
    each configured TCP port (metrics, control) plus ``i - 1``. The SSH and
    PostgreSQL ports are shared by all (SO_REUSEPORT).
    """
    control = dataclasses.replace(
        config.control,
        socket=_socket_for(config.control.socket, worker),
        listen=_shifted(config.control.listen, worker),
    )
    return dataclasses.replace(
        config,
        node=worker_name(config.node, worker),
        worker=worker,
        control=control,
        metrics_listen=_shifted(config.metrics_listen, worker),
        state_outbox=_socket_for(config.state_outbox, worker) or config.state_outbox,
    )


def worker_names(config: Config) -> list[str]:
    """The names this node's workers register under."""
    return [worker_name(config.node, i) for i in range(1, config.workers + 1)]


def recover_all_workers(config: Config) -> list[str]:
    """Close what any earlier worker of this node left open (none runs yet).

    Covers workers beyond today's count too (the count was lowered), and the
    single-process name, so no row stays live forever after a change of
    ``workers``. Each worker's state outbox is replayed first.
    """
    from bastion.recording import RecordingService, recover_crashed_sessions
    from bastion.secretbox import SecretBox
    from bastion.store import open_store
    from bastion.store.outbox import Outbox, StateWriter

    recordings = RecordingService(config)
    store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
    try:
        # what workers kept during a state outage goes in first: an end they wrote
        # there (node-stop, exit) must not be overwritten by a node-crash recovery
        paths = {config.outbox_path} | {
            worker_config(config, i).outbox_path for i in range(1, config.workers + 1)
        }
        for path in sorted(paths):
            if path.exists():
                writer = StateWriter(store, Outbox(path))
                try:
                    if writer.pending:
                        log.warning("state outbox %s: replayed %d write(s)", path, writer.replay())
                finally:
                    writer.outbox.close()
        prefix = f"{config.node}/w"
        names = {
            s.node
            for s in store.list_sessions(live=True, limit=100_000)
            if s.node == config.node or s.node.startswith(prefix)
        }
        recovered: list[str] = []
        for name in sorted(names):
            recovered += recover_crashed_sessions(recordings, store, name)
        return recovered
    finally:
        store.close()


class Supervisor:
    """Start N workers, restart those that die, pass signals on, exit when all have."""

    def __init__(self, config: Config, serve_argv: Sequence[str]) -> None:
        self.config = config
        self._argv = list(serve_argv)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._started: dict[int, float] = {}
        self._deaths: dict[int, int] = {}
        self._restart_at: dict[int, float] = {}
        self._stopping = False
        self._signals: list[int] = []

    def _spawn(self, worker: int) -> None:
        argv = [sys.executable, "-m", "bastion", "serve", *self._argv, "--worker", str(worker)]
        self._procs[worker] = subprocess.Popen(argv, stdin=subprocess.DEVNULL)  # noqa: S603  our own interpreter and module
        self._started[worker] = time.monotonic()
        log.info("worker %d started (pid %d)", worker, self._procs[worker].pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _pass_on(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self._stopping:
                log.warning("stop signal: stopping %d worker(s)", len(self._procs))
            self._stopping = True
            self._restart_at.clear()
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    def _reap(self) -> None:
        now = time.monotonic()
        for worker, proc in list(self._procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._procs[worker]
            if self._stopping or code == 0:
                # a routine stop (ours, or a drain of that worker): not a crash
                log.info("worker %d exited (%d)", worker, code)
                continue
            lived = now - self._started[worker]
            deaths = 0 if lived >= HEALTHY_AFTER else self._deaths.get(worker, 0) + 1
            self._deaths[worker] = deaths
            delay = RESTART_BACKOFF[min(deaths, len(RESTART_BACKOFF) - 1)]
            log.error(
                "worker %d (pid %d) died with status %d after %.0fs; restarting in %gs",
                worker,
                proc.pid,
                code,
                lived,
                delay,
            )
            self._restart_at[worker] = now + delay

    def run(self) -> int:
        """Supervise until every worker has exited after a stop (or drain); return 0."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        recovered = recover_all_workers(self.config)
        if recovered:
            log.warning(
                "recovered %d session(s) left open: %s", len(recovered), ", ".join(recovered)
            )
        for worker in range(1, self.config.workers + 1):
            self._spawn(worker)
        while self._procs or self._restart_at:
            while self._signals:
                self._pass_on(self._signals.pop(0))
            self._reap()
            now = time.monotonic()
            for worker, at in list(self._restart_at.items()):
                if at <= now:
                    del self._restart_at[worker]
                    self._spawn(worker)
            time.sleep(POLL_SECONDS)
        return 0
