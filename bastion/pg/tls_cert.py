"""The TLS certificate ``bastion init`` makes for the PostgreSQL (and control) listener.

A one-off CA signs one leaf and its key is thrown away: the leaf is a proper
server certificate (CA:FALSE, serverAuth, each SAN once), so strict validators
(Python 3.13's default context, rustls, Go) accept it, and the CA certificate
next to it (``pg_tls_ca.crt`` for ``pg_tls.crt``) is what clients trust with
``sslmode=verify-full sslrootcert=...``. No CA key is left on the node that could
sign anything else. Clients with ``sslmode=require`` need neither.

Nodes made before this kept a single self-signed ``CA:TRUE`` certificate;
``legacy_self_signed`` finds it so the node can say how to replace it (it is not
replaced on its own: clients that pinned it would stop connecting).
ECDSA P-256: small, fast handshakes, accepted everywhere.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ca_path", "legacy_self_signed", "make_node_certificate"]

_LIFETIME = datetime.timedelta(days=3650)


def ca_path(cert_path: Path) -> Path:
    """Where the CA certificate for ``cert_path`` is written: ``NAME_ca.crt`` beside it."""
    return cert_path.with_name(f"{cert_path.stem}_ca{cert_path.suffix or '.crt'}")


def _subject_alt_names(host: str) -> list[x509.GeneralName]:
    """``host``, localhost and 127.0.0.1, each once, IP addresses as IP entries."""
    names: list[x509.GeneralName] = []
    for entry in (host, "localhost", "127.0.0.1"):
        try:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(entry))
        except ValueError:
            name = x509.DNSName(entry.lower())
        if name not in names:
            names.append(name)
    return names


def _key_usage(*, signature: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=False,
        key_encipherment=False,  # an EC key cannot encipher; TLS uses it only to sign
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_node_certificate(cert_path: Path, key_path: Path, hostname: str | None = None) -> Path:
    """Write a leaf, its key (mode 0600) and the CA that signed it; return the CA's path.

    The CA's key is never written: nothing else can be signed by this CA.
    """
    host = hostname or socket.getfqdn() or "localhost"
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + _LIFETIME

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bastion"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"bastion node CA {host}"[:64]),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signature=False, cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_subject_alt_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signature=True, cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    ca_file = ca_path(cert_path)
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_file


def legacy_self_signed(cert_path: Path) -> bool:
    """Whether ``cert_path`` is the single self-signed CA:TRUE certificate older nodes made.

    Strict validators refuse it as a server certificate (a CA used as a leaf).
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return ca and cert.issuer == cert.subject
