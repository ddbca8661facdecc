"""The PostgreSQL listener's TLS: generated leaf + CA, strict clients, psql verify-full, policy."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from bastion.pg.front_end import server_tls_context
from bastion.pg.tls_cert import ca_path, legacy_self_signed, make_node_certificate
from tests.peers.bastion_node import BastionHarness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer

pytestmark = pytest.mark.timeout(120)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in san]


def test_the_generated_certificate_is_a_leaf_signed_by_its_own_ca(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "pg_tls.crt", tmp_path / "pg_tls.key"
    ca_file = make_node_certificate(cert_path, key_path, "DB.example.com")
    assert ca_file == ca_path(cert_path) == tmp_path / "pg_tls_ca.crt"
    assert key_path.stat().st_mode & 0o777 == 0o600
    leaf, ca = _cert(cert_path), _cert(ca_file)
    ext = leaf.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ext.get_extension_for_class(x509.BasicConstraints).critical
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert _sans(leaf) == ["db.example.com", "localhost", "127.0.0.1"]
    assert leaf.issuer == ca.subject != leaf.subject
    leaf.verify_directly_issued_by(ca)
    ca_ext = ca.extensions
    assert ca_ext.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert ca_ext.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not legacy_self_signed(cert_path)
    # each SAN once, IP addresses as IP entries, whatever the host name is
    for host, expected in (
        ("localhost", ["localhost", "127.0.0.1"]),
        ("127.0.0.1", ["127.0.0.1", "localhost"]),
        ("::1", ["::1", "localhost", "127.0.0.1"]),
    ):
        make_node_certificate(cert_path, key_path, host)
        assert _sans(_cert(cert_path)) == expected, host
        san = _cert(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert "127.0.0.1" in [str(a) for a in san.value.get_values_for_type(x509.IPAddress)]


def _legacy_certificate(cert_path: Path, key_path: Path) -> None:
    """The single self-signed CA:TRUE certificate older nodes made (kept here to test against)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def strict_client(cafile: Path) -> ssl.SSLContext:
    """Python's default client context with strict X.509 checks (3.13 turns them on itself)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> ssl.SSLObject:
    """Both sides in memory; returns the client's object or raises the side's error."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=host)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, side in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done["c"] and done["s"]:
            return c
    raise AssertionError("handshake did not finish")


def test_strict_clients_accept_the_new_leaf_and_refuse_the_old_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "pg_tls.crt", tmp_path / "pg_tls.key"
    ca = make_node_certificate(cert, key, "db.example.com")
    server = server_tls_context(cert, key)
    for host in ("db.example.com", "localhost", "127.0.0.1"):
        assert _handshake(server, strict_client(ca), host).version() in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(server, strict_client(ca), "other.example.com")
    # A WebPKI-rules validator (cryptography's, like rustls and Go's): the new leaf
    # verifies against the CA; the old certificate, trusted as its own root, does not.
    # (OpenSSL 3.0's VERIFY_X509_STRICT on this machine lets the old one through.)
    anchor = _cert(ca)
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = PolicyBuilder().store(Store([anchor])).build_server_verifier(name)
        assert verifier.verify(_cert(cert), []) == [_cert(cert), anchor]
    old_cert, old_key = tmp_path / "old.crt", tmp_path / "old.key"
    _legacy_certificate(old_cert, old_key)
    assert legacy_self_signed(old_cert)
    old = _cert(old_cert)
    verifier = PolicyBuilder().store(Store([old])).build_server_verifier(x509.DNSName("localhost"))
    with pytest.raises(VerificationError, match="cA must not be asserted in an EE"):
        verifier.verify(old, [])


# --- against a live node ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pg(bastion: BastionHarness, pg_server: PgServer) -> Iterator[PgTargets]:
    yield PgTargets.create(bastion, pg_server)


def _pg_tls(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> ssl.SSLSocket:
    """SSLRequest to the node's listener, then a TLS handshake with ``ctx``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(struct.pack("!II", 8, 80877103))
        assert sock.recv(1) == b"S"
        return ctx.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


@pytest.mark.integration
def test_psql_verify_full_and_strict_python_trust_the_node_ca(pg: PgTargets) -> None:
    ca = ca_path(pg.harness.config.postgres.tls_cert)
    who = pg.harness.contractor("tls")
    pg.grant(who, "pg1")
    token = pg.token(who, "pg1")
    r = pg.psql(who, token, "SELECT 'verified' AS v;\n", sslmode=f"verify-full sslrootcert={ca}")
    assert r.returncode == 0 and "verified" in r.stdout, r.stderr
    # the leaf alone is no root: verify-full with it fails, as the README says
    leaf = pg.harness.config.postgres.tls_cert
    r = pg.psql(who, token, "SELECT 1;\n", sslmode=f"verify-full sslrootcert={leaf}")
    assert r.returncode != 0 and "certificate verify failed" in r.stderr, r.stderr
    with _pg_tls(pg.harness.pg_port, strict_client(ca), "127.0.0.1") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def _old_client(maximum: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    """A client that really offers old versions and suites (OpenSSL's level 0 lets it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = maximum
    return ctx


CBC_SUITES = "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA"


def test_the_tls_context_refuses_cbc_suites_and_tls11(tmp_path: Path) -> None:
    """Which side refuses, and why (a live listener only shows the connection dropped)."""
    cert, key = tmp_path / "pg_tls.crt", tmp_path / "pg_tls.key"
    make_node_certificate(cert, key, "localhost")
    server = server_tls_context(cert, key)
    with pytest.raises(ssl.SSLError, match="NO_SHARED_CIPHER"):
        _handshake(server, _old_client(ssl.TLSVersion.TLSv1_2, CBC_SUITES), "localhost")
    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL"):
        _handshake(server, _old_client(ssl.TLSVersion.TLSv1_1, "ALL"), "localhost")
    client = _handshake(server, _old_client(ssl.TLSVersion.TLSv1_2, "ALL"), "localhost")
    negotiated = client.cipher()
    assert negotiated is not None
    name = negotiated[0]
    assert name.startswith("ECDHE-ECDSA-") and ("GCM" in name or "CHACHA20" in name), name


@pytest.mark.integration
def test_the_listener_speaks_tls12_aead_or_tls13_only(bastion: BastionHarness) -> None:
    port = bastion.pg_port
    with pytest.raises(ssl.SSLError, match="(?i)protocol|version"):
        _pg_tls(port, _old_client(ssl.TLSVersion.TLSv1_1, "ALL")).close()
    with pytest.raises(ssl.SSLError):  # the node drops it (test above: "no shared cipher")
        _pg_tls(port, _old_client(ssl.TLSVersion.TLSv1_2, CBC_SUITES)).close()
    # every TLS 1.2 suite the client offers: the node still picks forward-secret AEAD
    with _pg_tls(port, _old_client(ssl.TLSVersion.TLSv1_2, "ALL")) as tls:
        negotiated = tls.cipher()
        assert negotiated is not None
        name, version, _ = negotiated
        assert version == "TLSv1.2"
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
    with _pg_tls(port, _old_client(ssl.TLSVersion.TLSv1_3, "ALL")) as tls:
        assert tls.version() == "TLSv1.3"
