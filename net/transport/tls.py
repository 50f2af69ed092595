"""Mutual-TLS contexts built from NET_TLS_CERT / NET_TLS_KEY / NET_TLS_CA (stdlib :mod:`ssl`).

Both sides present a certificate and verify the other's against the team CA
(``net certs`` makes one). Host names are not checked: peers are dialled by
address and move between DHCP leases, and the CA is private to the team, so
"signed by our CA" *is* the identity. TLS 1.2 is the floor; session tickets
are off so nothing is written on a connection after the handshake except by
the side that sends (see :class:`TLSChannel`).
"""
from __future__ import annotations

import errno
import functools
import select
import socket
import ssl
import threading
import time

from .. import config
from ..errors import ConfigError


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


class TLSChannel:
    """An SSL socket that one reader and many writers may use at once.

    OpenSSL forbids concurrent SSL_read/SSL_write on one connection, so every
    SSL call runs under one lock, with the socket non-blocking; waiting for
    the socket to become readable/writable happens *outside* the lock, so a
    writer stuck behind a full TCP buffer never stops the reader (which
    would deadlock two peers sending large messages to each other).
    """

    def __init__(self, sock: ssl.SSLSocket, where: str):
        self.ssl = sock
        self.where = where
        self._lock = threading.Lock()
        self._timeout: float | None = None
        sock.setblocking(False)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def fileno(self) -> int:
        return self.ssl.fileno()

    def recv(self, size: int) -> bytes:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            with self._lock:
                try:
                    return self.ssl.recv(size)
                except ssl.SSLWantReadError:
                    want_write = False
                except ssl.SSLWantWriteError:
                    want_write = True
            _wait(self.ssl, want_write, deadline)

    def recv_into(self, buffer: memoryview, size: int = 0) -> int:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            with self._lock:
                try:
                    return self.ssl.recv_into(buffer, size)
                except ssl.SSLWantReadError:
                    want_write = False
                except ssl.SSLWantWriteError:
                    want_write = True
            _wait(self.ssl, want_write, deadline)

    def recv_into_within(self, buffer: memoryview, timeout: float | None) -> int | None:
        """Like :meth:`recv_into`, but None when no whole record arrived within ``timeout`` (None: wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                try:
                    return self.ssl.recv_into(buffer)
                except ssl.SSLWantReadError:
                    want_write = False
                except ssl.SSLWantWriteError:
                    want_write = True
            try:
                _wait(self.ssl, want_write, deadline)
            except socket.timeout:
                return None

    def recv_into_now(self, buffer: memoryview) -> int | None:
        """Read what has arrived without waiting; None when no whole record is there yet."""
        with self._lock:
            try:
                return self.ssl.recv_into(buffer)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return None

    def pending(self) -> int:
        with self._lock:
            return self.ssl.pending()

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            with self._lock:
                try:
                    sent = self.ssl.send(view[:TLS_CHUNK])
                    view = view[sent:]
                    continue
                except ssl.SSLWantWriteError:
                    want_write = True
                except ssl.SSLWantReadError:
                    want_write = False
            _wait(self.ssl, want_write, None)

    def shutdown(self, how: int) -> None:
        with self._lock:
            socket.socket.shutdown(self.ssl, how)     # the raw socket: wakes a reader waiting in poll

    def close(self) -> None:
        with self._lock:
            self.ssl.close()


TLS_CHUNK = 64 * 1024


def _wait(sock: socket.socket, write: bool, deadline: float | None) -> None:
    """Block until ``sock`` is readable/writable; socket.timeout past ``deadline``.

    poll where there is one: select() cannot watch descriptors above 1023, and
    a busy peer has more than that open.
    """
    timeout = None if deadline is None else deadline - time.monotonic()
    if timeout is not None and timeout <= 0:
        raise socket.timeout("timed out")
    fd = sock.fileno()
    if fd < 0:
        raise OSError(errno.EBADF, "connection closed")
    ready: list[tuple[int, int]] | bool
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, (select.POLLOUT if write else select.POLLIN) | select.POLLERR | select.POLLHUP)
        ready = poller.poll(None if timeout is None else timeout * 1000)
    else:
        try:
            ready = any(select.select([] if write else [fd], [fd] if write else [], [fd], timeout))
        except ValueError:      # closed by another thread between the check and the call
            raise OSError(errno.EBADF, "connection closed") from None
    if not ready:
        raise socket.timeout("timed out")
