"""Throwaway X.509 material for TLS tests, generated with ``cryptography``.

:func:`generate_certs` writes PEM files into a directory and returns their paths:

* a self-signed CA (``ca_cert``/``ca_key``);
* a server certificate signed by that CA whose subjectAltName lists the given DNS names
  and IP addresses (default ``localhost`` and ``127.0.0.1``);
* a client certificate signed by the same CA (for ``REQUIRE X509`` style tests);
* a second, unrelated self-signed CA (``other_ca_cert``) for "wrong CA" tests.

Keys are ECDSA P-256 by default (fast to generate; MariaDB/OpenSSL and Python's ``ssl``
both accept them). Pass ``key_type="rsa"`` for RSA-2048 if a peer needs RSA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertBundle", "KeyType", "generate_certs"]

KeyType = Literal["ec", "rsa"]
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class CertBundle:
    """Paths of the PEM files written by :func:`generate_certs`."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_ca_key: Path
    server_dns_names: tuple[str, ...]
    server_ips: tuple[str, ...]


def _new_key(key_type: KeyType) -> _PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tidb-memory tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(days=1), now + dt.timedelta(days=30)


def _make_ca(common_name: str, key_type: KeyType) -> tuple[x509.Certificate, _PrivateKey]:
    key = _new_key(key_type)
    name = _name(common_name)
    not_before, not_after = _validity()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    *,
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: _PrivateKey,
    key_type: KeyType,
    usage: x509.ObjectIdentifier,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
) -> tuple[x509.Certificate, _PrivateKey]:
    key = _new_key(key_type)
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=key_type == "rsa",
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: _PrivateKey) -> Path:
    # Traditional OpenSSL PEM ("BEGIN EC/RSA PRIVATE KEY") is understood by every consumer.
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def generate_certs(
    directory: str | os.PathLike[str],
    *,
    hostnames: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    key_type: KeyType = "ec",
) -> CertBundle:
    """Generate a CA, a server certificate, a client certificate and an unrelated CA.

    ``hostnames`` become DNS subjectAltNames of the server certificate and
    ``ip_addresses`` become IP subjectAltNames. Files are written into ``directory``
    (created if missing); private keys get mode 0600.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _make_ca("tidb-memory test CA", key_type)
    other_ca_cert, other_ca_key = _make_ca("tidb-memory UNRELATED test CA", key_type)
    common_name = hostnames[0] if hostnames else (ip_addresses[0] if ip_addresses else "server")
    server_cert, server_key = _make_leaf(
        common_name=common_name,
        ca_cert=ca_cert,
        ca_key=ca_key,
        key_type=key_type,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        dns_names=hostnames,
        ips=ip_addresses,
    )
    client_cert, client_key = _make_leaf(
        common_name="tidb-memory test client",
        ca_cert=ca_cert,
        ca_key=ca_key,
        key_type=key_type,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return CertBundle(
        directory=out,
        ca_cert=_write_cert(out / "ca.pem", ca_cert),
        ca_key=_write_key(out / "ca-key.pem", ca_key),
        server_cert=_write_cert(out / "server-cert.pem", server_cert),
        server_key=_write_key(out / "server-key.pem", server_key),
        client_cert=_write_cert(out / "client-cert.pem", client_cert),
        client_key=_write_key(out / "client-key.pem", client_key),
        other_ca_cert=_write_cert(out / "other-ca.pem", other_ca_cert),
        other_ca_key=_write_key(out / "other-ca-key.pem", other_ca_key),
        server_dns_names=tuple(hostnames),
        server_ips=tuple(ip_addresses),
    )
