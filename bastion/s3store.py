"""Recordings in S3-compatible storage: upload a sealed file, read one back by ranges.

boto3 does the protocol (signing, retries, multipart); this module adds what the
bastion needs on top. ``upload_recording`` sends a SHA-256 checksum the store
checks (each part's, for a multipart upload) and then confirms the stored object
(its size, and its checksum where the store reports one) before anyone may delete
the spool copy. ``RangedObject`` is a seekable file over ranged GETs pinned to the
object's ETag, so ``RecordingReader`` and ``verify`` read an object like a file and
a seek reads only the chunks it needs (the footer index, then the chunks wanted).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from typing import Any

from bastion.s3_config import CREDENTIALS_HELP, S3Config

__all__ = [
    "READ_BUFFER",
    "RangedObject",
    "S3Error",
    "S3Location",
    "is_s3_location",
    "make_client",
    "object_exists",
    "open_object",
    "upload_recording",
]

READ_BUFFER = 256 * 1024
"""Bytes one ranged GET fetches at least (the read-ahead of ``open_object``)."""


class S3Error(Exception):
    """An S3 request failed; the message names the object and the cause."""


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/key`` as stored in a session row."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, text: str) -> S3Location:
        """Split ``s3://bucket/key``; raises ValueError for anything else."""
        if not is_s3_location(text):
            raise ValueError(f"{text!r} is not an s3://bucket/key location")
        bucket, _, key = text[len("s3://") :].partition("/")
        if not bucket or not key:
            raise ValueError(f"{text!r} is not an s3://bucket/key location")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_s3_location(text: str) -> bool:
    """True for a location in object storage (``s3://...``), False for a spool one."""
    return text.startswith("s3://")


