"""What the SSH listener negotiates: the [ssh] algorithm lists; real clients and ssh-audit."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncssh
import paramiko
import pytest

from bastion.config import SshConfig, load_config, render_config
from bastion.errors import ConfigError
from bastion.ssh.algorithm_names import ALGORITHM_KEYS, PREFERRED_KEX_ALGORITHMS
from bastion.ssh.algorithms import (
    DEFAULT_CIPHERS,
    DEFAULT_HOST_KEY_ALGORITHMS,
    DEFAULT_KEX_ALGORITHMS,
    DEFAULT_MACS,
    USER_SIGNATURE_ALGORITHMS,
    check_ssh_algorithms,
    offered_host_keys,
    sha1_signature,
    supported,
)
from tests.peers.bastion_node import BastionHarness

DEFAULTS = {
    "kex_algorithms": DEFAULT_KEX_ALGORITHMS,
    "macs": DEFAULT_MACS,
    "host_key_algorithms": DEFAULT_HOST_KEY_ALGORITHMS,
    "ciphers": DEFAULT_CIPHERS,
}


def _legacy(name: str) -> bool:
    """SHA-1, negotiated or small DH groups, NIST curves, CBC, non-ETM MACs."""
    return (
        "sha1" in name
        or name == "ssh-rsa"
        or "group-exchange" in name
        or "gex" in name
        or "group1-" in name
        or "nistp" in name
        or "cbc" in name
        or (name.startswith(("hmac-", "umac-")) and "-etm@" not in name)
    )


def test_defaults_offer_nothing_legacy_and_only_what_asyncssh_implements() -> None:
    for key, names in DEFAULTS.items():
        assert names, key
        assert [n for n in names if _legacy(n)] == [], key
        assert set(names) <= set(supported(key)), key
    assert "ssh-rsa" not in USER_SIGNATURE_ALGORITHMS
    assert "rsa-sha2-512" in USER_SIGNATURE_ALGORITHMS
    assert "sk-ssh-ed25519@openssh.com" in USER_SIGNATURE_ALGORITHMS  # FIDO keys still log in
    # a post-quantum hybrid comes first whenever this asyncssh has one
    pq = [n for n in supported("kex_algorithms") if n.startswith(("mlkem768x25519", "sntrup761"))]
    assert bool(pq) == DEFAULT_KEX_ALGORITHMS[0].startswith(("mlkem", "sntrup"))


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_config_names_the_key_and_the_choices_for_an_unknown_algorithm(
    tmp_path: Path, key: str
) -> None:
    # the template writes each list; drop it so the test's own line is the only one
    path = tmp_path / "bastion.toml"
    text = render_config("n1", "127.0.0.1:2299")
    start = text.index(f"\n{key} = [")
    end = text.index("]\n", start) + 2
    text = text[:start] + f'\n{key} = ["no-such-alg@example.com"]\n' + text[end:]
    path.write_text(text)
    # load_config checks the shape only (commands that never speak SSH do not load
    # asyncssh); the names are checked where the node starts (test_cli_startup.py)
    config = load_config(path)
    with pytest.raises(ConfigError) as err:
        check_ssh_algorithms(config.ssh)
    message = str(err.value)
    assert f"ssh.{key}: 'no-such-alg@example.com' is not supported" in message
    assert DEFAULTS[key][0] in message.split("choose from: ")[1]
    path.write_text(text.replace('["no-such-alg@example.com"]', "[]"))
    with pytest.raises(ConfigError, match=rf"ssh.{key} must not be empty"):
        load_config(path)


def test_config_reads_the_lists_and_template_shows_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(render_config("n1", "127.0.0.1:2299"))
    ssh = load_config(path).ssh
    assert (ssh.kex_algorithms, ssh.macs, ssh.host_key_algorithms, ssh.ciphers) == (
        DEFAULT_KEX_ALGORITHMS,
        DEFAULT_MACS,
        DEFAULT_HOST_KEY_ALGORITHMS,
        DEFAULT_CIPHERS,
    )
    text = path.read_text()
    start = text.index("\nkex_algorithms = [")
    end = text.index("]\n", start) + 2
    path.write_text(text[:start] + '\nkex_algorithms = ["curve25519-sha256"]\n' + text[end:])
    assert load_config(path).ssh.kex_algorithms == ("curve25519-sha256",)
    # left out, a list gets the default (kex: cut to what this asyncssh implements)
    path.write_text(text[:start] + "\n" + text[end:])
    assert load_config(path).ssh.kex_algorithms == DEFAULT_KEX_ALGORITHMS
    assert SshConfig().kex_algorithms == DEFAULT_KEX_ALGORITHMS


def test_the_defaults_as_names_only_match_asyncssh_and_need_no_asyncssh() -> None:
    """bastion.config reads the defaults from a module that does not import asyncssh."""
    assert set(DEFAULT_KEX_ALGORITHMS) <= set(PREFERRED_KEX_ALGORITHMS)
    assert set(ALGORITHM_KEYS) == set(DEFAULTS)
    check_ssh_algorithms(SshConfig())
    code = (
        "import sys, bastion.config, bastion.ssh.algorithm_names; "
        "assert 'asyncssh' not in sys.modules, 'bastion.config imported asyncssh'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _loaded_host_keys(key: asyncssh.SSHKey) -> dict[bytes, asyncssh.SSHKeyPair]:
    """The algorithm map asyncssh's server builds from a host key."""
    options = asyncssh.SSHServerConnectionOptions(server_host_keys=[key])
    return dict(options.server_host_keys)


