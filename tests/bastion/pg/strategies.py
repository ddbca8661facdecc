"""Hypothesis strategies for every PostgreSQL message, and parser drivers for tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from bastion.pg import messages as m
from bastion.pg.decoding import AuthContext
from bastion.pg.protocol import BackendParser, FrontendParser, ProtocolViolation, Sentinel, encode

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
name = text.filter(bool)
blob = st.binary(max_size=48)
value = st.none() | blob
i8u = st.integers(0, 255)
i16 = st.integers(-(2**15), 2**15 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
fmt = st.sampled_from([0, 1]) | i16
kind = st.sampled_from(["S", "P"])
secret = st.binary(min_size=4, max_size=256)


@st.composite
def _values_with_formats(draw: st.DrawFn) -> tuple[list[int], list[bytes | None]]:
    values = draw(st.lists(value, max_size=6))
    n = draw(st.sampled_from(sorted({0, 1, len(values)})))
    return draw(st.lists(fmt, min_size=n, max_size=n)), values


@st.composite
def binds(draw: st.DrawFn) -> m.Bind:
    formats, params = draw(_values_with_formats())
    return m.Bind(draw(text), draw(text), formats, params, draw(st.lists(fmt, max_size=4)))


@st.composite
def function_calls(draw: st.DrawFn) -> m.FunctionCall:
    formats, args = draw(_values_with_formats())
    return m.FunctionCall(draw(u32), formats, args, draw(fmt))


startup_messages = st.builds(
    m.StartupMessage,
    st.dictionaries(name, text, max_size=5),
    st.integers(0, 0xFFFF).map(lambda minor: m.PROTOCOL_3_0 | minor),
)
startup_packets = st.one_of(
    startup_messages,
    st.just(m.SSLRequest()),
    st.just(m.GSSENCRequest()),
    st.builds(m.CancelRequest, i32, secret),
)

ready_messages: st.SearchStrategy[Any] = st.one_of(
    st.builds(m.Query, text),
    st.builds(m.Parse, text, text, st.lists(u32, max_size=5)),
    binds(),
    st.builds(m.Describe, kind, text),
    st.builds(m.Execute, text, i32),
    st.just(m.Sync()),
    st.just(m.Flush()),
    st.builds(m.Close, kind, text),
    st.builds(m.CopyData, blob),
    st.just(m.CopyDone()),
    st.builds(m.CopyFail, text),
    function_calls(),
)
"""Every message a client may send after authentication, except Terminate."""

auth_responses: dict[AuthContext, st.SearchStrategy[Any]] = {
    "password": st.builds(m.PasswordMessage, text),
    "sasl_initial": st.builds(m.SASLInitialResponse, name, value),
    "sasl": st.builds(m.SASLResponse, blob),
    "gss": st.builds(m.GSSResponse, blob),
}

auth_requests: dict[AuthContext, Any] = {
    "password": m.AuthenticationCleartextPassword(),
    "sasl_initial": m.AuthenticationSASL(["SCRAM-SHA-256"]),
    "sasl": m.AuthenticationSASLContinue(b"r=x"),
    "gss": m.AuthenticationGSS(),
}

error_fields = st.dictionaries(st.characters(min_codepoint=1, max_codepoint=255), text, max_size=6)

backend_messages: st.SearchStrategy[Any] = st.one_of(
    st.just(m.AuthenticationOk()),
    st.just(m.AuthenticationCleartextPassword()),
    st.builds(m.AuthenticationMD5Password, st.binary(min_size=4, max_size=4)),
    st.just(m.AuthenticationGSS()),
    st.builds(m.AuthenticationGSSContinue, blob),
    st.just(m.AuthenticationSSPI()),
    st.builds(m.AuthenticationSASL, st.lists(name, max_size=3)),
    st.builds(m.AuthenticationSASLContinue, blob),
    st.builds(m.AuthenticationSASLFinal, blob),
    st.builds(m.ParameterStatus, text, text),
    st.builds(m.BackendKeyData, i32, secret),
    st.builds(m.ReadyForQuery, st.sampled_from(list(m.TransactionStatus))),
    st.builds(
        m.RowDescription,
        st.lists(st.builds(m.FieldDescription, text, u32, i16, u32, i16, i32, fmt), max_size=4),
    ),
    st.builds(m.DataRow, st.lists(value, max_size=6)),
    st.builds(m.CommandComplete, text),
    st.just(m.EmptyQueryResponse()),
    st.builds(m.ErrorResponse, error_fields),
    st.builds(m.NoticeResponse, error_fields),
    st.just(m.ParseComplete()),
    st.just(m.BindComplete()),
    st.just(m.CloseComplete()),
    st.just(m.NoData()),
    st.builds(m.ParameterDescription, st.lists(u32, max_size=5)),
    st.just(m.PortalSuspended()),
    st.builds(m.CopyInResponse, i8u, st.lists(fmt, max_size=4)),
    st.builds(m.CopyOutResponse, i8u, st.lists(fmt, max_size=4)),
    st.builds(m.CopyBothResponse, i8u, st.lists(fmt, max_size=4)),
    st.builds(m.CopyData, blob),
    st.just(m.CopyDone()),
    st.builds(m.NotificationResponse, i32, text, text),
    st.builds(m.NegotiateProtocolVersion, i32, st.lists(text, max_size=3)),
    st.builds(m.FunctionCallResponse, value),
)
"""Every typed message a server may send."""


def ready_frontend(**kwargs: Any) -> FrontendParser:
    """A FrontendParser past startup and authentication."""
    parser = FrontendParser(**kwargs)
    parser.receive_data(encode(m.StartupMessage({"user": "u", "database": "d"})))
    assert isinstance(parser.next_event(), m.StartupMessage)
    parser.backend_sent(m.AuthenticationOk())
    return parser


def auth_frontend(context: AuthContext) -> FrontendParser:
    """A FrontendParser waiting for the ``p`` message of ``context``."""
    parser = FrontendParser()
    parser.receive_data(encode(m.StartupMessage({"user": "u"})))
    parser.next_event()
    parser.backend_sent(auth_requests[context])
    return parser


@dataclass
class Outcome:
    """What a parser made of a byte stream: the messages, then how it stopped."""

    events: list[Any]
    stop: Sentinel | None
    error: tuple[str, str] | None  # (sqlstate, message) of the ProtocolViolation


def drive(
    parser: FrontendParser | BackendParser,
    data: bytes,
    chunks: Sequence[int] | None = None,
    eof: bool = False,
    on_event: Callable[[Any], None] | None = None,
) -> Outcome:
    """Feed ``data`` (in pieces of the given sizes, cycling) and collect every event.

    Any exception other than ProtocolViolation propagates and fails the test. The
    loop is bounded: each step must consume bytes or stop.
    """
    events: list[Any] = []
    sizes = list(chunks or [len(data) or 1])
    pos = i = 0
    try:
        while True:
            size = sizes[i % len(sizes)]
            i += 1
            piece = data[pos : pos + size]
            pos += len(piece)
            last = pos >= len(data)
            if piece:
                parser.receive_data(piece)
            if last and eof:
                parser.receive_data(b"")
            stop: Sentinel | None = None
            for _ in range(len(data) + 2):
                ev = parser.next_event()
                if isinstance(ev, Sentinel):
                    stop = ev
                    break
                events.append(ev)
                if on_event is not None:
                    on_event(ev)
            else:
                raise AssertionError("parser made no progress")
            if last:
                return Outcome(events, stop, None)
    except ProtocolViolation as e:
        assert len(e.sqlstate) == 5
        return Outcome(events, None, (e.sqlstate, e.message))
