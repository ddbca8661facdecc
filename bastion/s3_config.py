"""``[recording] storage`` and ``[recording.s3]``: where sealed recordings are uploaded.

Kept apart from ``bastion.config`` (which calls ``parse_storage``) so every S3
setting is read and checked in one place. Credentials are never settings: boto3's
standard chain (environment, shared profile, instance or task role) supplies them,
so a key in the config file is refused with the way to do it instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bastion.errors import ConfigError

KNOWN_S3_KEYS = frozenset({"endpoint_url", "region", "retry_max", "multipart_threshold"})
MIN_PART = 5 * 1024 * 1024
"""S3's smallest multipart part (every part but the last)."""
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SECRETISH = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)

CREDENTIALS_HELP = (
    "credentials never go in the config file: give the node's service AWS_ACCESS_KEY_ID "
    "and AWS_SECRET_ACCESS_KEY in its environment, an AWS profile (AWS_PROFILE with "
    "~/.aws/credentials), or an instance / task role"
)


@dataclass(frozen=True)
class S3Config:
    """Where sealed recordings go and how the uploader behaves."""

    bucket: str
    prefix: str = ""
    """Key prefix without leading or trailing slash ("" = bucket root)."""
    endpoint_url: str | None = None
    """None: AWS S3 itself; MinIO / Ceph RGW: their URL (http://host:9000)."""
    region: str | None = None
    retry_max: float = 60.0
    """Longest wait between two attempts at a failed upload (seconds; back-off doubles to it)."""
    multipart_threshold: int = 16 * 1024 * 1024
    """Files at least this big go up in parts of this size (at least 5 MiB)."""

    @property
    def url(self) -> str:
        """``s3://bucket/prefix`` as written in the config."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key_for(self, spool_location: str) -> str:
        """The object key of a recording whose spool location is ``YYYY/MM/DD/<id>.bastrec``."""
        return f"{self.prefix}/{spool_location}" if self.prefix else spool_location


def parse_s3_url(value: str, what: str = "recording.storage") -> tuple[str, str]:
    """``s3://bucket[/prefix]`` -> (bucket, prefix); raises ConfigError naming the fix."""
    if not value.startswith("s3://"):
        raise ConfigError(f'{what} must be "local" or "s3://bucket/prefix", not {value!r}')
    bucket, _, prefix = value[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ConfigError(
            f"{what}: {bucket!r} is not an S3 bucket name (3-63 characters of a-z 0-9 . -)"
        )
    prefix = prefix.strip("/")
    if ".." in prefix.split("/") or "//" in prefix:
        raise ConfigError(f"{what}: the key prefix {prefix!r} must be plain path segments")
    return bucket, prefix


def parse_storage(rec: dict[str, Any]) -> S3Config | None:
    """The S3 settings of ``[recording]`` (None: recordings stay in ``dir``)."""
    storage = rec.get("storage", "local")
    table = rec.get("s3", {})
    if not isinstance(table, dict):
        raise ConfigError("[recording.s3] must be a table")
    for key in table:
        if _SECRETISH.search(key):
            raise ConfigError(f"[recording.s3] {key}: {CREDENTIALS_HELP}")
        if key not in KNOWN_S3_KEYS:
            raise ConfigError(
                f"unknown key [recording.s3] {key}; the keys are {', '.join(sorted(KNOWN_S3_KEYS))}"
            )
    if not isinstance(storage, str):
        raise ConfigError('recording.storage must be a string: "local" or "s3://bucket/prefix"')
    if storage == "local":
        return None
    bucket, prefix = parse_s3_url(storage)
    endpoint = table.get("endpoint_url")
    if endpoint is not None and (
        not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))
    ):
        raise ConfigError(
            f"recording.s3.endpoint_url must be an http:// or https:// URL, not {endpoint!r}"
        )
    if endpoint is not None and "@" in endpoint:
        raise ConfigError(
            f"recording.s3.endpoint_url must not hold a user name: {CREDENTIALS_HELP}"
        )
    region = table.get("region")
    if region is not None and not isinstance(region, str):
        raise ConfigError(f"recording.s3.region must be a string (e.g. us-east-1), not {region!r}")
    retry_max = table.get("retry_max", 60.0)
    if isinstance(retry_max, bool) or not isinstance(retry_max, int | float) or retry_max <= 0:
        raise ConfigError(f"recording.s3.retry_max must be seconds > 0, not {retry_max!r}")
    threshold = table.get("multipart_threshold", 16 * 1024 * 1024)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < MIN_PART:
        raise ConfigError(
            f"recording.s3.multipart_threshold must be a whole number of bytes >= {MIN_PART} "
            f"(S3's smallest part), not {threshold!r}"
        )
    return S3Config(bucket, prefix, endpoint, region, float(retry_max), threshold)