def test_an_rsa_host_key_never_signs_with_sha1(tmp_path: Path) -> None:
    loaded = _loaded_host_keys(asyncssh.generate_private_key("ssh-rsa", key_size=3072))
    assert b"ssh-rsa" in loaded  # what asyncssh would offer on its own
    offered = offered_host_keys(loaded, DEFAULT_HOST_KEY_ALGORITHMS, tmp_path / "k")
    assert list(offered) == [b"rsa-sha2-512", b"rsa-sha2-256"]
    with pytest.raises(ConfigError, match=r"allows none of .*\(.*rsa-sha2-256.*\)"):
        offered_host_keys(loaded, ["ssh-ed25519"], tmp_path / "k")


def test_sha1_user_signatures_are_recognised() -> None:
    key = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    assert sha1_signature(key.sign(b"data", b"ssh-rsa"))
    assert not sha1_signature(key.sign(b"data", b"rsa-sha2-512"))
    ed25519 = asyncssh.generate_private_key("ssh-ed25519")
    assert not sha1_signature(ed25519.sign(b"d", b"ssh-ed25519"))
    assert not sha1_signature(b"\x00\x00")  # truncated: left to asyncssh's verification


# --- against a live node ---------------------------------------------------------------


def _openssh_refusal(port: int, *options: str) -> str:
    """stderr of an OpenSSH client limited to ``options``; it must fail at key exchange."""
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
    argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-p", str(port)]
    for option in options:
        argv += ["-o", option]
    r = subprocess.run(
        [*argv, "nobody@127.0.0.1", "true"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 255, r.stderr
    return r.stderr


@pytest.mark.integration
def test_openssh_cannot_negotiate_legacy_algorithms(bastion: BastionHarness) -> None:
    port = bastion.port
    for kex in (
        "diffie-hellman-group14-sha1",
        "diffie-hellman-group1-sha1",
        "diffie-hellman-group-exchange-sha1,diffie-hellman-group-exchange-sha256",
        "ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521",
    ):
        stderr = _openssh_refusal(port, f"KexAlgorithms={kex}")
        assert "no matching key exchange method found" in stderr, (kex, stderr)
    stderr = _openssh_refusal(port, "Ciphers=aes128-ctr", "MACs=hmac-sha1,hmac-sha2-256")
    assert "no matching MAC found" in stderr
    stderr = _openssh_refusal(port, "HostKeyAlgorithms=ssh-rsa,ecdsa-sha2-nistp256")
    assert "no matching host key type found" in stderr


@pytest.mark.integration
def test_post_quantum_kex_is_negotiated_when_offered(bastion: BastionHarness) -> None:
    pq = [n for n in DEFAULT_KEX_ALGORITHMS if n.startswith(("mlkem", "sntrup"))]
    assert pq, "this asyncssh offers no post-quantum hybrid; the README says which it has"

    async def scan(kex: str) -> asyncssh.SSHKey | None:
        return await asyncssh.get_server_host_key("127.0.0.1", bastion.port, kex_algs=[kex])

    for kex in pq:
        key = asyncio.run(scan(kex))
        assert key is not None and key.algorithm == b"ssh-ed25519", kex


@pytest.mark.integration
def test_rsa_user_key_logs_in_with_sha2_but_not_with_sha1(bastion: BastionHarness) -> None:
    c = bastion.contractor("rsa")
    bastion.grant(c, "web1")
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=3072)
    bastion.store.add_user_key(c.name, rsa.export_public_key("openssh").decode().strip())
    key = paramiko.RSAKey.from_private_key(io.StringIO(rsa.export_private_key("openssh").decode()))
    transport = paramiko.Transport(("127.0.0.1", bastion.port))
    try:  # paramiko picks rsa-sha2-512 from server-sig-algs: the key is accepted
        transport.start_client(timeout=10)
        assert transport.auth_publickey(c.login_name("web1"), key) == ["keyboard-interactive"]
    finally:
        transport.close()

    class TotpClient(asyncssh.SSHClient):
        def kbdint_auth_requested(self) -> str:
            return ""

        def kbdint_challenge_received(
            self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
        ) -> list[str]:
            return [c.next_code() for _ in prompts]

    async def login(sig_alg: str) -> None:
        # asyncssh's client signs with what it is told to, whatever server-sig-algs says
        async with asyncssh.connect(
            "127.0.0.1",
            bastion.port,
            username=c.login_name("web1"),
            client_keys=[rsa],
            signature_algs=[sig_alg],
            known_hosts=None,
            preferred_auth=["publickey", "keyboard-interactive"],
            client_factory=TotpClient,
        ):
            pass

    asyncio.run(login("rsa-sha2-256"))  # both factors: logged in
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(login("ssh-rsa"))


@pytest.mark.integration
def test_ssh_audit_finds_no_failure(bastion: BastionHarness) -> None:
    """ssh-audit (PyPI, a dev extra) against the live listener: any FAIL fails the test.

    WARN findings are printed (pytest -s shows them); the README lists those that
    remain and why. The DHEat connection-rate probe is skipped: it measures the
    per-source limits (a separate item), not the algorithms.
    """
    argv = [sys.executable, "-m", "ssh_audit", "-j", "--skip-rate-test"]
    r = subprocess.run(
        [*argv, "-p", str(bastion.port), "127.0.0.1"], capture_output=True, text=True, timeout=120
    )
    assert r.stdout.startswith("{"), f"ssh-audit did not run (pip install ssh-audit): {r.stderr}"
    report = json.loads(r.stdout)
    fails: list[str] = []
    warns: list[str] = []
    for section in ("kex", "key", "enc", "mac"):
        for entry in report[section]:
            notes = entry.get("notes", {})
            fails += [f"{section} {entry['algorithm']}: {n}" for n in notes.get("fail", [])]
            warns += [f"{section} {entry['algorithm']}: {n}" for n in notes.get("warn", [])]
    for line in warns:
        print("ssh-audit WARN", line)
    assert fails == []
    assert report["cves"] == []
    assert r.returncode in (0, 2), r.returncode  # GOOD or WARNING, never FAILURE (3)
    offered = [e["algorithm"] for s in ("kex", "key", "enc", "mac") for e in report[s]]
    assert [a for a in offered if _legacy(a)] == []
