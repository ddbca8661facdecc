"""``[[notify.webhook]]``: a POST of the notification to an HTTP(S) URL.

Plain ``urllib.request``, called from the notifier's own worker threads: it does
HTTPS with certificate checks, honours ``https_proxy``/``no_proxy`` like every
other tool on the host, and needs no dependency. Redirects are refused (a 3xx is a
failure): following one would turn the POST into a GET or send a signed body to a
place nobody configured.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bastion.errors import ConfigError
from bastion.notify.event import Notification
from bastion.notify.settings import WebhookConfig, WebhookFormat, matches

SIGNATURE_HEADER = "X-Bastion-Signature"
USER_AGENT = "bastion-notify/1"
MAX_RESPONSE_READ = 64 * 1024


class DeliveryError(Exception):
    """A sink could not hand a notification over (the notifier retries it)."""


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Bastion-Signature`` value: ``sha256=`` and the HMAC-SHA256 hex of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_body(notification: Notification, fmt: WebhookFormat, node: str) -> bytes:
    """The exact bytes POSTed (and signed): the JSON body, or a Slack ``text`` message."""
    payload: dict[str, Any]
    if fmt == "slack":
        payload = {"text": _slack_escape(f"[bastion {node}] {notification.summary()}")}
    else:
        payload = notification.body(node)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def read_secret(path: Path) -> bytes:
    """The signing key: the file's bytes without surrounding whitespace; raises ConfigError."""
    try:
        secret = path.read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"notify.webhook secret_file {path}: {e.strerror or e}") from e
    if not secret:
        raise ConfigError(f"notify.webhook secret_file {path} is empty")
    return secret


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSink:
    """POSTs notifications to one URL; ``deliver`` blocks (the notifier runs it in a thread)."""

    def __init__(self, config: WebhookConfig, node: str, index: int = 1) -> None:
        self.config = config
        self.node = node
        self.secret = read_secret(config.secret_file) if config.secret_file else None
        # The URL itself may hold a secret (Slack's do), so audit rows name only the host.
        self.name = f"webhook[{index}]:{urlsplit(config.url).hostname}"
        self._opener = urllib.request.build_opener(_NoRedirect)

    def wants(self, event: str) -> bool:
        """Whether the sink's ``events`` globs match this event."""
        return matches(self.config.events, event)

    def deliver(self, notification: Notification) -> None:
        """POST once; raises DeliveryError (any non-2xx answer or network failure)."""
        body = render_body(notification, self.config.format, self.node)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "X-Bastion-Event": notification.event,
            "X-Bastion-Delivery": notification.id,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        request = urllib.request.Request(  # noqa: S310  scheme checked: http(s) only
            self.config.url, data=body, headers=headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self.config.timeout) as response:
                response.read(MAX_RESPONSE_READ)
                status = response.status
        except urllib.error.HTTPError as e:
            e.close()
            raise DeliveryError(f"HTTP {e.code} {e.reason}") from e
        except urllib.error.URLError as e:
            raise DeliveryError(f"{e.reason}") from e
        except (OSError, http.client.HTTPException) as e:
            raise DeliveryError(f"{type(e).__name__}: {e}") from e
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")

    def close(self) -> None:
        """Nothing held between deliveries."""