def make_client(config: S3Config) -> Any:
    """A boto3 S3 client for ``config`` (credentials from boto3's standard chain).

    Path-style addressing: MinIO, Ceph RGW and test servers are reached by IP or a
    host name without per-bucket DNS, and AWS accepts it too.
    """
    import boto3
    from botocore.config import Config as BotoConfig

    quiet_boto_logs()
    return boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        config=BotoConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def quiet_boto_logs() -> None:
    """boto3's DEBUG lines (every request, its signed headers, a traceback per retry)
    drown the node's own log at ``--log-level DEBUG``; the node logs each failure once,
    with its cause. A level set explicitly for these loggers is kept."""
    for name in ("boto3", "botocore", "s3transfer", "urllib3"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def _not_found(e: BaseException) -> bool:
    """True for S3's answer that the object (or its bucket) does not exist."""
    from botocore.exceptions import ClientError

    if not isinstance(e, ClientError):
        return False
    code = e.response.get("Error", {}).get("Code")
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


def describe(e: BaseException) -> str:
    """A one-line cause for an S3 failure, with the fix for missing credentials."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(e, NoCredentialsError):
        return f"no S3 credentials: {CREDENTIALS_HELP}"
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message', e)}"
    return str(e) or type(e).__name__


# --- upload -------------------------------------------------------------------------


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def file_checksums(path: str | os.PathLike[str], part_size: int) -> tuple[str, str, int]:
    """(SHA-256 of the whole file, composite SHA-256 over ``part_size`` parts, size), base64.

    S3 reports the first for a single PUT and the second (the hash of the parts'
    hashes) for a multipart upload; either confirms the stored bytes are ours.
    """
    whole = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(part_size)
            if not block:
                break
            size += len(block)
            whole.update(block)
            parts.append(hashlib.sha256(block).digest())
    composite = hashlib.sha256(b"".join(parts)).digest()
    return _b64(whole.digest()), _b64(composite), size


def upload_recording(
    client: Any, config: S3Config, path: str | os.PathLike[str], location: S3Location
) -> None:
    """Upload the sealed file at ``path`` to ``location`` and confirm what the store holds.

    Raises S3Error if the upload fails or the stored object does not match the file
    (the spool copy must then be kept). boto3 switches to multipart at
    ``multipart_threshold`` and sends every part's SHA-256, which the store checks.
    """
    from boto3.s3.transfer import TransferConfig

    whole, composite, size = file_checksums(path, config.multipart_threshold)
    transfer = TransferConfig(
        multipart_threshold=config.multipart_threshold,
        multipart_chunksize=config.multipart_threshold,
        max_concurrency=2,
        use_threads=True,
    )
    try:
        client.upload_file(
            os.fspath(path),
            location.bucket,
            location.key,
            ExtraArgs={
                "ChecksumAlgorithm": "SHA256",
                "ContentType": "application/octet-stream",
                "Metadata": {"bastion-sha256": whole},
            },
            Config=transfer,
        )
        head = client.head_object(Bucket=location.bucket, Key=location.key, ChecksumMode="ENABLED")
    except Exception as e:
        raise S3Error(f"uploading {path} to {location} failed: {describe(e)}") from e
    stored_size = int(head.get("ContentLength", -1))
    if stored_size != size:
        raise S3Error(f"{location} holds {stored_size} bytes after the upload, the file {size}")
    stored = head.get("ChecksumSHA256")
    if stored is not None and stored.split("-")[0] not in (whole, composite):
        raise S3Error(f"{location}: the store's SHA-256 {stored} is not the file's {whole}")


def object_exists(client: Any, location: S3Location, size: int) -> bool:
    """True if ``location`` holds an object of ``size`` bytes (an upload finished before)."""
    try:
        head = client.head_object(Bucket=location.bucket, Key=location.key)
    except Exception as e:
        if _not_found(e):
            return False
        raise S3Error(f"cannot check {location}: {describe(e)}") from e
    return int(head.get("ContentLength", -1)) == size


# --- ranged reads -------------------------------------------------------------------


class RangedObject(io.RawIOBase):
    """A read-only, seekable view of one S3 object: every read is one ranged GET.

    Pinned to the ETag seen at open (``If-Match``), so an object replaced while it
    is read fails the read instead of mixing two versions. ``requests`` and
    ``bytes_fetched`` count what was downloaded (what a seek costs, for tests and logs).
    """

    def __init__(self, client: Any, location: S3Location) -> None:
        super().__init__()
        self._client = client
        self.location = location
        try:
            head = client.head_object(Bucket=location.bucket, Key=location.key)
        except Exception as e:
            if _not_found(e):
                raise FileNotFoundError(2, f"no object {location}", str(location)) from e
            # unreachable, forbidden, no credentials: not "missing"
            raise OSError(5, f"cannot open {location}: {describe(e)}") from e
        self.size = int(head["ContentLength"])
        self.etag = str(head.get("ETag", ""))
        self._pos = 0
        self.requests = 0
        self.bytes_fetched = 0

    @property
    def identity(self) -> str:
        """Location, size and ETag: changes whenever the object does (a cache key)."""
        return f"{self.location}|{self.size}|{self.etag}"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self.size or not len(view):
            return 0
        end = min(self.size, self._pos + len(view)) - 1
        args: dict[str, Any] = {
            "Bucket": self.location.bucket,
            "Key": self.location.key,
            "Range": f"bytes={self._pos}-{end}",
        }
        if self.etag:
            args["IfMatch"] = self.etag
        try:
            body = self._client.get_object(**args)["Body"]
            data = body.read()
        except Exception as e:
            raise OSError(5, f"reading {self.location} at {self._pos}: {describe(e)}") from e
        self.requests += 1
        self.bytes_fetched += len(data)
        n = len(data)
        if n > len(view):  # the whole object instead of the range: not a usable store
            raise OSError(5, f"{self.location}: the store ignored the Range of a GET")
        view[:n] = data
        self._pos += n
        return n


def open_object(
    client: Any, location: S3Location, buffer_size: int = READ_BUFFER
) -> io.BufferedReader:
    """A buffered, seekable binary file over ``location`` (raises FileNotFoundError);
    its ``raw`` is the ``RangedObject`` (request and byte counts)."""
    raw = RangedObject(client, location)
    return io.BufferedReader(raw, buffer_size=buffer_size)
