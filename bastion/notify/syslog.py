"""``[[notify.syslog]]``: RFC 5424 lines to a local socket, UDP (RFC 5426) or TCP (RFC 6587).

The line is ``<PRI>1 TIMESTAMP HOSTNAME bastion PROCID MSGID - MSG``: the event name
is the MSGID (what syslog filters select on) and the message is the notification's
JSON body, ASCII-only so it needs no BOM and any collector can parse it. There is no
structured-data element: an SD-ID of our own would need an IANA enterprise number,
and every SIEM parses the JSON message anyway. TCP frames are octet-counted (``LEN
SP MSG``), so a newline inside a value cannot split a record.
"""

from __future__ import annotations

import json
import os
import select
import socket
from urllib.parse import urlsplit

from bastion.notify.event import ALERT_PREFIX, REQUEST_BREAK_GLASS, Notification, iso_time
from bastion.notify.settings import SyslogConfig, matches

APP_NAME = "bastion"
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5
DEFAULT_PORTS = {"udp": 514, "tcp": 601}


def severity(event: str) -> int:
    """Alerts, policy decisions and break-glass are warnings; everything else a notice."""
    if event.startswith((ALERT_PREFIX, "policy.")) or event == REQUEST_BREAK_GLASS:
        return SEVERITY_WARNING
    return SEVERITY_NOTICE


def _header_field(value: str, limit: int) -> str:
    """PRINTUSASCII without spaces, at most ``limit`` characters; ``-`` when empty."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return cleaned or "-"


def format_line(notification: Notification, facility: int, hostname: str) -> bytes:
    """One RFC 5424 message (no trailing newline; the transport frames it)."""
    pri = facility * 8 + severity(notification.event)
    message = json.dumps(notification.body(hostname), ensure_ascii=True, separators=(",", ":"))
    header = " ".join(
        (
            f"<{pri}>1",
            iso_time(notification.at),
            _header_field(hostname, 255),
            APP_NAME,
            str(os.getpid()),
            _header_field(notification.event, 32),
            "-",
        )
    )
    return f"{header} {message}".encode("ascii")


def octet_frame(line: bytes) -> bytes:
    """RFC 6587 octet counting: the length in decimal, a space, the message."""
    return str(len(line)).encode() + b" " + line


class SyslogSink:
    """Sends to one syslog address; ``deliver`` blocks (the notifier runs it in a thread).

    A TCP connection is kept between deliveries and re-opened when the collector has
    closed it (checked before each send, so a restart of the collector costs no line).
    """

    def __init__(self, config: SyslogConfig, node: str, index: int = 1) -> None:
        self.config = config
        self.node = node
        self.name = f"syslog[{index}]:{config.address}"
        self._tcp: socket.socket | None = None

    def wants(self, event: str) -> bool:
        """Whether the sink's ``events`` globs match this event."""
        return matches(self.config.events, event)

    def deliver(self, notification: Notification) -> None:
        """Send one line; raises OSError when the collector cannot take it."""
        line = format_line(notification, self.config.facility_code, self.node)
        address = self.config.address
        if address.startswith("/"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(self.config.timeout)
                sock.sendto(line, address)
            return
        parts = urlsplit(address)
        host, port = parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme]
        if parts.scheme == "udp":
            family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            with socket.socket(family, kind, proto) as sock:
                sock.sendto(line, addr)
            return
        self._send_tcp(host, port, octet_frame(line))

    def _send_tcp(self, host: str, port: int, frame: bytes) -> None:
        if self._tcp is not None and self._peer_closed(self._tcp):
            self.close()
        if self._tcp is None:
            self._tcp = socket.create_connection((host, port), timeout=self.config.timeout)
        try:
            self._tcp.sendall(frame)
        except OSError:
            self.close()
            raise

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """A collector never sends on this stream: readable means closed (or broken)."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def close(self) -> None:
        """Drop the TCP connection, if any."""
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
