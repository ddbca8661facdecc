"""The PROXY protocol parser: round trips, truncations, hostile bytes (Hypothesis).

Whatever the input, ``parse`` returns one of its three results and never raises;
a parsed header never claims more bytes than it was given or than the caps allow.
"""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.proxy_protocol import (
    MAX_V1_LENGTH,
    MAX_V2_PAYLOAD,
    V2_SIGNATURE,
    Address,
    Header,
    Invalid,
    NeedMore,
    Result,
    encode_v1,
    encode_v2,
    parse,
)
from tests.fuzzing import Mutation, apply_mutations, byte_mutations

EXAMPLES = int(os.environ.get("BASTION_FUZZ_EXAMPLES", "400"))
"""A short budget by default; ``BASTION_FUZZ_EXAMPLES=200000`` for a long run (README "Tests")."""
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ports = st.integers(0, 0xFFFF)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda ip: str(ipaddress.IPv6Address(ip)))
v4_pairs = st.tuples(st.tuples(ipv4, ports), st.tuples(ipv4, ports))
v6_pairs = st.tuples(st.tuples(ipv6, ports), st.tuples(ipv6, ports))
pairs = v4_pairs | v6_pairs
tlvs = st.binary(max_size=200)
tails = st.binary(max_size=64)


def well_formed(result: Result, data: bytes) -> None:
    """The invariants every result keeps."""
    assert isinstance(result, NeedMore | Header | Invalid)
    if isinstance(result, Header):
        assert 0 < result.length <= len(data)
        cap = MAX_V1_LENGTH if result.version == 1 else 16 + MAX_V2_PAYLOAD
        assert result.length <= cap
        for address in (result.source, result.destination):
            if address is not None:
                ipaddress.ip_address(address[0])
                assert 0 <= address[1] <= 0xFFFF
    if isinstance(result, Invalid):
        assert result.reason and result.message


# --- round trips ---------------------------------------------------------------------


@given(pair=pairs, tail=tails)
def test_v1_round_trip(pair: tuple[Address, Address], tail: bytes) -> None:
    header = encode_v1(*pair)
    assert len(header) <= MAX_V1_LENGTH
    result = parse(header + tail)
    assert result == Header(1, "proxy", pair[0], pair[1], len(header))


@given(pair=pairs, extra=tlvs, tail=tails)
def test_v2_round_trip(pair: tuple[Address, Address], extra: bytes, tail: bytes) -> None:
    header = encode_v2(*pair, tlvs=extra)
    result = parse(header + tail)
    assert result == Header(2, "proxy", pair[0], pair[1], len(header))


@given(pair=pairs, extra=tlvs, tail=tails)
def test_v2_local_has_no_address(pair: tuple[Address, Address], extra: bytes, tail: bytes) -> None:
    """A balancer's own health check: the socket's peer is the client."""
    header = encode_v2(*pair, local=True, tlvs=extra)
    assert parse(header + tail) == Header(2, "local", None, None, len(header))


def test_v1_unknown_and_v2_unspec_have_no_address() -> None:
    assert parse(b"PROXY UNKNOWN\r\nSSH-2.0") == Header(1, "proxy", None, None, 15)
    longest = b"PROXY UNKNOWN " + b"x" * (MAX_V1_LENGTH - 16) + b"\r\n"
    assert parse(longest) == Header(1, "proxy", None, None, MAX_V1_LENGTH)
    assert parse(encode_v2(None, None)) == Header(2, "proxy", None, None, 16)


def test_haproxy_examples() -> None:
    """The specification's own examples, byte for byte."""
    line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"
    assert parse(line) == Header(1, "proxy", ("192.168.0.1", 56324), ("192.168.0.11", 443), 47)
    line6 = b"PROXY TCP6 ::1 2001:db8::1 1 65535\r\n"
    assert parse(line6) == Header(1, "proxy", ("::1", 1), ("2001:db8::1", 65535), len(line6))


# --- truncations ---------------------------------------------------------------------


