"""encode -> parse gives back the same message, for every message type."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.pg import messages as m
from bastion.pg.decoding import AuthContext
from bastion.pg.protocol import (
    CLOSED,
    BackendParser,
    FrontendParser,
    LocalProtocolError,
    ProtocolViolation,
    encode,
    error_response,
)
from tests.bastion.pg.strategies import (
    auth_frontend,
    auth_responses,
    backend_messages,
    drive,
    ready_frontend,
    ready_messages,
    startup_packets,
)

fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _one(parser: FrontendParser | BackendParser, wire: bytes) -> Any:
    out = drive(parser, wire)
    assert out.error is None, out.error
    assert len(out.events) == 1, out.events
    assert parser.buffered == 0
    return out.events[0]


@fast
@given(ready_messages)
def test_frontend_round_trip(msg: Any) -> None:
    assert _one(ready_frontend(), encode(msg)) == msg


@fast
@given(startup_packets)
def test_startup_round_trip(msg: Any) -> None:
    assert _one(FrontendParser(), encode(msg)) == msg


@fast
@given(st.data())
def test_auth_response_round_trip(data: st.DataObject) -> None:
    context: AuthContext = data.draw(st.sampled_from(sorted(auth_responses)))
    msg = data.draw(auth_responses[context])
    assert _one(auth_frontend(context), encode(msg)) == msg


@fast
@given(backend_messages)
def test_backend_round_trip(msg: Any) -> None:
    assert _one(BackendParser(), encode(msg)) == msg


@fast
@given(st.lists(ready_messages, max_size=12))
def test_frontend_stream_round_trip(msgs: list[Any]) -> None:
    wire = b"".join(encode(x) for x in [*msgs, m.Terminate()])
    out = drive(ready_frontend(), wire, eof=True)
    assert out.error is None
    assert out.events == [*msgs, m.Terminate()]
    assert out.stop is CLOSED


@pytest.mark.parametrize(
    ("request_", "answer", "wire"),
    [
        (m.SSLRequest(), m.SSLResponse(True), b"S"),
        (m.SSLRequest(), m.SSLResponse(False), b"N"),
        (m.GSSENCRequest(), m.GSSENCResponse(True), b"G"),
        (m.GSSENCRequest(), m.GSSENCResponse(False), b"N"),
    ],
)
def test_encryption_answers_round_trip(request_: Any, answer: Any, wire: bytes) -> None:
    assert encode(answer) == wire
    parser = BackendParser()
    parser.frontend_sent(request_)
    assert parser.awaiting_encryption_response
    assert _one(parser, wire) == answer
    assert not parser.awaiting_encryption_response


def test_known_wire_bytes() -> None:
    """A few encodings checked against the protocol documentation by hand."""
    assert encode(m.SSLRequest()) == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    assert encode(m.Sync()) == b"S\x00\x00\x00\x04"
    assert encode(m.Query("SELECT 1")) == b"Q\x00\x00\x00\x0dSELECT 1\x00"
    assert encode(m.ReadyForQuery(m.TransactionStatus.IDLE)) == b"Z\x00\x00\x00\x05I"
    assert encode(m.StartupMessage({"user": "a"})) == (
        b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00a\x00\x00"
    )
    assert encode(m.DataRow([b"1", None])) == (
        b"D\x00\x00\x00\x0f\x00\x02\x00\x00\x00\x011\xff\xff\xff\xff"
    )
    assert encode(m.CancelRequest(7, b"\x00\x00\x00\x09")) == struct.pack(
        "!iiii", 16, m.CANCEL_REQUEST_CODE, 7, 9
    )


def test_non_utf8_text_round_trips_byte_exact() -> None:
    wire = b"Q\x00\x00\x00\x0aSEL\xe9\xff\x00"
    msg = _one(ready_frontend(), wire)
    assert isinstance(msg, m.Query)
    assert encode(msg) == wire


def test_sequences_normalised_to_tuples() -> None:
    b = m.Bind("", "", [1], [b"x", None], [0])
    assert b == m.Bind("", "", (1,), (b"x", None), (0,))
    assert b.params == (b"x", None)
    assert b.param_format(1) == 1
    assert m.Bind("", "", [], [b"x"]).param_format(0) == m.TEXT


def test_error_fields_and_helper() -> None:
    wire = error_response("08P01", "bad message")
    msg = _one(BackendParser(), wire)
    assert isinstance(msg, m.ErrorResponse)
    assert (msg.severity, msg.sqlstate, msg.message) == ("FATAL", "08P01", "bad message")
    assert msg.named()["code"] == "08P01"
    notice = m.NoticeResponse({"S": "WARNING", "M": "hm"})
    assert notice.severity == "WARNING" and notice.sqlstate is None
    same_fields: object = m.ErrorResponse({"S": "WARNING", "M": "hm"})
    assert notice != same_fields


def test_startup_properties() -> None:
    msg = m.StartupMessage({"user": "u"}, m.PROTOCOL_3_0 | 2)
    assert (msg.major, msg.minor) == (3, 2)


@pytest.mark.parametrize(
    "msg",
    [
        m.Query("a\x00b"),
        m.Query("\ud800"),
        m.Parse("", "x", [2**32]),
        m.Parse("", "x", [0] * 65536),
        m.Bind("", "", [0, 0], [b"a"]),
        m.Bind("", "", [], ["text"]),  # type: ignore[list-item]
        m.Describe("X", ""),  # type: ignore[arg-type]
        m.Close("", ""),  # type: ignore[arg-type]
        m.Execute("", 2**31),
        m.FunctionCall(1, [0, 0], [b"a"]),
        m.StartupMessage({"": "x"}),
        m.StartupMessage({"user": "u"}, version=2 << 16),
        m.CancelRequest(1, b"abc"),
        m.BackendKeyData(1, b""),
        m.AuthenticationMD5Password(b"12345"),
        m.AuthenticationSASL([""]),
        m.ReadyForQuery("X"),  # type: ignore[arg-type]
        m.ErrorResponse({"CC": "x"}),
        m.ErrorResponse({"\u0100": "x"}),
        m.CopyInResponse(256),
        m.RowDescription([m.FieldDescription("a", type_size=40000)]),
        object(),
    ],
)
def test_encode_refuses_what_the_wire_cannot_carry(msg: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode(msg)


def test_local_error_is_a_value_error_with_sqlstate() -> None:
    with pytest.raises(ValueError) as info:
        encode(m.Query("\x00"))
    assert isinstance(info.value, LocalProtocolError)
    assert not isinstance(info.value, ProtocolViolation)
