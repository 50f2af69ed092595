"""The only module that touches sockets: listen, connect, and framed send/receive.

Here OS errors become net errors (:func:`os_errors_as`), socket options are
set, and the wire preamble is exchanged. Everything above works on
:class:`FramedSocket` and never sees an ``OSError``.
"""
from __future__ import annotations

import contextlib
import errno
import select
import socket
import sys
import threading
from typing import Any, Iterator

from . import wire
from .errors import PeerUnreachable, PortsExhausted, ProtocolError, Timeout

RECV_CHUNK = 256 * 1024
SMALL_BODY = 64 * 1024          # bodies below this are joined with their header: one syscall


def _as_net_error(exc: OSError, peer: str, action: str) -> PeerUnreachable | Timeout:
    """The net error for a socket error: Timeout for timeouts, else PeerUnreachable; names ``peer``."""
    if isinstance(exc, socket.timeout):
        return Timeout(f"{action} {peer} timed out", peer=peer)
    reason = exc.strerror or exc.__class__.__name__
    return PeerUnreachable(f"{action} {peer} failed: {reason}", peer=peer)


@contextlib.contextmanager
def os_errors_as(peer: str, action: str) -> Iterator[None]:
    """Turn socket errors raised inside the block into PeerUnreachable / Timeout naming ``peer``."""
    try:
        yield
    except OSError as exc:
        raise _as_net_error(exc, peer, action) from exc


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def listen(bind: str, port_start: int, port_range: int, backlog: int = 128) -> tuple[socket.socket, int]:
    """Bind the first free port of ``port_start..port_start+port_range`` (inclusive).

    SO_REUSEADDR on POSIX only lets us reuse a port in TIME_WAIT, never one
    another process listens on; on Windows it would allow stealing, so
    SO_EXCLUSIVEADDRUSE is used there instead.
    """
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    last_port = min(port_start + port_range, 65535)
    for port in range(port_start, last_port + 1):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if sys.platform == "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind, port))
            sock.listen(backlog)
            return sock, port
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES, getattr(errno, "WSAEADDRINUSE", -1)):
                raise PortsExhausted(f"cannot listen on {bind}:{port}: {exc.strerror}") from exc
    raise PortsExhausted(f"no free port in {port_start}-{last_port} on {bind} "
                         f"(NET_PORT_START={port_start}, NET_PORT_RANGE={port_range})")


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """Open a TCP connection and exchange preambles; raises PeerUnreachable/Timeout/ProtocolError."""
    where = f"{host}:{port}"
    with os_errors_as(where, "connecting to"):
        sock = socket.create_connection((host, port), timeout=timeout)
    try:
        _tune(sock)
        with os_errors_as(where, "greeting"):
            sock.sendall(wire.preamble())
            wire.check_preamble(_recv_exactly(sock, wire.PREAMBLE_SIZE, where))
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def accept_preamble(sock: socket.socket, timeout: float, where: str) -> None:
    """Server side of the preamble: read theirs (within ``timeout``), then send ours."""
    _tune(sock)
    sock.settimeout(timeout)
    with os_errors_as(where, "greeting"):
        theirs = _recv_exactly(sock, wire.PREAMBLE_SIZE, where)
        try:
            wire.check_preamble(theirs)
        finally:
            # Always answer with our preamble so a peer of another version learns ours.
            if theirs[:3] == wire.MAGIC:
                with contextlib.suppress(OSError):
                    sock.sendall(wire.preamble())
    sock.settimeout(None)


def _readable(sock: socket.socket, timeout: float) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(max(timeout, 0) * 1000))
    return bool(select.select([sock], [], [], max(timeout, 0))[0])


def _recv_exactly(sock: socket.socket, size: int, where: str) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise PeerUnreachable(f"{where} closed the connection during the greeting", peer=where)
        data += chunk
    return bytes(data)


class FramedSocket:
    """A connected socket speaking frames: thread-safe ``send``, single-reader ``receive``."""

    def __init__(self, sock: socket.socket, where: str, max_message: int):
        self.sock = sock
        self.where = where
        self.max_message = max_message
        self.decoder = wire.FrameDecoder(max_message)
        self._send_lock = threading.Lock()
        self._view = memoryview(bytearray(RECV_CHUNK))
        self.closed = False

    def send(self, kind: wire.Kind, request_id: int, payload: Any = None) -> None:
        """Frame and send one message (MessageTooLarge/TypeError before anything is sent)."""
        header, body = wire.encode_frame(kind, request_id, payload, max_message=self.max_message)
        self.send_encoded(header, body)

    def send_encoded(self, header: bytes, body: bytes) -> None:
        try:
            with self._send_lock:
                if len(body) < SMALL_BODY:
                    self.sock.sendall(header + body)
                else:
                    self.sock.sendall(header)
                    self.sock.sendall(body)
        except OSError as exc:
            raise _as_net_error(exc, self.where, "sending to") from exc

    def receive(self) -> wire.Frame | None:
        """Block until one frame arrives; None when the other side closed cleanly.

        Raises ProtocolError for bad bytes, PeerUnreachable (or Timeout, when the
        socket has a timeout) for a broken socket.
        """
        decoder = self.decoder
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                return frame
            if not self._read_once(None):
                return None

    def receive_available(self, timeout: float | None = None) -> list[wire.Frame] | None:
        """Read once (waiting at most ``timeout`` seconds; None = block) and return every complete
        frame: possibly [] (partial data or timeout). None when the other side closed cleanly.

        Waiting uses poll, not a socket timeout, so concurrent senders are unaffected.
        """
        decoder = self.decoder
        frames: list[wire.Frame] = []
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
        if frames:
            return frames
        if not self._read_once(timeout):
            return None
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
        return frames

    def _read_once(self, timeout: float | None) -> bool:
        """One recv into the reusable buffer, fed to the decoder. False on a clean close.

        Receiving into one preallocated buffer matters: ``recv(n)`` would allocate
        (and page in) an n-byte object per call.
        """
        try:
            if timeout is not None and not _readable(self.sock, timeout):
                return True
            count = self.sock.recv_into(self._view)
        except OSError as exc:
            raise _as_net_error(exc, self.where, "receiving from") from exc
        if not count:
            if self.decoder.buffered:
                raise ProtocolError(f"{self.where} closed the connection in the middle of a frame")
            return False
        self.decoder.feed(self._view[:count])
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
