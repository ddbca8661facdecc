"""Readable parameter values: text as str, well-known binary types rendered, rest as bytes."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.pg.params import _BINARY, decode_binary, decode_params


@pytest.mark.parametrize(
    ("oid", "data", "text"),
    [
        (16, b"\x01", "t"),
        (16, b"\x00", "f"),
        (21, b"\x00\x2a", "42"),
        (23, struct.pack("!i", -7), "-7"),
        (20, struct.pack("!q", 2**40), str(2**40)),
        (26, struct.pack("!I", 4_000_000_000), "4000000000"),
        (700, struct.pack("!f", 1.5), "1.5"),
        (701, struct.pack("!d", -0.25), "-0.25"),
        (25, "héllo".encode(), "héllo"),
        (1043, b"v", "v"),
        (3802, b'\x01{"a": 1}', '{"a": 1}'),
        (2950, uuid.UUID(int=1).bytes, "00000000-0000-0000-0000-000000000001"),
        (1082, struct.pack("!i", 0), "2000-01-01"),
        (1082, struct.pack("!i", 2**31 - 1), "infinity"),
        (1114, struct.pack("!q", 86_400_000_000 + 1), "2000-01-02 00:00:00.000001"),
        (1184, struct.pack("!q", 0), "2000-01-01 00:00:00+00"),
        (1114, struct.pack("!q", -(2**63)), "-infinity"),
    ],
)
def test_well_known_binary_types(oid: int, data: bytes, text: str) -> None:
    assert decode_binary(oid, data) == text


@pytest.mark.parametrize(
    ("oid", "data"),
    [
        (21, b"\x00"),  # wrong length
        (16, b"\x02"),
        (25, b"\xff"),  # not UTF-8
        (3802, b"\x02{}"),  # unknown jsonb version
        (2950, b"short"),
        (1082, struct.pack("!i", 2**31 - 2)),  # beyond Python's calendar
        (17, b"bytea stays bytes"),
        (0, b"unknown type"),
    ],
)
def test_unreadable_binary_stays_unread(oid: int, data: bytes) -> None:
    assert decode_binary(oid, data) is None


@given(st.sampled_from(sorted(_BINARY)), st.binary(max_size=20))
def test_decode_binary_never_raises(oid: int, data: bytes) -> None:
    assert decode_binary(oid, data) is None or isinstance(decode_binary(oid, data), str)


def test_decode_params_follows_bind_format_rules() -> None:
    int2 = b"\x00\x2a"
    assert decode_params([int2, b"txt"], [1, 0], [21, 25]) == ("42", "txt")
    assert decode_params([int2, b"txt"], [1], [21, 0]) == ("42", b"txt")  # unknown binary
    assert decode_params([b"a", None, b"\xff"], []) == ("a", None, b"\xff")
    assert decode_params([int2], [1]) == (int2,)  # no declared type
    assert decode_params([b"x"], [7]) == (b"x",)  # unknown format code
