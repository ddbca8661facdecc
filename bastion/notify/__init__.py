"""Notification sinks: webhooks and syslog, fed in the background by the node's ``Notifier``.

Features build a ``Notification`` and call ``node.notifier.send(n)``; that returns at
once. See ``notifier`` for delivery, retries and the audit of failures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.notify.event import Notification
    from bastion.notify.notifier import DeliveryRecord, Notifier, Sink
    from bastion.notify.settings import NotifyConfig, SyslogConfig, WebhookConfig
    from bastion.notify.syslog import SyslogSink
    from bastion.notify.webhook import DeliveryError, WebhookSink

__all__ = [
    "DeliveryError",
    "DeliveryRecord",
    "Notification",
    "Notifier",
    "NotifyConfig",
    "Sink",
    "SyslogConfig",
    "SyslogSink",
    "WebhookConfig",
    "WebhookSink",
]

# Each name is imported when first used: the config reads ``bastion.notify.settings``
# for every CLI command, and the delivery side (asyncio, http.client) is the node's.
_MODULES = {
    "DeliveryError": "webhook",
    "DeliveryRecord": "notifier",
    "Notification": "event",
    "Notifier": "notifier",
    "NotifyConfig": "settings",
    "Sink": "notifier",
    "SyslogConfig": "settings",
    "SyslogSink": "syslog",
    "WebhookConfig": "settings",
    "WebhookSink": "webhook",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
