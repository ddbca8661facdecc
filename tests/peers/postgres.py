"""A throwaway PostgreSQL server for integration tests.

``pg_server`` (session scope) runs ``initdb`` and ``postgres`` from the
PostgreSQL binaries (``BASTION_PG_BIN``, else ``pg_config --bindir``, else
``/usr/lib/postgresql/*/bin``) in a fresh temporary directory, listening on a
free loopback TCP port with its unix socket in the same directory. As root the
server runs as the ``postgres`` user (PostgreSQL refuses root). Authentication:
the superuser ``postgres`` is trusted; every other role must use a
scram-sha-256 password over TCP (``PgServer.create_role``), so proxies can be
tested against real password authentication; the roles ``md5_user`` (md5) and
``trust_user`` (trust), if a test creates them, exercise the other methods.

The server is stopped (``pg_ctl stop -m immediate``) and its directory removed
when the session ends, whatever the tests did; on Linux it also dies with the
test process if that is killed outright.

``pg_url`` (function scope) is a URL for a fresh, empty database, dropped
afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.peers.lane import require_integration

__all__ = ["PgServer", "find_pg_bin", "pg_server", "pg_tls_server", "pg_url", "start_pg_server"]

SUPERUSER = "postgres"
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class PgServer:
    """Where a running test PostgreSQL listens, plus admin helpers."""

    host: str
    port: int
    superuser: str
    socket_dir: Path
    data_dir: Path
    log_file: Path
    bin_dir: Path

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str = "") -> str:
        """A ``postgresql://`` URL for ``dbname`` as ``user`` (default: the superuser)."""
        auth = user or self.superuser
        if password:
            auth += ":" + password
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """An autocommit superuser connection (close it, or use ``with``)."""
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def execute(self, statement: str | sql.SQL | sql.Composed, dbname: str = "postgres") -> None:
        """Run one statement as the superuser."""
        with self.connect(dbname) as conn:
            conn.execute(statement)

    def create_database(self, name: str | None = None, owner: str | None = None) -> str:
        """Create an empty database (random name unless given); return its name."""
        name = name or f"db_{secrets.token_hex(6)}"
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            stmt = sql.SQL("{} OWNER {}").format(stmt, sql.Identifier(owner))
        self.execute(stmt)
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting anyone still using it."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def create_role(self, name: str, password: str, *, superuser: bool = False) -> None:
        """Create a login role that authenticates with scram-sha-256 over TCP."""
        stmt = sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
            sql.Identifier(name),
            sql.SQL("SUPERUSER" if superuser else "NOSUPERUSER"),
            sql.Literal(password),
        )
        self.execute(stmt)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log, for failure messages."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def find_pg_bin() -> Path | None:
    """The directory holding initdb/pg_ctl/postgres, or None if PostgreSQL is not installed."""
    candidates: list[str] = []
    if os.environ.get("BASTION_PG_BIN"):
        candidates.append(os.environ["BASTION_PG_BIN"])
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True
        )
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        d = Path(c)
        if all((d / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _free_port() -> int:
    from bastion.openssh_target import free_port

    return free_port()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # If pytest is killed outright, the postmaster gets SIGQUIT (immediate shutdown).
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGQUIT)


class _Runner:
    """Runs PostgreSQL programs as the right OS user."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.kwargs: dict[str, Any] = {}
        self.uid = self.gid = -1
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(SUPERUSER)
            except KeyError:
                pytest.fail("running as root needs a 'postgres' OS user to run PostgreSQL")
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
            self.kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.uid >= 0:
            os.chown(path, self.uid, self.gid)

    def run(self, exe: str, *args: str) -> None:
        cmd = [str(self.bin_dir / exe), *args]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, **self.kwargs
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def spawn(self, exe: str, args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(
                [str(self.bin_dir / exe), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                **self.kwargs,
            )


_HBA = """\
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       all                      trust
host    all       postgres  127.0.0.1/32   trust
host    all       md5_user  127.0.0.1/32   md5
host    all       trust_user 127.0.0.1/32  trust
host    all       all       127.0.0.1/32   scram-sha-256
host    all       postgres  ::1/128        trust
host    all       all       ::1/128        scram-sha-256
"""


def _configure(data: Path, port: int, sock: Path) -> None:
    extra = f"""
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sock}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
password_encryption = 'scram-sha-256'
log_min_messages = warning
"""
    with open(data / "postgresql.conf", "a") as f:
        f.write(extra)
    (data / "pg_hba.conf").write_text(_HBA)


def _enable_tls(data: Path, runner: _Runner) -> None:
    from bastion.pg.tls_cert import make_node_certificate

    cert, key = data / "server.crt", data / "server.key"
    if not cert.exists():
        make_node_certificate(cert, key, "localhost")
        runner.chown(cert)
        runner.chown(key)
        with open(data / "postgresql.conf", "a") as f:
            f.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")


def _wait_ready(server: PgServer, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with psycopg.connect(server.dsn(), connect_timeout=2):
                return
        except psycopg.OperationalError as e:
            last = e
            time.sleep(0.05)
    raise RuntimeError(
        f"postgres did not accept connections in time ({last}):\n{server.log_tail()}"
    )


@contextlib.contextmanager
def start_pg_server(bin_dir: Path, tls: bool = False) -> Iterator[PgServer]:
    """Run a private PostgreSQL server for the duration of the ``with`` block.

    ``tls``: also accept TLS with a self-signed certificate (for 127.0.0.1 and
    localhost) written to ``<data dir>/server.crt``, usable as a client's root CA.
    """
    require_integration("a PostgreSQL server")
    runner = _Runner(bin_dir)
    base = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    data = base / "data"
    try:
        os.chmod(base, 0o700)
        runner.chown(base)
        runner.run(
            "initdb", "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
            "--no-locale", "-E", "UTF8",
        )  # fmt: skip
        for _attempt in range(5):
            port = _free_port()
            _configure(data, port, base)
            if tls:
                _enable_tls(data, runner)
            server = PgServer(
                host="127.0.0.1",
                port=port,
                superuser=SUPERUSER,
                socket_dir=base,
                data_dir=data,
                log_file=base / "postgres.log",
                bin_dir=bin_dir,
            )
            log = server.log_file
            log.touch()
            runner.chown(log)
            proc = runner.spawn("postgres", ["-D", str(data)], log)
            try:
                _wait_ready(server, proc)
                break
            except RuntimeError:
                if proc.poll() is None or "could not bind" not in server.log_tail():
                    raise
                proc = None  # port taken between probe and bind: try another
        else:
            raise RuntimeError("could not find a free port for PostgreSQL")
        yield server
    finally:
        if proc is not None:
            with contextlib.suppress(Exception):
                runner.run("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w")
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A private PostgreSQL server for the whole test session (fails if not installed)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.fail(
            "PostgreSQL server binaries not found (apt-get install postgresql); set BASTION_PG_BIN"
        )
    with start_pg_server(bin_dir) as server:
        yield server


@pytest.fixture(scope="session")
def pg_tls_server() -> Iterator[PgServer]:
    """A second private PostgreSQL that also speaks TLS (certificate: data_dir/server.crt)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL server binaries not found (apt-get install postgresql)")
    with start_pg_server(bin_dir, tls=True) as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """URL of a fresh empty database owned by the superuser, dropped after the test."""
    name = pg_server.create_database()
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


def stop_immediately(server: PgServer) -> None:
    """``pg_ctl stop -m immediate``: the server dies as in a crash (no checkpoint, backends
    told nothing more than SIGQUIT gives them), for tests of a target that dies."""
    _Runner(server.bin_dir).run(
        "pg_ctl", "stop", "-D", str(server.data_dir), "-m", "immediate", "-w"
    )


def stop_fast(server: PgServer) -> None:
    """``pg_ctl stop -m fast``: the server disconnects every client and shuts down cleanly
    (an outage of the database, as an admin's restart or a failover causes one)."""
    _Runner(server.bin_dir).run("pg_ctl", "stop", "-D", str(server.data_dir), "-m", "fast", "-w")


def restart(server: PgServer) -> subprocess.Popen[bytes]:
    """Start a stopped server again on the same port and data; returns once it accepts
    connections. The caller stops it (``stop_fast``) and waits for the process."""
    runner = _Runner(server.bin_dir)
    proc = runner.spawn("postgres", ["-D", str(server.data_dir)], server.log_file)
    try:
        _wait_ready(server, proc)
    except BaseException:
        proc.kill()
        proc.wait(timeout=30)
        raise
    return proc
