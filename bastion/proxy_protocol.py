"""The PROXY protocol (v1 text, v2 binary) a load balancer puts before a connection: sans-IO.

HAProxy's ``send-proxy`` / ``send-proxy-v2`` (and most TCP balancers) open each
connection to a node with one header that says who the client really is.
``parse`` takes the bytes received so far and says one of three things:
``NeedMore`` (a valid header may still follow), ``Header`` (parsed; its
``length`` bytes are consumed, the rest is the client's protocol), or
``Invalid`` (a reason and a message; the connection must be closed).

Every prefix of a valid header is ``NeedMore``, and nothing is ever read past
the hard caps (v1: 107 bytes with CRLF, as the specification bounds it; v2:
``MAX_V2_PAYLOAD`` bytes after the 16-byte fixed part), so a peer cannot make
the node buffer more than that. The v2 LOCAL command (a balancer's own health
check), v1 ``UNKNOWN`` and v2 ``UNSPEC``/``UNIX`` carry no client address:
``Header.source`` is None and the socket's own peer is the client. TLVs are
skipped. Specification: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_V1_LENGTH",
    "MAX_V2_PAYLOAD",
    "V2_SIGNATURE",
    "Address",
    "Header",
    "Invalid",
    "NeedMore",
    "Result",
    "encode_v1",
    "encode_v2",
    "parse",
]

V1_PREFIX = b"PROXY "
MAX_V1_LENGTH = 107
"""The longest v1 line the specification allows, CRLF included."""
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V2_PAYLOAD = 2048
"""Bytes after v2's fixed 16 accepted: addresses (at most 216) and TLVs; more is refused."""

Address = tuple[str, int]
"""An IP address (as ``ipaddress`` prints it) and a port."""

_V2_TCP4 = 0x11
_V2_TCP6 = 0x21
_V2_ADDRESS_BYTES = {_V2_TCP4: 12, _V2_TCP6: 36}
_V2_NO_ADDRESS = {0x00: 0, 0x31: 216}  # UNSPEC, UNIX stream
_V2_DATAGRAM = {0x12, 0x22, 0x32}


@dataclass(frozen=True)
class NeedMore:
    """Everything so far may begin a valid header: read more (within the login timeout)."""


@dataclass(frozen=True)
class Header:
    """A complete header; the connection's own protocol starts at byte ``length``."""

    version: Literal[1, 2]
    command: Literal["proxy", "local"]
    source: Address | None
    """The client's address and port; None when the header carries none."""
    destination: Address | None
    length: int


@dataclass(frozen=True)
class Invalid:
    """Not a PROXY header the node accepts: close the connection, log ``message``."""

    reason: str
    """A short code for logs and tests: no-header, bad-signature, too-long, ..."""
    message: str


Result = NeedMore | Header | Invalid


def parse(data: bytes) -> Result:
    """What ``data`` (the first bytes of a connection) holds; see the module docstring."""
    if not data:
        return NeedMore()
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    return Invalid(
        "no-header",
        "the connection did not start with a PROXY protocol header "
        "(is the balancer set to send-proxy or send-proxy-v2?)",
    )


def _parse_v1(data: bytes) -> Result:
    head = data[: len(V1_PREFIX)]
    if head != V1_PREFIX[: len(head)]:
        return Invalid("no-header", "the connection did not start with a PROXY protocol header")
    window = data[:MAX_V1_LENGTH]
    end = window.find(b"\r\n")
    bare_lf = window.find(b"\n")
    if bare_lf != -1 and (end == -1 or bare_lf < end + 1):
        return Invalid("bad-v1", "PROXY v1 line ends without CRLF")
    if end == -1:
        if len(data) >= MAX_V1_LENGTH:
            return Invalid("too-long", f"PROXY v1 line longer than {MAX_V1_LENGTH} bytes")
        if not _printable(window):
            return Invalid("bad-v1", "PROXY v1 line holds bytes that are not printable ASCII")
        return NeedMore()
    line = window[:end]
    if not _printable(line):
        return Invalid("bad-v1", "PROXY v1 line holds bytes that are not printable ASCII")
    fields = line.decode("ascii").split(" ")
    length = end + 2
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return Header(1, "proxy", None, None, length)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        return Invalid(
            "bad-v1", "PROXY v1 line is not 'PROXY TCP4|TCP6|UNKNOWN SRC DST SPORT DPORT'"
        )
    family = 4 if fields[1] == "TCP4" else 6
    source = _v1_address(fields[2], fields[4], family)
    destination = _v1_address(fields[3], fields[5], family)
    if source is None or destination is None:
        return Invalid("bad-v1", f"PROXY v1 line has a malformed {fields[1]} address or port")
    return Header(1, "proxy", source, destination, length)


