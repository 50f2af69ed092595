"""Mutual-TLS contexts built from NET_TLS_CERT / NET_TLS_KEY / NET_TLS_CA (stdlib :mod:`ssl`).

Both sides present a certificate and verify the other's against the team CA
(``net certs`` makes one). Host names are not checked: peers are dialled by
address and move between DHCP leases, and the CA is private to the team, so
"signed by our CA" *is* the identity. TLS 1.2 is the floor; session tickets
are off so nothing is written on a connection after the handshake except by
the side that sends (see :class:`net.transport.TLSChannel`).
"""
from __future__ import annotations

import functools
import ssl

from . import config
from .errors import ConfigError


def settings() -> tuple[str, str, str] | None:
    """(cert, key, ca) when mutual TLS is on, else None; ConfigError when half-configured."""
    values = {name: config.get(name) for name in config.TLS_SETTINGS}
    if not config.check_tls(values):
        return None
    return values["TLS_CERT"], values["TLS_KEY"], values["TLS_CA"]


def _load(context: ssl.SSLContext, cert: str, key: str, ca: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load NET_TLS_CERT={cert!r} with NET_TLS_KEY={key!r}: {exc}") from None
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load NET_TLS_CA={ca!r}: {exc}") from None


@functools.lru_cache(maxsize=8)
def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.num_tickets = 0
    _load(context, cert, key, ca)
    return context


@functools.lru_cache(maxsize=8)
def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False          # identity = signed by the team CA (see module doc)
    context.verify_mode = ssl.CERT_REQUIRED
    _load(context, cert, key, ca)
    return context


def peer_name(sock: ssl.SSLSocket) -> str:
    """The common name in the other side's verified certificate (for logs)."""
    cert = sock.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for field, value in rdn:
            if field == "commonName":
                return value
    return "?"
