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
import ssl
import sys
import threading
import time
from typing import Any, Iterator

from . import auth, config, tls, wire
from .errors import AuthError, NetError, PeerUnreachable, PortsExhausted, ProtocolError, Timeout

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


def local_modes() -> int:
    """The security modes this process requires (preamble bits), from NET_SECRET / NET_TLS_*."""
    modes = 0
    if config.get("SECRET"):
        modes |= wire.MODE_KEY
    if tls.settings() is not None:
        modes |= wire.MODE_TLS
    return modes


def _mismatch(where: str, theirs: int, ours: int) -> AuthError:
    return AuthError(f"{where} uses {wire.describe_modes(theirs)} but this process uses "
                     f"{wire.describe_modes(ours)}: set the same NET_SECRET / NET_TLS_* on both sides")


def dial(host: str, port: int, timeout: float, max_message: int) -> "FramedSocket":
    """A framed connection to a peer, ready for calls.

    In plain mode the preamble is sent without waiting for the answer: the
    first call goes out in the same round trip, and the answer is checked
    before the first frame is read (so a mismatch still fails that call with
    AuthError / VersionMismatch / ProtocolError, and nothing is run by a peer
    that refuses us). Secured modes run the whole greeting first.
    """
    where = f"{host}:{port}"
    if local_modes():
        return FramedSocket(connect(host, port, timeout), where, max_message)
    with os_errors_as(where, "connecting to"):
        sock = socket.create_connection((host, port), timeout=timeout)
    try:
        _tune(sock)
        with os_errors_as(where, "greeting"):
            sock.sendall(wire.preamble(0))
        sock.settimeout(None)
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return FramedSocket(sock, where, max_message, expect_preamble=0)


def connect(host: str, port: int, timeout: float) -> socket.socket | TLSChannel:
    """Open a connection and run the whole greeting: preambles, then TLS and the key handshake if on.

    Everything must finish within ``timeout``. Raises PeerUnreachable/Timeout,
    ProtocolError (not a net peer) or AuthError (security refused either way).
    """
    where = f"{host}:{port}"
    deadline = time.monotonic() + timeout
    ours = local_modes()
    with os_errors_as(where, "connecting to"):
        sock = socket.create_connection((host, port), timeout=timeout)
    try:
        _tune(sock)
        with os_errors_as(where, "greeting"):
            sock.sendall(wire.preamble(ours))
            theirs = wire.check_preamble(_recv_exactly(sock, wire.PREAMBLE_SIZE, where, deadline))
        if theirs != ours:
            raise _mismatch(where, theirs, ours)
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return _secure(sock, ours, where, deadline, server_side=False)


def accept(sock: socket.socket, timeout: float, where: str) -> socket.socket | TLSChannel:
    """Server side of the greeting, all within ``timeout``: returns the channel to read frames from.

    Reads the caller's preamble, answers with ours (always, so a caller of
    another version or security mode learns what we require), then runs TLS
    and the key handshake when on. Raises NetError (AuthError on refusal).
    """
    _tune(sock)
    deadline = time.monotonic() + timeout
    ours = local_modes()
    with os_errors_as(where, "greeting"):
        theirs_raw = _recv_exactly(sock, wire.PREAMBLE_SIZE, where, deadline)
        try:
            theirs = wire.check_preamble(theirs_raw)
        finally:
            if theirs_raw[:3] == wire.MAGIC:
                with contextlib.suppress(OSError):
                    sock.sendall(wire.preamble(ours))
    if theirs != ours:
        raise AuthError(f"refused {where}: it uses {wire.describe_modes(theirs)}, "
                        f"this peer requires {wire.describe_modes(ours)}")
    return _secure(sock, ours, where, deadline, server_side=True)


def _secure(sock: socket.socket, modes: int, where: str, deadline: float,
            server_side: bool) -> socket.socket | TLSChannel:
    """After the preambles: TLS and the key handshake as ``modes`` require; the channel to use.

    On failure the socket (or the TLS channel that took it over) is closed.
    """
    channel: socket.socket | TLSChannel = sock
    try:
        if modes:
            if modes & wire.MODE_TLS:
                channel = _start_tls(sock, where, deadline, server_side=server_side)
            secret = auth.secret_bytes(config.get("SECRET"))
            handshake = auth.ServerHandshake(secret, where) if server_side else auth.ClientHandshake(secret, where)
            _run_handshake(channel, handshake, where, deadline)
        channel.settimeout(None)
    except BaseException:
        with contextlib.suppress(OSError):
            channel.close()         # wrap_socket took over the descriptor: close what holds it now
        raise
    return channel


