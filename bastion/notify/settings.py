"""``[[notify.webhook]]`` and ``[[notify.syslog]]``: the sinks' settings, parsed and checked.

Kept next to the sinks rather than in ``bastion.config`` so that module stays one
screenful per section; ``bastion.config`` calls ``parse_notify`` and owns the key
lists (``KNOWN_ARRAY_KEYS``) its unknown-key check uses. Nothing here opens a file
or a socket: the secret is read when the node builds its sinks.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bastion.errors import ConfigError

WebhookFormat = Literal["json", "slack"]
WEBHOOK_FORMATS: tuple[WebhookFormat, ...] = ("json", "slack")

FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}  # fmt: skip
"""RFC 5424 facility codes by their usual names."""

WEBHOOK_KEYS = frozenset({"url", "format", "events", "secret_file", "timeout"})
SYSLOG_KEYS = frozenset({"address", "facility", "events", "timeout"})


@dataclass(frozen=True)
class WebhookConfig:
    """One ``[[notify.webhook]]``: where to POST, in which shape, and for which events."""

    url: str
    format: WebhookFormat = "json"
    events: tuple[str, ...] = ("*",)
    """fnmatch globs over event names (``request.*``); the default matches every event."""
    secret_file: Path | None = None
    """Key for ``X-Bastion-Signature: sha256=<HMAC-SHA256 hex of the body>``; None: unsigned."""
    timeout: float = 10.0


@dataclass(frozen=True)
class SyslogConfig:
    """One ``[[notify.syslog]]``: a Unix socket path, ``udp://HOST:PORT`` or ``tcp://HOST:PORT``."""

    address: str = "/dev/log"
    facility: str = "authpriv"
    events: tuple[str, ...] = ("*",)
    timeout: float = 10.0
    """Seconds to connect and send (TCP)."""

    @property
    def facility_code(self) -> int:
        """The RFC 5424 facility number."""
        return FACILITIES[self.facility]


@dataclass(frozen=True)
class NotifyConfig:
    """Every notification sink of the node (none by default)."""

    webhooks: tuple[WebhookConfig, ...] = ()
    syslogs: tuple[SyslogConfig, ...] = ()


def matches(events: tuple[str, ...], event: str) -> bool:
    """Whether an event name matches one of the globs (case-sensitive, like the names)."""
    return any(fnmatch.fnmatchcase(event, glob) for glob in events)


def _events(table: dict[str, Any], setting: str) -> tuple[str, ...]:
    value = table.get("events", ["*"])
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f'{setting}.events must be a non-empty list of globs, e.g. ["request.*"]')
    return tuple(value)


def _timeout(table: dict[str, Any], setting: str) -> float:
    value = table.get("timeout", 10)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{setting}.timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _webhook(table: dict[str, Any], base: Path, setting: str) -> WebhookConfig:
    url = table.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"{setting}.url must be an http:// or https:// URL, got {url!r}")
    if not urlsplit(url).hostname:
        raise ConfigError(f"{setting}.url has no host: {url!r}")
    fmt = table.get("format", "json")
    if fmt not in WEBHOOK_FORMATS:
        raise ConfigError(f'{setting}.format must be "json" or "slack", got {fmt!r}')
    secret = table.get("secret_file")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError(f"{setting}.secret_file must be a non-empty path string")
    secret_path = None
    if secret:
        p = Path(secret).expanduser()
        secret_path = p if p.is_absolute() else base / p
    return WebhookConfig(
        url=url,
        format="slack" if fmt == "slack" else "json",
        events=_events(table, setting),
        secret_file=secret_path,
        timeout=_timeout(table, setting),
    )


def check_syslog_address(address: object, setting: str) -> str:
    """A Unix socket path, ``udp://HOST[:PORT]`` or ``tcp://HOST[:PORT]``; raises ConfigError."""
    if not isinstance(address, str) or not address:
        raise ConfigError(f'{setting}.address must be "/dev/log", "udp://HOST:514" or ...')
    if address.startswith("/"):
        return address
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{setting}.address has a bad port: {address!r}") from e
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or parts.path or port == 0:
        raise ConfigError(
            f"{setting}.address must be a socket path, udp://HOST:PORT or tcp://HOST:PORT, "
            f"got {address!r}"
        )
    return address


def _syslog(table: dict[str, Any], setting: str) -> SyslogConfig:
    facility = table.get("facility", "authpriv")
    if facility not in FACILITIES:
        raise ConfigError(
            f"{setting}.facility must be one of {', '.join(FACILITIES)}, got {facility!r}"
        )
    return SyslogConfig(
        address=check_syslog_address(table.get("address", "/dev/log"), setting),
        facility=str(facility),
        events=_events(table, setting),
        timeout=_timeout(table, setting),
    )


def parse_notify(section: dict[str, Any], base: Path) -> NotifyConfig:
    """The ``[notify]`` tables (keys already checked); paths relative to ``base``."""
    webhooks = section.get("webhook", [])
    syslogs = section.get("syslog", [])
    return NotifyConfig(
        webhooks=tuple(
            _webhook(t, base, f"notify.webhook[{i}]") for i, t in enumerate(webhooks, 1)
        ),
        syslogs=tuple(_syslog(t, f"notify.syslog[{i}]") for i, t in enumerate(syslogs, 1)),
    )
