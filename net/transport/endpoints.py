"""Both ends of a link: listen and accept (callee), dial (caller), with the whole greeting.

Socket options are set here, the wire preamble is exchanged, and TLS and
the shared-key handshake run when configured. The connected result is a
:class:`~net.transport.framed.FramedSocket` (``framed.py``, where OS errors become net
errors); everything above never sees an ``OSError``.
"""
from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import sys
import time
from typing import Any

from .. import config
from ..errors import AuthError, NetError, PeerUnreachable, PortsExhausted, ProtocolError, Timeout
from ..wire import frames as wire, handshake as auth
from . import tls
from .framed import FramedSocket, os_errors_as
from .tls import TLSChannel


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


def dial(host: str, port: int, timeout: float, max_message: int) -> FramedSocket:
    """A framed connection to a peer, ready for calls.

    In plain mode the preamble is sent without waiting for the answer: the
    first call goes out in the same round trip, and the answer is checked
    before the first frame is read (so a mismatch still fails that call with
    AuthError / VersionMismatch / ProtocolError, and nothing is run by a peer
    that refuses us). Secured modes run the whole greeting first.
    """
    where = f"{host}:{port}"
    if local_modes():
        return FramedSocket(greet(host, port, timeout), where, max_message)
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


def greet(host: str, port: int, timeout: float) -> socket.socket | TLSChannel:
    """Connect and run the whole greeting: preambles, then TLS and the key handshake if on.

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
