"""``net certs``: a private CA and peer certificates for a small team (``cryptography`` package).

    net certs ./team alice bob render-01

creates (or reuses) ``./team/ca.pem`` + ``ca.key`` and writes ``NAME.pem`` +
``NAME.key`` per peer, signed by that CA. Give each machine its own pair plus
``ca.pem`` (never ``ca.key``: whoever holds it can mint team members), and set
``NET_TLS_CERT``, ``NET_TLS_KEY``, ``NET_TLS_CA``. Keys are EC P-256, written
with mode 0600.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

CA_DAYS = 3650
PEER_DAYS = 825
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if private:
        os.chmod(path, 0o600)


def _key_pem(key: PrivateKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "net"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(directory: Path, name: str = "net team CA", days: int = CA_DAYS) -> tuple[Path, Path]:
    """Write ca.pem and ca.key in ``directory``; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = _name(name)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, _cert_pem(cert), private=False)
    return cert_path, key_path


def create_peer(directory: Path, name: str, days: int = PEER_DAYS) -> tuple[Path, Path]:
    """Write NAME.pem and NAME.key signed by ``directory``'s CA; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not _NAME.match(name) or name == "ca":
        raise ValueError(f"peer name {name!r}: use letters, digits, '.', '_' or '-' (and not 'ca')")
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, (rsa.RSAPrivateKey, dsa.DSAPrivateKey, ec.EllipticCurvePrivateKey,
                               ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        # What signing would raise anyway (the CA is checked before anything is written).
        raise TypeError("Key must be an rsa, dsa, ec, ed25519, or ed448 private key.")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, _cert_pem(cert), private=False)
    return cert_path, key_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="where the CA and certificates live (created if missing)")
    parser.add_argument("names", nargs="*", help="peers to make certificates for (e.g. alice render-01)")
    parser.add_argument("--days", type=int, default=PEER_DAYS, help=f"peer certificate lifetime (default {PEER_DAYS})")


def run(args: argparse.Namespace) -> int:
    """Create the CA if missing, then one certificate per name; print how to use them."""
    directory: Path = args.directory
    if (directory / "ca.pem").exists() and (directory / "ca.key").exists():
        print(f"using the existing CA in {directory}")
    else:
        create_ca(directory)
        print(f"created CA {directory / 'ca.pem'} (keep {directory / 'ca.key'} private, off the peers)")
    for name in args.names:
        try:
            cert, key = create_peer(directory, name, days=args.days)
        except ValueError as exc:
            print(f"error: {exc}")
            return 2
        print(f"\n{name}: copy {cert.name}, {key.name} and ca.pem to that machine, then set\n"
              f"  NET_TLS_CERT={cert.resolve()}\n  NET_TLS_KEY={key.resolve()}\n"
              f"  NET_TLS_CA={(directory / 'ca.pem').resolve()}")
    return 0
