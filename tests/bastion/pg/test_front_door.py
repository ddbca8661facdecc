"""The client handshake machine, without sockets: every decision it makes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.pg.encoding import encode
from bastion.pg.front_door import (
    Authenticate,
    Cancel,
    Closed,
    FrontDoor,
    Reject,
    Send,
    StartTls,
    parse_database,
    safe_options,
    split_options,
)
from bastion.pg.messages import (
    CancelRequest,
    GSSENCRequest,
    PasswordMessage,
    SSLRequest,
    StartupMessage,
    Terminate,
)
from tests.fuzzing import Mutation, apply_mutations, byte_mutations

pytestmark = pytest.mark.timeout(60)


def _door(tls: bool = True, require: bool = True) -> FrontDoor:
    return FrontDoor(tls_available=tls, require_tls=require)


def _startup(**params: str) -> bytes:
    return encode(StartupMessage({"user": "alice", "database": "pg1", **params}))


def test_tls_then_startup_then_token_gives_authenticate() -> None:
    door = _door()
    assert door.receive_data(encode(SSLRequest())) == [Send(b"S"), StartTls()]
    door.tls_started()
    actions = door.receive_data(_startup(application_name="psql", DateStyle="ISO"))
    assert isinstance(actions[-1], Send) and actions[-1].data[:1] == b"R"  # cleartext request
    (auth,) = door.receive_data(encode(PasswordMessage("bdt_token")))
    assert auth == Authenticate(
        user="alice",
        target="pg1",
        credset=None,
        token="bdt_token",
        parameters={"application_name": "psql", "DateStyle": "ISO"},
    )


def test_a_refusal_at_capacity_answers_the_startup_message_after_tls() -> None:
    """libpq shows a server's error only in answer to the startup message."""
    door = _door()
    door.refuse(b"E-refusal")
    assert door.receive_data(encode(SSLRequest())) == [Send(b"S"), StartTls()]
    door.tls_started()
    assert door.receive_data(_startup()) == [Send(b"E-refusal"), Closed()]
    assert door.done and door.receive_data(encode(PasswordMessage("bdt_x"))) == []


def test_a_refusal_at_capacity_answers_a_plaintext_startup_too() -> None:
    door = _door(tls=False, require=False)
    door.refuse(b"E-refusal")
    assert door.receive_data(encode(SSLRequest())) == [Send(b"N")]
    assert door.receive_data(_startup()) == [Send(b"E-refusal"), Closed()]


def test_plaintext_refused_before_any_password_when_tls_required() -> None:
    door = _door()
    (reject,) = door.receive_data(_startup())
    assert isinstance(reject, Reject) and reject.reason == "plaintext"
    assert b"sslmode=require" in reject.data and reject.data[:1] == b"E"
    assert reject.user == "alice" and door.done


def test_plaintext_allowed_when_tls_not_required() -> None:
    door = _door(tls=False, require=False)
    assert door.receive_data(encode(SSLRequest())) == [Send(b"N")]
    actions = door.receive_data(_startup(database="pg1/readonly"))
    assert isinstance(actions[-1], Send)
    (auth,) = door.receive_data(encode(PasswordMessage("t")))
    assert isinstance(auth, Authenticate) and auth.credset == "readonly"


def test_gssenc_refused_then_tls_accepted() -> None:
    door = _door()
    assert door.receive_data(encode(GSSENCRequest())) == [Send(b"N")]
    assert door.receive_data(encode(SSLRequest())) == [Send(b"S"), StartTls()]


def test_plaintext_after_ssl_request_is_an_injection() -> None:
    door = _door()
    actions = door.receive_data(encode(SSLRequest()) + _startup())
    assert isinstance(actions[-1], Reject) and actions[-1].reason == "protocol"


def test_cancel_request_is_handed_over() -> None:
    door = _door()
    assert door.receive_data(encode(CancelRequest(1234, b"abcd"))) == [Cancel(1234, b"abcd")]


def test_unsafe_options_and_replication_refused() -> None:
    door = _door(tls=False, require=False)
    (r,) = door.receive_data(_startup(options="-c role=postgres"))
    assert isinstance(r, Reject) and "role" in r.message
    door = _door(tls=False, require=False)
    (r,) = door.receive_data(_startup(replication="database"))
    assert isinstance(r, Reject) and r.reason == "replication"


def test_empty_password_and_terminate() -> None:
    door = _door(tls=False, require=False)
    door.receive_data(_startup())
    (r,) = door.receive_data(encode(PasswordMessage("")))
    assert isinstance(r, Reject) and "db-token pg1" in r.message
    door = _door(tls=False, require=False)
    door.receive_data(_startup())
    assert door.receive_data(encode(Terminate())) == [Closed()]


def test_newer_protocol_minor_gets_negotiation() -> None:
    door = _door(tls=False, require=False)
    msg = StartupMessage({"user": "a", "database": "pg1", "_pq_.x": "1"}, version=(3 << 16) | 2)
    actions = door.receive_data(encode(msg))
    assert isinstance(actions[0], Send) and actions[0].data[:1] == b"v"


def test_parse_database_and_options() -> None:
    assert parse_database("pg1") == ("pg1", None)
    assert parse_database("pg1/readonly") == ("pg1", "readonly")
    for bad in ("", "a/b/c", "pg 1", "pg1/"):
        with pytest.raises(ValueError):
            parse_database(bad)
    assert safe_options("-c search_path=app -c statement_timeout=5s") == (
        "-c search_path=app -c statement_timeout=5s"
    )
    assert safe_options("--work-mem=64MB") == "-c work_mem=64MB"
    # PostgreSQL's own splitting: any whitespace separates, a backslash escapes.
    assert split_options("-c\tsearch_path=a\\ b  -c x=1") == ["-c", "search_path=a b", "-c", "x=1"]
    rebuilt = safe_options("-c search_path=a\\\\\\ --role=postgres")
    assert split_options(rebuilt) == ["-c", "search_path=a\\ --role=postgres"]
    with pytest.raises(ValueError, match="session_authorization"):
        safe_options("-c session_authorization=postgres")


_VALID = encode(SSLRequest()) + _startup() + encode(PasswordMessage("x"))


@settings(max_examples=300, deadline=None)
@given(ops=byte_mutations(max_run=20))
def test_hostile_bytes_never_raise(ops: list[Mutation]) -> None:
    """Whatever arrives, the door answers with actions, never an exception."""
    data = apply_mutations(_VALID, ops, max_insert=8)
    for tls in (True, False):
        door = _door(tls=tls, require=tls)
        for i in range(0, len(data), 7):
            actions = door.receive_data(data[i : i + 7])
            kinds = Send | StartTls | Cancel | Reject | Closed | Authenticate
            assert all(isinstance(a, kinds) for a in actions)
            if any(isinstance(a, StartTls) for a in actions):
                door.tls_started()


@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    door = _door(tls=False, require=False)
    door.receive_data(data)
    door.receive_data(b"")
