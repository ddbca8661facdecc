"""Authorisation through the bastion: grants, their windows, and what they allow."""

from __future__ import annotations

import errno
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers.bastion_node import BastionHarness, Contractor
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _refusal(bastion: BastionHarness, user: str) -> str:
    rows = bastion.audit(user, "session.refused")
    assert rows, "refusal was not audited"
    return str(rows[-1].details["message"])


def test_no_grant(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    r = c.ssh("true", target="web1")
    assert r.returncode == 1
    assert b"no grant for web1" in r.stderr
    assert "no grant for web1" in _refusal(bastion, c.name)


def test_unknown_target_looks_like_no_grant(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    r = c.ssh("true", target="nosuchhost")
    assert r.returncode == 1
    assert b"no grant for nosuchhost" in r.stderr


def test_expired_grant(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    g = bastion.grant(c, "web1", start=time.time() - 7200, seconds=3600)
    r = c.ssh("true", target="web1")
    assert r.returncode == 1
    assert f"grant #{g.id} expired at".encode() in r.stderr
    assert f"grant #{g.id} expired" in _refusal(bastion, c.name)


def test_grant_not_yet_started(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    g = bastion.grant(c, "web1", start=time.time() + 3600)
    r = c.ssh("true", target="web1")
    assert r.returncode == 1
    assert f"grant #{g.id} starts at".encode() in r.stderr
    assert f"grant #{g.id} starts at" in _refusal(bastion, c.name)


def test_grant_for_web1_does_not_open_web2(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    r = c.ssh("true", target="web2")
    assert r.returncode == 1
    assert b"no grant for web2" in r.stderr
    assert "no grant for web2" in _refusal(bastion, c.name)


def test_revoked_grant_refused(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    g = bastion.grant(c, "web1")
    assert bastion.cli("grant", "revoke", str(g.id)).returncode == 0
    r = c.ssh("true", target="web1")
    assert r.returncode == 1
    assert f"grant #{g.id} was revoked".encode() in r.stderr


def test_wrong_login_refused(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    r = c.ssh("true", target="web1", login="postgres")
    assert r.returncode == 1
    assert b"as login 'postgres'" in r.stderr


def test_grants_builtin_lists_live_grants(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    g = bastion.grant(c, "web2", options=("sftp",))
    r = c.ssh("grants")
    assert r.returncode == 0, r.stderr
    assert f"#{g.id}\tweb2".encode() in r.stdout
    assert b"sftp" in r.stdout


def _scp(
    c: Contractor, bastion: BastionHarness, *args: str, legacy: bool = False
) -> subprocess.CompletedProcess[bytes]:
    cmd = ["scp", *(["-O"] if legacy else []), *c.ssh_args(), "-P", str(bastion.port), *args]
    return subprocess.run(
        cmd, capture_output=True, env=c.ssh_env(), timeout=60, stdin=subprocess.DEVNULL
    )


def _sftp(
    c: Contractor, bastion: BastionHarness, login_name: str, batch: str
) -> subprocess.CompletedProcess[bytes]:
    # sftp -b implies BatchMode=yes (no prompts); ssh keeps the first value it sees.
    cmd = [
        "sftp",
        *c.ssh_args(),
        "-o",
        "BatchMode=no",
        "-P",
        str(bastion.port),
        "-b",
        "-",
        f"{login_name}@127.0.0.1",
    ]
    return subprocess.run(
        cmd, input=batch.encode(), capture_output=True, env=c.ssh_env(), timeout=60
    )


@pytest.mark.parametrize("legacy", [False, True], ids=["scp-sftp-protocol", "scp-legacy"])
def test_scp_refused_without_option(bastion: BastionHarness, tmp_path: Path, legacy: bool) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    src = tmp_path / "f.txt"
    src.write_text("hello")
    r = _scp(
        c, bastion, str(src), f"{c.login_name('web1')}@127.0.0.1:{tmp_path}/copy.txt", legacy=legacy
    )
    assert r.returncode != 0
    assert b"does not allow" in r.stderr
    assert not (tmp_path / "copy.txt").exists()
    assert "does not allow" in _refusal(bastion, c.name)


def test_sftp_refused_without_option(bastion: BastionHarness, tmp_path: Path) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1", options=("port-forward",))
    r = _sftp(c, bastion, c.login_name("web1"), f"ls {tmp_path}\n")
    assert r.returncode != 0
    assert "does not allow sftp" in _refusal(bastion, c.name)


@pytest.mark.parametrize("legacy", [False, True], ids=["scp-sftp-protocol", "scp-legacy"])
def test_scp_upload_and_download_with_option(
    bastion: BastionHarness, tmp_path: Path, legacy: bool
) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1", options=("scp",))
    payload = bytes(range(256)) * 1000
    src = tmp_path / "up.bin"
    src.write_bytes(payload)
    remote = tmp_path / "remote.bin"
    r = _scp(c, bastion, str(src), f"{c.login_name('web1')}@127.0.0.1:{remote}", legacy=legacy)
    assert r.returncode == 0, r.stderr
    assert remote.read_bytes() == payload
    back = tmp_path / "back.bin"
    r = _scp(c, bastion, f"{c.login_name('web1')}@127.0.0.1:{remote}", str(back), legacy=legacy)
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == payload
    ups = bastion.wait_audit(c.name, "file.upload")
    downs = bastion.wait_audit(c.name, "file.download")
    assert any(_names(e, remote) and e.details["bytes"] == len(payload) for e in ups)
    assert any(_names(e, remote) and e.details["bytes"] == len(payload) for e in downs)


def _names(event: Any, remote: Path) -> bool:
    """SFTP audits the full path; legacy scp the file name plus the command's operand."""
    where = [event.details["path"], *(event.details.get("command_paths") or [])]
    return any(str(remote) in w or remote.name == w for w in where)


def test_sftp_with_option(bastion: BastionHarness, tmp_path: Path) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web2", options=("sftp",))
    (tmp_path / "a.txt").write_text("sftp-data")
    r = _sftp(
        c,
        bastion,
        c.login_name("web2"),
        f"get {tmp_path}/a.txt {tmp_path}/b.txt\nmkdir {tmp_path}/newdir\n",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b.txt").read_text() == "sftp-data"
    assert (tmp_path / "newdir").is_dir()


def test_rsync_needs_scp_option(bastion: BastionHarness, tmp_path: Path) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1", options=("scp",))
    src = tmp_path / "r.txt"
    src.write_text("rsync-data")
    ssh = " ".join(["ssh", *c.ssh_args(), "-p", str(bastion.port)])
    r = subprocess.run(
        ["rsync", "-e", ssh, str(src), f"{c.login_name('web1')}@127.0.0.1:{tmp_path}/r2.txt"],
        capture_output=True,
        env=c.ssh_env(),
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r2.txt").read_text() == "rsync-data"
    d = bastion.contractor()
    bastion.grant(d, "web1")
    r = subprocess.run(
        [
            "rsync",
            "-e",
            ssh.replace(str(c.key_path), str(d.key_path)),
            str(src),
            f"{d.login_name('web1')}@127.0.0.1:{tmp_path}/r3.txt",
        ],
        capture_output=True,
        env=d.ssh_env(),
        timeout=60,
    )
    assert r.returncode != 0
    assert not (tmp_path / "r3.txt").exists()


class _EchoServer:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data.upper())

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class _Port:
    """A destination that is only a port (nothing answers on it)."""

    port: int


def _forward_roundtrip(
    c: Contractor, bastion: BastionHarness, echo: _EchoServer | _Port
) -> tuple[bytes | None, str]:
    """What came back through ``ssh -L`` to the echo server, and what ssh printed."""
    from bastion.openssh_target import free_port

    local = free_port()
    with tempfile.TemporaryFile() as said:
        proc = subprocess.Popen(
            [
                "ssh",
                *c.ssh_args(),
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                f"127.0.0.1:{local}:127.0.0.1:{echo.port}",
                "-p",
                str(bastion.port),
                f"{c.login_name('web1')}@127.0.0.1",
            ],
            env=c.ssh_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=said,
        )
        got: bytes | None = None
        try:
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", local), timeout=5) as s:
                        s.sendall(b"hello forward")
                        s.shutdown(socket.SHUT_WR)
                        chunks = []
                        while data := s.recv(65536):
                            chunks.append(data)
                        got = b"".join(chunks)
                        break
                except ConnectionRefusedError:
                    time.sleep(0.2)
                except (ConnectionResetError, BrokenPipeError):
                    got = b""  # the forward was refused: ssh dropped the socket
                    break
                except OSError as e:
                    # ssh dropped the socket before our shutdown(): same refusal, seen later
                    if e.errno != errno.ENOTCONN:
                        raise
                    got = b""
                    break
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # never leave a client running into other tests
                proc.kill()
                proc.wait(timeout=10)
        said.seek(0)
        return got, said.read().decode(errors="replace")


def test_port_forward_with_and_without_option(bastion: BastionHarness) -> None:
    echo = _EchoServer()
    try:
        c = bastion.contractor()
        bastion.grant(c, "web1", options=("port-forward",))
        assert _forward_roundtrip(c, bastion, echo)[0] == b"HELLO FORWARD"
        assert bastion.wait_audit(c.name, "forward.open")
        d = bastion.contractor()
        bastion.grant(d, "web1")
        got, said = _forward_roundtrip(d, bastion, echo)
        assert got == b"", said
        # refused at channel open, with the reason, as OpenSSH's own sshd would refuse it
        assert "open failed: administratively prohibited: bastion: " in said, said
        assert "does not allow port-forward" in said, said
        refused = bastion.wait_audit(d.name, "forward.refused")
        assert refused and "does not allow port-forward" in refused[-1].details["reason"]
        assert not bastion.audit(d.name, "forward.open")
    finally:
        echo.close()


def test_port_forward_to_an_unreachable_destination_fails_at_channel_open(
    bastion: BastionHarness,
) -> None:
    """The target's sshd cannot connect: the client's channel open fails with the
    target's reason (not accepted and then closed), and the refusal is audited."""
    # A port bound but never listened on: connections are refused, and no other test
    # (another xdist worker's echo server) can take the port while this one runs.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    gone = _Port(held.getsockname()[1])
    c = bastion.contractor()
    bastion.grant(c, "web1", options=("port-forward",))
    try:
        got, said = _forward_roundtrip(c, bastion, gone)
    finally:
        held.close()
    assert got == b""
    assert f"open failed: connect failed: bastion: target refused 127.0.0.1:{gone.port}" in said
    refused = bastion.wait_audit(c.name, "forward.refused")
    assert refused and refused[-1].details["destination"] == f"127.0.0.1:{gone.port}"
    assert not bastion.audit(c.name, "forward.open")


def test_agent_forwarding_only_when_granted(bastion: BastionHarness, tmp_path: Path) -> None:
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
    try:
        wait_until(Path(sock).exists, 10, "ssh-agent to create its socket")
        key = tmp_path / "agent_key"
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "agent-key-marker",
                "-f",
                str(key),
            ],
            check=True,
        )
        subprocess.run(
            ["ssh-add", str(key)], check=True, capture_output=True, env={"SSH_AUTH_SOCK": sock}
        )
        env = {"SSH_AUTH_SOCK": sock}
        c = bastion.contractor()
        bastion.grant(c, "web1", options=("agent",))
        r = subprocess.run(
            [
                "ssh",
                *c.ssh_args(),
                "-A",
                "-p",
                str(bastion.port),
                f"{c.login_name('web1')}@127.0.0.1",
                "ssh-add -l",
            ],
            capture_output=True,
            env={**c.ssh_env(), **env},
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stderr
        assert b"agent-key-marker" in r.stdout
        assert bastion.audit(c.name, "agent.allowed")
        d = bastion.contractor()
        bastion.grant(d, "web1")
        r = subprocess.run(
            [
                "ssh",
                *d.ssh_args(),
                "-A",
                "-p",
                str(bastion.port),
                f"{d.login_name('web1')}@127.0.0.1",
                "ssh-add -l",
            ],
            capture_output=True,
            env={**d.ssh_env(), **env},
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode != 0
        assert b"agent-key-marker" not in r.stdout
        refused = bastion.audit(d.name, "agent.refused")
        assert refused and "does not allow agent" in refused[-1].details["reason"]
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_remote_forward_always_refused(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1", options=("port-forward",))
    r = c.ssh(
        "true",
        target="web1",
        extra=["-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:9"],
    )
    assert r.returncode == 255
    assert b"remote port forwarding failed" in r.stderr.lower()
    assert bastion.wait_audit(c.name, "forward.refused")[-1].details["kind"] == "remote"


def test_scp_command_with_extra_shell_refused(bastion: BastionHarness, tmp_path: Path) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1", options=("scp",))
    r = c.ssh(f"scp -t {tmp_path}/x; touch {tmp_path}/sneaky", target="web1")
    assert r.returncode == 1
    assert b"not a plain scp transfer" in r.stderr
    assert not (tmp_path / "sneaky").exists()
