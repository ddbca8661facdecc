"""The bastion's own login to a target, driven over a plain socket against real PostgreSQL."""

from __future__ import annotations

import secrets
import socket

import pytest

from bastion.pg.upstream_login import LoginFailed, LoginResult, UpstreamLogin
from tests.peers.postgres import PgServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _run(server: PgServer, login: UpstreamLogin) -> LoginResult:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(login.start())
        while login.result is None:
            data = sock.recv(65536)
            out, start_tls = login.receive_data(data)
            assert not start_tls, "the test server has no TLS"
            if out:
                sock.sendall(out)
            if not data:
                break
        assert login.result is not None
        return login.result


def _login(user: str, password: str | None, tls: str = "prefer") -> UpstreamLogin:
    return UpstreamLogin(
        user=user,
        password=password,
        database="postgres",
        parameters={"application_name": "bastion-test"},
        tls_mode=tls,
    )


def test_scram_login_reaches_ready(pg_server: PgServer) -> None:
    name, password = f"scram_{secrets.token_hex(4)}", secrets.token_hex(8)
    pg_server.create_role(name, password)
    result = _run(pg_server, _login(name, password))
    assert result.backend_key is not None and result.backend_key.pid > 0
    assert result.parameters["application_name"] == "bastion-test"
    assert result.parameters["server_version"].startswith("15")


def test_wrong_scram_password_names_the_cause(pg_server: PgServer) -> None:
    name = f"scram_{secrets.token_hex(4)}"
    pg_server.create_role(name, "right")
    with pytest.raises(LoginFailed, match="password authentication failed"):
        _run(pg_server, _login(name, "wrong"))


def test_md5_and_trust_logins(pg_server: PgServer) -> None:
    pg_server.execute("DROP ROLE IF EXISTS md5_user")
    pg_server.execute("SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'm5'")
    assert _run(pg_server, _login("md5_user", "m5")).backend_key is not None
    with pytest.raises(LoginFailed, match="password authentication failed"):
        _run(pg_server, _login("md5_user", "nope"))
    pg_server.execute("DROP ROLE IF EXISTS trust_user")
    pg_server.execute("CREATE ROLE trust_user LOGIN")
    assert _run(pg_server, _login("trust_user", None)).backend_key is not None


def test_password_needed_but_missing(pg_server: PgServer) -> None:
    name = f"scram_{secrets.token_hex(4)}"
    pg_server.create_role(name, "pw")
    with pytest.raises(LoginFailed, match="credential set has no password"):
        _run(pg_server, _login(name, None))


def test_tls_required_but_target_has_none(pg_server: PgServer) -> None:
    with pytest.raises(LoginFailed, match="does not offer TLS"):
        _run(pg_server, _login("postgres", None, tls="require"))


def test_garbage_from_target_is_a_login_failure() -> None:
    login = _login("x", "y", tls="disable")
    login.start()
    with pytest.raises(LoginFailed, match="invalid message"):
        login.receive_data(b"\xff\x00\x00\x00\x04")