@given(pair=pairs, version=st.sampled_from([1, 2]), extra=tlvs)
def test_every_prefix_needs_more(pair: tuple[Address, Address], version: int, extra: bytes) -> None:
    """A header cut anywhere is NeedMore: a slow balancer is waited for, not refused."""
    header = encode_v1(*pair) if version == 1 else encode_v2(*pair, tlvs=extra)
    for cut in range(len(header)):
        assert parse(header[:cut]) == NeedMore(), cut


@fuzz
@given(pair=pairs, version=st.sampled_from([1, 2]), data=st.data())
def test_truncated_then_other_bytes(
    pair: tuple[Address, Address], version: int, data: st.DataObject
) -> None:
    """A header cut short and followed by the client's own bytes: NeedMore or Invalid."""
    header = encode_v1(*pair) if version == 1 else encode_v2(*pair)
    cut = data.draw(st.integers(0, len(header) - 1))
    stream = header[:cut] + data.draw(st.sampled_from([b"SSH-2.0-OpenSSH_9.2\r\n", b"\x00" * 8]))
    result = parse(stream)
    well_formed(result, stream)
    if version == 2 and cut > 12:
        return  # the command is intact: the client's bytes can form a valid UNSPEC header
    assert not isinstance(result, Header), (cut, result)


# --- hostile bytes -------------------------------------------------------------------


@fuzz
@given(data=st.binary(max_size=600))
def test_random_bytes_never_crash(data: bytes) -> None:
    well_formed(parse(data), data)


@fuzz
@given(data=st.binary(max_size=300))
def test_random_bytes_after_either_prefix(data: bytes) -> None:
    """Random bytes behind a valid start reach the deeper branches."""
    for start in (b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", V2_SIGNATURE, V2_SIGNATURE + b"\x21"):
        stream = start + data
        well_formed(parse(stream), stream)


@fuzz
@given(pair=pairs, version=st.sampled_from([1, 2]), extra=tlvs, ops=byte_mutations(max_run=40))
def test_mutated_headers(
    pair: tuple[Address, Address], version: int, extra: bytes, ops: list[Mutation]
) -> None:
    header = encode_v1(*pair) if version == 1 else encode_v2(*pair, tlvs=extra)
    stream = apply_mutations(header + b"SSH-2.0-x\r\n", ops, max_insert=8)
    well_formed(parse(stream), stream)


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "no-header"),  # a client that bypassed the balancer
        (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", "no-header"),  # psql's SSLRequest
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bad-v1"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "bad-v1"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad-v1"),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", "bad-v1"),
        (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "bad-v1"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "bad-v1"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad-v1"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad-v1"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \xff\r\n", "bad-v1"),
        (b"PROXY UNKNOWN " + b"x" * 100, "too-long"),
        (b"PROXY UNKNOWN " + b"x" * (MAX_V1_LENGTH - 15) + b"\r\n", "too-long"),
        (b"\r\n\r\n\x00\r\nQUIT!" + b"\x21\x11\x00\x0c" + bytes(12), "bad-signature"),
        (b"\r\n\r\n\x01", "bad-signature"),
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "bad-version"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "bad-command"),
        (V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "not-tcp"),
        (V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12), "bad-family"),
        (V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), "bad-v2"),
        (V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "bad-v2"),
        (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", MAX_V2_PAYLOAD + 1), "too-long"),
    ],
)
def test_refused(data: bytes, reason: str) -> None:
    result = parse(data)
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result


def test_bad_signature_is_refused_before_the_whole_header() -> None:
    """A wrong 12-byte signature is refused at the first wrong byte, before any length."""
    good = encode_v2(("203.0.113.7", 5000), ("10.0.0.1", 2222))
    for i in range(len(V2_SIGNATURE)):
        bad = bytearray(good)
        bad[i] ^= 0x40
        result = parse(bytes(bad[: i + 1]))
        expected = "no-header" if i == 0 else "bad-signature"
        assert isinstance(result, Invalid) and result.reason == expected, (i, result)
