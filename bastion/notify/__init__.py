"""Notification sinks: webhooks and syslog, fed in the background by the node's ``Notifier``.

Features build a ``Notification`` and call ``node.notifier.send(n)``; that returns at
once. See ``notifier`` for delivery, retries and the audit of failures.
"""

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