def _printable(data: bytes) -> bool:
    return all(0x20 <= b < 0x7F or b == 0x0D for b in data)


def _v1_address(host: str, port: str, family: int) -> Address | None:
    if not port.isdigit() or len(port) > 5 or (len(port) > 1 and port[0] == "0"):
        return None
    number = int(port)
    if number > 0xFFFF or "%" in host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version != family:
        return None
    return str(ip), number


def _parse_v2(data: bytes) -> Result:
    head = data[: len(V2_SIGNATURE)]
    if head != V2_SIGNATURE[: len(head)]:
        return Invalid("bad-signature", "PROXY v2 header with a bad signature")
    if len(data) < 16:
        return NeedMore()
    ver_cmd, family, payload = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if ver_cmd >> 4 != 2:
        return Invalid("bad-version", f"PROXY header version {ver_cmd >> 4} (only 2 is binary)")
    command = ver_cmd & 0x0F
    if command > 1:
        return Invalid("bad-command", f"PROXY v2 command {command} (0 LOCAL, 1 PROXY)")
    if payload > MAX_V2_PAYLOAD:
        return Invalid(
            "too-long", f"PROXY v2 header of {payload} bytes (at most {MAX_V2_PAYLOAD} accepted)"
        )
    length = 16 + payload
    if len(data) < length:
        return NeedMore()
    if command == 0:
        return Header(2, "local", None, None, length)
    if family in _V2_DATAGRAM:
        return Invalid("not-tcp", "PROXY v2 header for a datagram (UDP) connection")
    needed = _V2_ADDRESS_BYTES.get(family, _V2_NO_ADDRESS.get(family))
    if needed is None:
        return Invalid("bad-family", f"PROXY v2 address family/protocol byte 0x{family:02x}")
    if payload < needed:
        return Invalid("bad-v2", f"PROXY v2 header too short ({payload} bytes) for its addresses")
    if family not in _V2_ADDRESS_BYTES:
        return Header(2, "proxy", None, None, length)
    size = 4 if family == _V2_TCP4 else 16
    body = data[16 : 16 + needed]
    src = ipaddress.ip_address(body[:size])
    dst = ipaddress.ip_address(body[size : 2 * size])
    sport, dport = struct.unpack_from("!HH", body, 2 * size)
    return Header(2, "proxy", (str(src), sport), (str(dst), dport), length)


def encode_v1(source: Address | None, destination: Address | None) -> bytes:
    """A v1 line (``UNKNOWN`` when either address is None); for tests and tools."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    family = "TCP4" if ipaddress.ip_address(source[0]).version == 4 else "TCP6"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n").encode(
        "ascii"
    )


def encode_v2(
    source: Address | None,
    destination: Address | None,
    *,
    local: bool = False,
    tlvs: bytes = b"",
) -> bytes:
    """A v2 header (LOCAL, or PROXY for TCP over IPv4/IPv6; UNSPEC without addresses)."""
    if local or source is None or destination is None:
        family, body = 0x00, b""
    else:
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        family = _V2_TCP4 if src.version == 4 else _V2_TCP6
        body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    body += tlvs
    ver_cmd = 0x20 if local else 0x21
    return V2_SIGNATURE + struct.pack("!BBH", ver_cmd, family, len(body)) + body
