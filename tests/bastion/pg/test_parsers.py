"""Parser behaviour: connection phases, encryption negotiation, limits, EOF, chunking."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.pg import messages as m
from bastion.pg.protocol import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    BackendParser,
    FrontendParser,
    FrontendPhase,
    LocalProtocolError,
    ProtocolViolation,
    encode,
)
from tests.bastion.pg.strategies import (
    auth_frontend,
    backend_messages,
    drive,
    ready_frontend,
    ready_messages,
)

fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STARTUP = m.StartupMessage({"user": "alice", "database": "db1"})


def _raises(parser: FrontendParser | BackendParser, sqlstate: str = "08P01") -> str:
    with pytest.raises(ProtocolViolation) as info:
        parser.next_event()
    assert info.value.sqlstate == sqlstate
    return info.value.message


# ------------------------------------------------------------------ startup phase


def test_plain_startup_then_trust_auth() -> None:
    assert FrontendParser().phase is FrontendPhase.STARTUP
    p = FrontendParser()
    assert p.next_event() is NEED_DATA
    p.receive_data(encode(STARTUP))
    assert p.next_event() == STARTUP
    assert p.startup == STARTUP
    phases = [p.phase]
    p.backend_sent(m.AuthenticationOk())
    phases.append(p.phase)
    p.receive_data(encode(m.Query("SELECT 1")) + encode(m.Terminate()))
    assert list(p.events()) == [m.Query("SELECT 1"), m.Terminate()]
    phases.append(p.phase)
    assert phases == [FrontendPhase.AUTHENTICATING, FrontendPhase.READY, FrontendPhase.DONE]
    p.receive_data(b"")
    assert p.next_event() is CLOSED


def test_ssl_refused_then_plaintext_startup() -> None:
    p, b = FrontendParser(), BackendParser()
    p.receive_data(encode(m.SSLRequest()))
    assert p.next_event() == m.SSLRequest()
    b.frontend_sent(m.SSLRequest())
    assert p.next_event() is PAUSED
    p.receive_data(encode(STARTUP))  # early, but harmless when refused
    assert p.next_event() is PAUSED
    b.receive_data(b"N")
    answer = b.next_event()
    assert answer == m.SSLResponse(False)
    assert isinstance(answer, m.SSLResponse)
    p.backend_sent(answer)
    assert p.next_event() == STARTUP


def test_ssl_accepted_then_startup_over_tls() -> None:
    p = FrontendParser()
    p.receive_data(encode(m.SSLRequest()))
    p.next_event()
    p.backend_sent(m.SSLResponse(True))
    assert p.phase is FrontendPhase.STARTUP
    p.receive_data(encode(STARTUP))  # (decrypted by the caller)
    assert p.next_event() == STARTUP


def test_plaintext_buffered_before_tls_is_refused() -> None:
    """CVE-2021-23214: bytes sent before the TLS handshake must not be trusted."""
    p = FrontendParser()
    p.receive_data(encode(m.SSLRequest()) + encode(STARTUP))
    p.next_event()
    with pytest.raises(ProtocolViolation):
        p.backend_sent(m.SSLResponse(True))
    assert p.phase is FrontendPhase.ERROR
    _raises(p)


def test_server_data_before_tls_is_refused() -> None:
    """CVE-2021-23222: the client side equivalent."""
    b = BackendParser()
    b.frontend_sent(m.SSLRequest())
    b.receive_data(b"S" + encode(m.AuthenticationOk()))
    assert "unencrypted" in _raises(b)


@pytest.mark.parametrize(
    ("first", "answer", "second", "ok"),
    [
        (m.SSLRequest(), m.SSLResponse(False), m.SSLRequest(), False),
        (m.SSLRequest(), m.SSLResponse(True), m.SSLRequest(), False),
        (m.SSLRequest(), m.SSLResponse(True), m.GSSENCRequest(), False),
        (m.SSLRequest(), m.SSLResponse(False), m.GSSENCRequest(), True),
        (m.GSSENCRequest(), m.GSSENCResponse(False), m.SSLRequest(), True),
        (m.GSSENCRequest(), m.GSSENCResponse(False), m.GSSENCRequest(), False),
        (m.GSSENCRequest(), m.GSSENCResponse(True), m.SSLRequest(), False),
    ],
)
def test_encryption_request_sequences(first: Any, answer: Any, second: Any, ok: bool) -> None:
    """PostgreSQL allows each kind of request once, and none after encryption starts."""
    p = FrontendParser()
    p.receive_data(encode(first))
    p.next_event()
    p.backend_sent(answer)
    p.receive_data(encode(second))
    if ok:
        assert p.next_event() == second
    else:
        _raises(p)


def test_encryption_answer_without_request_is_a_local_error() -> None:
    p = FrontendParser()
    with pytest.raises(LocalProtocolError):
        p.backend_sent(m.SSLResponse(False))
    p.receive_data(encode(m.SSLRequest()))
    p.next_event()
    with pytest.raises(LocalProtocolError):
        p.backend_sent(m.GSSENCResponse(False))


def test_old_server_answers_ssl_request_with_error() -> None:
    b = BackendParser()
    b.frontend_sent(m.SSLRequest())
    err = m.ErrorResponse({"S": "FATAL", "M": "unsupported frontend protocol"})
    b.receive_data(encode(err))
    assert b.next_event() == err
    p = FrontendParser()
    p.receive_data(encode(m.SSLRequest()))
    p.next_event()
    p.backend_sent(err)
    assert p.phase is FrontendPhase.DONE


def test_invalid_answer_to_ssl_request() -> None:
    b = BackendParser()
    b.frontend_sent(m.SSLRequest())
    b.receive_data(b"G")
    _raises(b)


def test_cancel_request_ends_the_conversation() -> None:
    p = FrontendParser()
    p.receive_data(encode(m.CancelRequest(42, b"abcd")))
    assert p.next_event() == m.CancelRequest(42, b"abcd")
    assert p.phase is FrontendPhase.DONE
    assert p.next_event() is NEED_DATA
    p.receive_data(b"x")
    _raises(p)


@pytest.mark.parametrize(
    ("packet", "sqlstate"),
    [
        (struct.pack("!ii", 8, 2 << 16), "0A000"),  # protocol 2.0
        (struct.pack("!ii", 7, m.PROTOCOL_3_0), "08P01"),  # too short to hold a code
        (struct.pack("!ii", -1, m.PROTOCOL_3_0), "08P01"),
        (struct.pack("!ii", 10_001, m.PROTOCOL_3_0), "54000"),
        (struct.pack("!ii", 12, m.PROTOCOL_3_0) + b"us\x00x", "08P01"),  # no terminator
        (struct.pack("!ii", 13, m.PROTOCOL_3_0) + b"u\x00\x00\x00\x00", "08P01"),  # extra byte
        (struct.pack("!iii", 12, m.SSL_REQUEST_CODE, 0), "08P01"),
        (struct.pack("!iii", 12, m.CANCEL_REQUEST_CODE, 1), "08P01"),  # no key
    ],
)
def test_bad_startup_packets(packet: bytes, sqlstate: str) -> None:
    p = FrontendParser()
    p.receive_data(packet)
    _raises(p, sqlstate)


def test_direct_tls_is_named() -> None:
    p = FrontendParser()
    p.receive_data(b"\x16\x03\x01\x02\x00\x01")
    assert "direct TLS" in _raises(p)


def test_startup_limit_is_configurable() -> None:
    big = encode(m.StartupMessage({"options": "x" * 20_000}))
    p = FrontendParser()
    p.receive_data(big)
    _raises(p, "54000")
    p = FrontendParser(max_startup_length=30_000)
    p.receive_data(big)
    assert isinstance(p.next_event(), m.StartupMessage)


# ----------------------------------------------------------------- authentication


def test_scram_exchange() -> None:
    p = FrontendParser()
    p.receive_data(encode(STARTUP))
    p.next_event()
    p.backend_sent(m.AuthenticationSASL(["SCRAM-SHA-256"]))
    assert p.auth_context == "sasl_initial"
    first = m.SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=abc")
    p.receive_data(encode(first))
    assert p.next_event() == first
    assert p.auth_context is None
    p.backend_sent(m.AuthenticationSASLContinue(b"r=abcdef,s=c2FsdA==,i=4096"))
    final = m.SASLResponse(b"c=biws,r=abcdef,p=proof")
    p.receive_data(encode(final))
    assert p.next_event() == final
    p.backend_sent(m.AuthenticationSASLFinal(b"v=sig"))
    p.backend_sent(m.AuthenticationOk())
    assert p.phase is FrontendPhase.READY


@pytest.mark.parametrize(
    "request_", [m.AuthenticationCleartextPassword(), m.AuthenticationMD5Password(b"salt")]
)
def test_password_exchange(request_: Any) -> None:
    p = FrontendParser()
    p.receive_data(encode(STARTUP))
    p.next_event()
    p.backend_sent(request_)
    p.receive_data(encode(m.PasswordMessage("md5abc")))
    assert p.next_event() == m.PasswordMessage("md5abc")


def test_password_message_needs_a_request() -> None:
    p = FrontendParser()
    p.receive_data(encode(STARTUP) + encode(m.PasswordMessage("pw")))
    p.next_event()
    _raises(p)


def test_only_password_messages_during_authentication() -> None:
    p = auth_frontend("password")
    p.receive_data(encode(m.Query("SELECT 1")))
    assert "expected password response" in _raises(p)


def test_one_answer_per_request() -> None:
    p = auth_frontend("password")
    p.receive_data(encode(m.PasswordMessage("a")) * 2)
    assert p.next_event() == m.PasswordMessage("a")
    _raises(p)


def test_auth_failure_ends_the_conversation() -> None:
    p = auth_frontend("password")
    p.backend_sent(m.ErrorResponse({"S": "FATAL", "C": "28P01"}))
    assert p.phase is FrontendPhase.DONE


def test_password_message_not_allowed_after_authentication() -> None:
    p = ready_frontend()
    p.receive_data(encode(m.PasswordMessage("x")))
    _raises(p)


# ------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "make",
    [ready_frontend, lambda: auth_frontend("sasl"), BackendParser],
)
def test_oversized_length_raises_before_buffering(make: Any) -> None:
    """A declared 2 GiB body with 5 bytes fed raises at once: nothing is allocated."""
    parser = make()
    type_byte = b"p" if isinstance(parser, FrontendParser) and parser.auth_context else b"d"
    parser.receive_data(type_byte + struct.pack("!i", 2**31 - 1))
    with pytest.raises(ProtocolViolation) as info:
        parser.next_event()
    assert info.value.sqlstate in ("54000", "08P01")
    assert parser.buffered == 5


def test_oversized_startup_length_raises_before_buffering() -> None:
    p = FrontendParser()
    p.receive_data(struct.pack("!i", 2**31 - 1) + b"\x00")
    _raises(p, "54000")


def test_limits_are_configurable() -> None:
    p = ready_frontend(max_message_length=100)
    p.receive_data(encode(m.Query("x" * 100)))  # body: 100 + NUL
    _raises(p, "54000")
    p = ready_frontend(max_message_length=100)
    p.receive_data(encode(m.Query("x" * 99)))
    assert p.next_event() == m.Query("x" * 99)
    b = BackendParser(max_message_length=10)
    b.receive_data(encode(m.DataRow([b"0123456789"])))
    _raises(b, "54000")


@pytest.mark.parametrize(
    "header",
    [b"S\x00\x00\x00\x05", b"X\x00\x00\x00\x08", b"E\x00\x00\x00\x05", b"D\x00\x00\x30\x00"],
)
def test_impossible_lengths_for_fixed_messages_fail_from_the_header(header: bytes) -> None:
    p = ready_frontend()
    p.receive_data(header)
    _raises(p)


def test_negative_length() -> None:
    b = BackendParser()
    b.receive_data(b"D\xff\xff\xff\xff")
    _raises(b)


def test_unknown_type_bytes() -> None:
    p = ready_frontend()
    p.receive_data(b"Z\x00\x00\x00\x04")
    assert "invalid frontend message type 'Z'" in _raises(p)
    b = BackendParser()
    b.receive_data(b"\x00\x00\x00\x00\x04")
    _raises(b)


# ----------------------------------------------------------------- EOF and failure


def test_eof_between_messages_is_closed() -> None:
    b = BackendParser()
    b.receive_data(encode(m.ParseComplete()))
    b.receive_data(b"")
    assert b.next_event() == m.ParseComplete()
    assert b.next_event() is CLOSED
    b.receive_data(b"")  # repeated EOF is fine
    with pytest.raises(LocalProtocolError):
        b.receive_data(b"more")


def test_eof_mid_message_is_a_violation() -> None:
    b = BackendParser()
    b.receive_data(encode(m.CommandComplete("SELECT 1"))[:-1])
    assert b.next_event() is NEED_DATA
    b.receive_data(b"")
    assert "mid-message" in _raises(b)


def test_failed_parser_stays_failed() -> None:
    b = BackendParser()
    b.receive_data(b"?\x00\x00\x00\x04")
    _raises(b)
    assert b.failed
    b.receive_data(encode(m.ParseComplete()))
    _raises(b)


def test_backend_session_state() -> None:
    b = BackendParser()
    b.receive_data(
        encode(m.ParameterStatus("server_version", "15.6"))
        + encode(m.BackendKeyData(99, b"\x01\x02\x03\x04"))
        + encode(m.ReadyForQuery(m.TransactionStatus.IDLE))
        + encode(m.ReadyForQuery(m.TransactionStatus.FAILED))
    )
    list(b.events())
    assert b.parameters == {"server_version": "15.6"}
    assert b.backend_key == m.BackendKeyData(99, b"\x01\x02\x03\x04")
    assert b.transaction_status is m.TransactionStatus.FAILED


def test_large_stream_in_big_chunks_is_linear() -> None:
    """Many small messages in one large chunk (the buffer compacts once per receive)."""
    rows = encode(m.DataRow([b"x" * 10])) * 50_000
    b = BackendParser()
    b.receive_data(rows)
    assert sum(1 for _ in b.events()) == 50_000


# ------------------------------------------------ whole vs. split at any boundary


@fast
@given(st.lists(ready_messages, max_size=10), st.lists(st.integers(1, 7), min_size=1))
def test_frontend_chunking_does_not_matter(msgs: list[Any], sizes: list[int]) -> None:
    wire = b"".join(encode(x) for x in msgs)
    whole = drive(ready_frontend(), wire, eof=True)
    assert whole.events == msgs
    assert drive(ready_frontend(), wire, [1], eof=True) == whole
    assert drive(ready_frontend(), wire, sizes, eof=True) == whole


@fast
@given(st.lists(backend_messages, max_size=10), st.lists(st.integers(1, 7), min_size=1))
def test_backend_chunking_does_not_matter(msgs: list[Any], sizes: list[int]) -> None:
    wire = b"".join(encode(x) for x in msgs)
    whole = drive(BackendParser(), wire, eof=True)
    assert whole.events == msgs
    assert drive(BackendParser(), wire, [1], eof=True) == whole
    assert drive(BackendParser(), wire, sizes, eof=True) == whole


def test_full_client_conversation_byte_at_a_time() -> None:
    msgs: list[Any] = [
        m.Parse("s1", "SELECT $1", [23]),
        m.Bind("", "s1", [0], [b"42"], [1]),
        m.Describe("P", ""),
        m.Execute("", 0),
        m.Sync(),
        m.Terminate(),
    ]
    wire = b"".join(encode(x) for x in msgs)
    whole = drive(ready_frontend(), wire, eof=True)
    split = drive(ready_frontend(), wire, [1], eof=True)
    assert whole == split
    assert whole.stop is CLOSED and whole.error is None and len(whole.events) == 6