def _start_tls(sock: socket.socket, where: str, deadline: float, server_side: bool) -> TLSChannel:
    cert, key, ca = tls.settings() or ("", "", "")
    context = tls.server_context(cert, key, ca) if server_side else tls.client_context(cert, key, ca)
    sock.settimeout(_remaining(deadline, where))
    wrapped = context.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=False)
    try:
        try:
            wrapped.do_handshake()
        except BaseException:
            with contextlib.suppress(OSError):
                wrapped.close()
            raise
    except socket.timeout as exc:
        raise Timeout(f"TLS handshake with {where} timed out", peer=where) from exc
    except ssl.SSLError as exc:
        reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        raise AuthError(f"TLS handshake with {where} failed: {reason} (are both certificates "
                        f"signed by the same NET_TLS_CA?)") from exc
    except OSError as exc:
        raise AuthError(f"{where} closed the connection during the TLS handshake "
                        f"({exc.strerror or exc.__class__.__name__}): it may not trust this "
                        f"process's certificate") from exc
    return TLSChannel(wrapped, where)


def _run_handshake(channel: socket.socket | TLSChannel, handshake: auth.ServerHandshake | auth.ClientHandshake,
                   where: str, deadline: float) -> None:
    """Move AUTH frames between ``handshake`` and the socket until it is done (sans-IO glue)."""
    def send(message: dict[str, Any]) -> None:
        with os_errors_as(where, "authenticating with"):
            channel.sendall(wire.frame_bytes(wire.Kind.AUTH, 0, message, max_message=auth.MAX_MESSAGE))

    for message in handshake.start():
        send(message)
    while not handshake.done:
        try:
            message = _receive_auth(channel, where, deadline)
        except AuthError:
            if isinstance(handshake, auth.ServerHandshake):     # say why, then close
                with contextlib.suppress(NetError):
                    send({"ok": False, "error": "authentication required before anything else"})
            raise
        try:
            replies = handshake.receive(message)
        except AuthError:
            if handshake.farewell is not None:
                with contextlib.suppress(NetError):
                    send(handshake.farewell)
            raise
        for reply in replies:
            send(reply)


def _readable(sock: socket.socket | TLSChannel, timeout: float) -> bool:
    if isinstance(sock, TLSChannel) and sock.pending():
        return True             # decrypted bytes wait inside OpenSSL, invisible to poll
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(max(timeout, 0) * 1000))
    return bool(select.select([sock], [], [], max(timeout, 0))[0])


def _receive_auth(channel: socket.socket | TLSChannel, where: str, deadline: float) -> Any:
    """Read exactly one AUTH frame (never more bytes than it holds), at most auth.MAX_MESSAGE."""
    decoder = wire.FrameDecoder(auth.MAX_MESSAGE)
    try:
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                break
            with os_errors_as(where, "authenticating with"):
                try:
                    chunk = _recv_exactly(channel, decoder.wanted(), where, deadline, during="handshake")
                except ssl.SSLError as exc:
                    raise AuthError(f"{where} refused the TLS session: {exc.reason or exc} (does it "
                                    f"trust this process's certificate?)") from exc
            decoder.feed(chunk)
    except ProtocolError as exc:
        raise AuthError(f"{where} broke the handshake: {exc}") from None
    if frame.kind is not wire.Kind.AUTH:
        raise AuthError(f"{where} sent a {frame.kind.name} frame before authenticating")
    return frame.payload


def _remaining(deadline: float, where: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Timeout(f"greeting {where} took too long", peer=where)
    return remaining


def _recv_exactly(sock: socket.socket | TLSChannel, size: int, where: str, deadline: float | None = None,
                  during: str = "greeting") -> bytes:
    data = bytearray()
    while len(data) < size:
        if deadline is not None:
            sock.settimeout(_remaining(deadline, where))
        try:
            chunk = sock.recv(size - len(data))
        except socket.timeout:
            raise Timeout(f"{where} sent nothing more during the {during}", peer=where) from None
        if not chunk:
            if during == "handshake":
                raise AuthError(f"{where} closed the connection during the handshake")
            raise PeerUnreachable(f"{where} closed the connection during the {during}", peer=where)
        data += chunk
    return bytes(data)


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


class FramedSocket:
    """A connected socket speaking frames: thread-safe ``send``, single-reader ``receive``."""

    def __init__(self, sock: socket.socket | TLSChannel, where: str, max_message: int,
                 expect_preamble: int | None = None):
        self.sock = sock
        self.where = where
        self.max_message = max_message
        self.decoder = wire.FrameDecoder(max_message, expect_preamble, where)
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
            if isinstance(self.sock, TLSChannel):
                # Readable bytes may be only part of a TLS record: never wait past ``timeout`` for the rest.
                count = self.sock.recv_into_within(self._view, timeout)
                if count is None:
                    return True
            else:
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
