"""The node's background uploader: sealed spool recordings to S3, then off the spool.

Recordings are written to the local spool exactly as without S3 (a dead network
never stalls a keystroke); this task runs off the relay path, in worker threads.
For each sealed recording it uploads the file (checksummed, confirmed), points the
session row at ``s3://bucket/key``, and only then deletes the spool copy: a crash
at any step leaves either the spool file (uploaded again at the next start) or a
row that already names the object (the spool copy is removed once the object is
seen whole). A failed attempt waits 1, 2, 4 ... up to ``retry_max`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion import audit_actions as actions
from bastion.s3_config import S3Config
from bastion.s3store import (
    S3Error,
    S3Location,
    make_client,
    object_exists,
    upload_recording,
)
from bastion.store import Store
from recorder import LocalStorage
from recorder.storage import SUFFIX

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0
Audit = Callable[..., Awaitable[None]]


@dataclass
class _Pending:
    session_id: str
    spool_location: str
    failures: int = 0
    due: float = 0.0
    last_error: str = ""


class RecordingUploader:
    """Uploads sealed recordings from one node's spool; ``run`` is its only task."""

    def __init__(
        self,
        config: S3Config,
        spool: LocalStorage,
        store: Store,
        audit: Audit,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.spool = spool
        self.store = store
        self._audit = audit
        self._clock = clock
        self._client: Any = None
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        """Sealed recordings waiting for (another) upload attempt."""
        return len(self._pending)

    def location_of(self, spool_location: str) -> S3Location:
        """Where a spool recording goes in the bucket."""
        return S3Location(self.config.bucket, self.config.key_for(spool_location))

    def submit(self, session_id: str, spool_location: str) -> None:
        """Queue a sealed recording (call on the event loop; never blocks)."""
        if session_id not in self._pending:
            self._pending[session_id] = _Pending(session_id, spool_location, due=self._clock())
        self._wake.set()

    async def run(self) -> None:
        """Pick up what an earlier run left in the spool, then upload as sessions end."""
        while True:  # the state store or the spool may be unreadable for a while at start
            try:
                await asyncio.to_thread(self._scan_spool)
                break
            except Exception:
                log.exception(
                    "scanning the recording spool %s failed; again in %.0f s",
                    self.spool.root, self.config.retry_max,
                )  # fmt: skip
                await asyncio.sleep(self.config.retry_max)
        while True:
            now = self._clock()
            for item in [p for p in self._pending.values() if p.due <= now]:
                try:
                    await self._attempt(item)
                except Exception as e:  # never let one recording stop every later upload
                    log.exception("session %s: uploading its recording failed", item.session_id)
                    if item.session_id in self._pending:
                        self._failed(item, f"{type(e).__name__}: {e}")
            self._wake.clear()
            waits = [p.due - self._clock() for p in self._pending.values()]
            timeout = max(0.0, min(waits)) if waits else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    def _client_once(self) -> Any:
        if self._client is None:
            self._client = make_client(self.config)
        return self._client

    def _upload(self, path: Path, location: S3Location) -> None:
        """In a worker thread: building the client (boto3 loads its models) and the upload
        never run on the relay loop."""
        upload_recording(self._client_once(), self.config, path, location)

    def _scan_spool(self) -> None:
        """Queue every sealed spool recording whose row still points at the spool; remove
        those whose row already names an object that is there whole (a crash came between)."""
        for stored in self.spool.list_recordings():
            row = self.store.get_session(stored.session_id)
            if row is None or row.ended_at is None or not row.recording:
                continue  # not sealed yet (or not a session's): left alone
            target = str(self.location_of(stored.location))
            if row.recording == stored.location:
                self._pending.setdefault(
                    row.id, _Pending(row.id, stored.location, due=self._clock())
                )
            elif row.recording == target:
                try:
                    there = object_exists(
                        self._client_once(), S3Location.parse(target), stored.size
                    )
                except S3Error as e:  # the store is down: keep the copy, look again next start
                    log.warning("session %s: %s; its spool copy stays", row.id, e)
                    continue
                if there:
                    self._remove_spool_copy(stored.location)
                else:
                    log.warning(
                        "session %s points at %s, which is missing or differs: "
                        "uploading the spool copy again", row.id, target,
                    )  # fmt: skip
                    self._pending.setdefault(
                        row.id, _Pending(row.id, stored.location, due=self._clock())
                    )
        if self._pending:
            log.info("%d sealed recording(s) in the spool to upload", len(self._pending))

    async def _attempt(self, item: _Pending) -> None:
        location = self.location_of(item.spool_location)
        path = self.spool.path_of(item.spool_location)
        try:
            if not await asyncio.to_thread(path.exists):
                log.error(
                    "session %s: spool file %s is gone before its upload", item.session_id, path
                )
                del self._pending[item.session_id]
                return
            await asyncio.to_thread(self._upload, path, location)
            moved = await asyncio.to_thread(
                self.store.move_recording, item.session_id, item.spool_location, str(location)
            )
        except Exception as e:  # S3Error, OSError, or the state store is down too: retry
            self._failed(item, str(e))
            return
        del self._pending[item.session_id]
        if not moved:
            log.error(
                "session %s no longer points at %s: uploaded to %s, spool copy kept",
                item.session_id, item.spool_location, location,
            )  # fmt: skip
            return
        await asyncio.to_thread(self._remove_spool_copy, item.spool_location)
        log.info("session %s: recording uploaded to %s", item.session_id, location)
        try:
            await self._audit(
                "node",
                actions.RECORDING_UPLOADED,
                None,
                session=item.session_id,
                location=str(location),
                attempts=item.failures + 1,
            )
        except Exception:
            log.exception("auditing the upload of session %s failed", item.session_id)

    def _failed(self, item: _Pending, error: str) -> None:
        item.failures += 1
        delay = min(self.config.retry_max, FIRST_RETRY * 2 ** (item.failures - 1))
        item.due = self._clock() + delay
        item.last_error = error
        log.warning(
            "session %s: upload attempt %d failed (%s); next in %.0f s, the spool copy stays",
            item.session_id, item.failures, error, delay,
        )  # fmt: skip

    def _remove_spool_copy(self, spool_location: str) -> None:
        path = self.spool.path_of(spool_location)
        if not path.name.endswith(SUFFIX):  # never anything but a recording
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        try:  # make the removal durable; a directory removed meanwhile has nothing to sync
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
