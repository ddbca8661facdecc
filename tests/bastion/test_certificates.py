"""Certificate scope, proven by the real target sshd: one host, short validity."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from bastion.ca import IssuedCertificate
from bastion.openssh_target import OpenSSHTarget
from bastion.target_setup import default_principal
from tests.peers.bastion_node import LOGIN, BastionHarness

pytestmark = pytest.mark.integration


def _write(cert: IssuedCertificate, directory: Path) -> Path:
    key, crt = cert.openssh_files()
    path = directory / f"k{cert.serial}"
    path.write_bytes(key)
    path.chmod(0o600)
    Path(str(path) + "-cert.pub").write_bytes(crt)
    return path


def _direct_ssh(key: Path, port: int) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(key),
            "-o",
            f"CertificateFile={key}-cert.pub",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-p",
            str(port),
            f"{LOGIN}@127.0.0.1",
            "echo",
            "cert-ok",
        ],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def _issue(
    bastion: BastionHarness,
    target: str,
    now: float,
    lifetime: float = 120,
    source: tuple[str, ...] = ("127.0.0.1",),
) -> IssuedCertificate:
    return bastion.ca.issue(
        principal=default_principal(target),
        key_id=f"test@{target}",
        now=now,
        lifetime=lifetime,
        backdate=30,
        not_after=now + 3600,
        source_addresses=source,
        permit_pty=False,
    )


def test_web1_certificate_works_on_web1_only(bastion: BastionHarness, tmp_path: Path) -> None:
    key = _write(_issue(bastion, "web1", time.time()), tmp_path)
    ok = _direct_ssh(key, bastion.targets["web1"].port)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"cert-ok\n"
    refused = _direct_ssh(key, bastion.targets["web2"].port)
    assert refused.returncode == 255
    assert b"cert-ok" not in refused.stdout
    assert "bastion-web1" in bastion.targets["web2"].log_text() or refused.returncode == 255


def test_expired_certificate_rejected(bastion: BastionHarness, tmp_path: Path) -> None:
    key = _write(_issue(bastion, "web1", time.time() - 600), tmp_path)
    r = _direct_ssh(key, bastion.targets["web1"].port)
    assert r.returncode == 255
    assert b"cert-ok" not in r.stdout


def test_source_address_enforced(bastion: BastionHarness, tmp_path: Path) -> None:
    key = _write(_issue(bastion, "web1", time.time(), source=("192.0.2.10",)), tmp_path)
    r = _direct_ssh(key, bastion.targets["web1"].port)
    assert r.returncode == 255
    assert b"cert-ok" not in r.stdout


def test_certificate_never_outlives_grant(bastion: BastionHarness) -> None:
    now = time.time()
    cert = bastion.ca.issue(
        principal="bastion-web1",
        key_id="x",
        now=now,
        lifetime=120,
        backdate=30,
        not_after=now + 20,
        source_addresses=("127.0.0.1",),
        permit_pty=True,
    )
    assert cert.valid_before <= now + 20
    assert cert.valid_before - cert.valid_after <= 120
    with pytest.raises(ValueError):
        bastion.ca.issue(
            principal="bastion-web1",
            key_id="x",
            now=now,
            lifetime=120,
            backdate=30,
            not_after=now - 1,
            source_addresses=(),
            permit_pty=True,
        )


def test_session_certificate_recorded_with_session(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    g = bastion.grant(c, "web2", seconds=50)
    r = c.ssh("true", target="web2")
    assert r.returncode == 0, r.stderr
    issued = bastion.audit(c.name, "certificate.issued")[-1]
    assert issued.details["principals"] == ["bastion-web2"]
    assert issued.details["valid_before"] <= g.not_after
    bastion.wait_audit(c.name, "session.end")
    sess = bastion.store.list_sessions(user=c.name)
    assert sess and sess[0].ended_at is not None and sess[0].end_reason == "exit"
    certs = bastion.store.list_certificates(session_id=sess[0].id)
    assert [x.serial for x in certs] == [issued.details["serial"]]


def test_pinned_host_key_mismatch_refused(bastion: BastionHarness) -> None:
    import asyncssh

    c = bastion.contractor()
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    t = bastion.targets["web1"]
    bastion.store.add_target(
        name=f"evil{c.user.id}",
        kind=bastion.target("web1").kind,
        host=t.host,
        port=t.port,
        logins=[LOGIN],
        principal="bastion-web1",
        host_keys=[other.strip()],
        now=time.time(),
    )
    bastion.grant(c, f"evil{c.user.id}")
    r = c.ssh("true", target=f"evil{c.user.id}")
    assert r.returncode == 1
    assert b"does not match the pinned key" in r.stderr
    assert bastion.audit(c.name, "upstream.host-key-mismatch")


def test_target_add_scan_pins_the_real_host_key(bastion: BastionHarness) -> None:
    t = bastion.targets["web2"]
    r = bastion.cli(
        "target",
        "add",
        "scanned-web2",
        "--ssh",
        f"{t.host}:{t.port}",
        "--login",
        LOGIN,
        "--scan",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert "scanned" in r.stdout and "SHA256:" in r.stdout
    pinned = bastion.target("scanned-web2").host_keys
    assert [k.split()[:2] for k in pinned] == [t.host_key_line.split()[:2]]


def test_host_ca_trusted_instead_of_pinned_key(bastion: BastionHarness, tmp_path: Path) -> None:
    import asyncssh

    host_ca = asyncssh.generate_private_key("ssh-ed25519")
    target = OpenSSHTarget(
        tmp_path / "ca-host", bastion.ca.public_key_line(), "bastion-cahost", [LOGIN]
    )
    target.write_files()  # the host key exists now: certify it, then start with the cert
    host_key = asyncssh.read_private_key(str(target.host_key_path))
    cert = host_ca.generate_host_certificate(host_key, "ca-host", principals=["127.0.0.1"])
    cert_path = tmp_path / "ca-host" / "host-cert.pub"
    cert.write_certificate(str(cert_path))
    target.extra_config = [f"HostCertificate {cert_path}"]
    target.start()
    try:
        ca_file = tmp_path / "host_ca.pub"
        ca_file.write_bytes(host_ca.export_public_key("openssh"))
        c = bastion.contractor()
        name = f"cahost{c.user.id}"
        bastion.store.add_target(
            name=name,
            kind=bastion.target("web1").kind,
            host=target.host,
            port=target.port,
            logins=[LOGIN],
            principal="bastion-cahost",
            host_ca_keys=[ca_file.read_text().strip()],
            now=time.time(),
        )
        bastion.grant(c, name)
        r = c.ssh("echo via-host-ca", target=name)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"via-host-ca\n"
    finally:
        target.remove()
