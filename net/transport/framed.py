"""A connected socket speaking net frames: thread-safe send, one reader at a time.

The one place where socket errors on an open connection become net errors
(:func:`os_errors_as`). Receiving goes into one preallocated buffer per
connection: a plain ``recv(n)`` would allocate and page in ``n`` bytes per call.
"""
from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections import deque
from collections.abc import Iterator
from time import perf_counter
from typing import Any

from ..errors import NetError, PeerUnreachable, ProtocolError, Timeout
from ..wire import frames as wire
from . import busy_poll
from .tls import TLSChannel

RECV_CHUNK = 256 * 1024
SMALL_BODY = 64 * 1024          # bodies below this are joined with their header: one syscall
BATCHED_CALM = 0.01             # seconds without polling after frames arrived together


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


def _readable(sock: socket.socket | TLSChannel, timeout: float) -> bool:
    if isinstance(sock, TLSChannel) and sock.pending():
        return True             # decrypted bytes wait inside OpenSSL, invisible to poll
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(max(timeout, 0) * 1000))
    return bool(select.select([sock], [], [], max(timeout, 0))[0])


class FramedSocket:
    """A connected socket speaking frames: thread-safe ``send``, single-reader ``receive``."""

    def __init__(self, sock: socket.socket | TLSChannel, where: str, max_message: int,
                 expect_preamble: int | None = None):
        self.sock = sock
        self.where = where
        self.max_message = max_message
        self.decoder = wire.FrameDecoder(max_message, expect_preamble, where)
        self._send_lock = threading.Lock()
        self._left: deque[bytes] = deque()     # small frames left for the thread holding _send_lock
        self._view = memoryview(bytearray(RECV_CHUNK))
        self._tls: TLSChannel | None = sock if isinstance(sock, TLSChannel) else None   # self.sock, if TLS
        self._corked: list[bytes] = []     # replies held back by send_soon, sent by flush
        self.closed = False
        self._busy_poll = busy_poll.budget_seconds()
        self._load = busy_poll.load()              # whether a CPU is spare (looked up once)
        self.polling = self._busy_poll > 0     # poll before the next blocking wait: the last wait was short
        self.calm_until = 0.0                   # no polling before this (perf_counter): frames came batched

    def send(self, kind: wire.Kind, request_id: int, payload: Any = None) -> None:
        """Frame and send one message (MessageTooLarge/TypeError before anything is sent)."""
        header, body = wire.encode_frame(kind, request_id, payload, max_message=self.max_message)
        self.send_encoded(header, body)

    def send_soon(self, header: bytes, body: bytes) -> None:
        """Send a small reply now, or together with the next ones if more frames already wait
        to be handled: the reader that handles them flushes before it blocks (:meth:`receive`),
        so a burst of calls costs one send, not one per reply. Only the reading thread may
        use this (nobody else would flush)."""
        if not self.decoder.ready_frames or len(body) >= SMALL_BODY:
            self.send_encoded(header, body)
            return
        self._corked.append(header + body)

    def flush(self) -> None:
        """Send what :meth:`send_soon` held back."""
        if self._corked:
            data = b"".join(self._corked)
            self._corked.clear()
            try:
                self._send_or_leave(data)
            except OSError as exc:
                raise _as_net_error(exc, self.where, "sending to") from exc

    def send_encoded(self, header: bytes, body: bytes) -> None:
        try:
            if len(body) < SMALL_BODY:
                self._send_or_leave(header + body)
                return
            with self._send_lock:
                self._send_left()           # what other threads left goes first
                self.sock.sendall(header)
                self.sock.sendall(body)
        except OSError as exc:
            raise _as_net_error(exc, self.where, "sending to") from exc
        self._send_what_was_left()

    def _send_or_leave(self, data: bytes) -> None:
        """Send ``data`` now, or, while another thread is sending, leave it for that thread.

        Whoever holds the send lock sends what was left meanwhile before it lets go, so
        threads never sleep on the lock for a small frame (8 threads calling through one
        connection spent a quarter of their time waiting there), and a burst goes out in
        one send. A frame left for another thread is lost only if that send fails, and
        then the connection is dying and its calls fail with it.
        """
        left = self._left
        if self._send_lock.acquire(False):
            try:
                if left:
                    left.append(data)
                    self._send_left()
                else:
                    self.sock.sendall(data)
            finally:
                self._send_lock.release()
        else:
            left.append(data)
        if left:
            self._send_what_was_left()

    def _send_left(self) -> None:
        """Send what other threads left (the caller holds the send lock)."""
        left = self._left
        count = len(left)
        if count:
            self.sock.sendall(b"".join([left.popleft() for _ in range(count)]))

    def _send_what_was_left(self) -> None:
        """After letting go of the send lock: send what was left while it was held, unless
        another thread holds it now (then that thread will). This thread's own data already
        went out, so a failure here is not this thread's: the connection is shut down, which
        its reader sees, and the calls on it fail from there."""
        left = self._left
        while left and self._send_lock.acquire(False):
            try:
                self._send_left()
            except OSError:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
                return
            finally:
                self._send_lock.release()

    def receive(self, poll: bool = True) -> wire.Frame | None:
        """Block until one frame arrives; None when the other side closed cleanly.

        Raises ProtocolError for bad bytes, PeerUnreachable (or Timeout, when the
        socket has a timeout) for a broken socket. Frames read together stay in
        the decoder until taken, so whichever thread reads next gets them.
        """
        decoder = self.decoder
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                return frame
            if self._corked:
                self.flush()            # replies held back while their batch was handled
            count = self._recv(None, poll)
            if not count:
                return None
            decoder.feed(self._view[:count])
            if len(decoder.ready_frames) > 1:
                self._batched()

    def receive_available(self, timeout: float | None = None, poll: bool = True) -> list[wire.Frame] | None:
        """Read once (waiting at most ``timeout`` seconds; None = block) and return every complete
        frame: possibly [] (partial data or timeout). None when the other side closed cleanly.

        Every complete frame is returned at once, so none is ever left behind for
        the next call (do not mix with :meth:`receive`). Waiting uses poll, not a
        socket timeout, so concurrent senders are unaffected.
        """
        count = self._recv(timeout, poll)
        if count:
            if count < 0:
                return []
            frames = self.decoder.decode(self._view[:count])
            if len(frames) > 1:
                self._batched()
            return frames
        return None

    def _batched(self) -> None:
        """Frames came together: the other side sends without waiting for each answer, and
        polling would only split its batches (one read and one send per frame instead of per
        batch: 8 threads sharing a connection measured 0.56x raw polling, 0.68x not)."""
        self.calm_until = perf_counter() + BATCHED_CALM

    def _recv(self, timeout: float | None, poll: bool = True) -> int:
        """One recv into the reusable buffer: bytes read, -1 if none came within ``timeout``,
        0 on a clean close. ``poll``: busy-poll first (:meth:`_poll_briefly`) if the connection
        is answering fast; False for a thread whose polling would take the GIL from busy ones.

        Receiving into one preallocated buffer matters: ``recv(n)`` would allocate
        (and page in) an n-byte object per call.
        """
        try:
            count = self._recv_polling_first(timeout, poll) if self._busy_poll else self._wait_and_read(timeout)
        except OSError as exc:
            raise _as_net_error(exc, self.where, "receiving from") from exc
        if count is None:
            return -1
        if not count and self.decoder.buffered:
            raise ProtocolError(f"{self.where} closed the connection in the middle of a frame")
        return count

    def _wait_and_read(self, timeout: float | None) -> int | None:
        """Sleep until bytes come (at most ``timeout`` seconds), then read; None if none came."""
        if timeout is not None and not _readable(self.sock, timeout):
            return None
        if self._tls:
            # Readable bytes may be only part of a TLS record: never wait past ``timeout`` for the rest.
            return self._tls.recv_into_within(self._view, timeout)
        return self.sock.recv_into(self._view)

    def _read_now(self) -> int | None:
        """One read that never sleeps: bytes read (0: closed), None if nothing (whole) is there."""
        if self._tls:
            return self._tls.recv_into_now(self._view)
        try:
            # self._tls is None, so self.sock is a plain socket (mypy cannot follow that link).
            return self.sock.recv_into(self._view, 0, busy_poll.DONTWAIT)  # type: ignore[call-arg]
        except BlockingIOError:
            return None

    def _recv_polling_first(self, timeout: float | None, poll: bool) -> int | None:
        """:meth:`_recv` with NET_BUSY_POLL on: poll first if the last wait was short, then
        wait; the wait is timed to decide whether the next one polls. None: ``timeout`` passed."""
        looking = timeout == 0      # a zero timeout is a look, not a wait: no polling, no timing
        started = perf_counter()
        if poll and self.polling and not looking and started >= self.calm_until and self._load.spare_cpu() \
                and busy_poll.POLLER.acquire(False):
            try:
                count = self._poll_briefly(timeout)
            finally:
                busy_poll.POLLER.release()
            if count is not None:
                return count
            if timeout is not None:
                timeout = max(timeout - self._busy_poll, 0.0)
            started = perf_counter()
        count = self._wait_and_read(timeout)
        if not looking:
            # Bytes that came this soon would have been caught by polling: poll next time.
            self.polling = perf_counter() - started < self._busy_poll
        return count

    def _poll_briefly(self, timeout: float | None) -> int | None:
        """Read without sleeping, retrying for up to NET_BUSY_POLL; None if nothing came.

        Waking a thread that sleeps in recv costs tens of microseconds on loopback
        and in VMs, as much as a whole small call; a reply (or a sequential
        caller's next call) usually comes sooner than that. When nothing came in
        time, the blocking wait that follows is timed, and decides whether the next
        wait polls: a connection that answers slowly costs one budget, not one per wait.
        """
        read_now, spare_cpu = self._read_now, self._load.spare_cpu
        deadline = None
        while True:
            count = read_now()
            if count is not None:
                return count
            now = perf_counter()
            if deadline is None:
                deadline = now + (self._busy_poll if timeout is None else min(self._busy_poll, timeout))
            elif now >= deadline or not spare_cpu():
                return None

    def close(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(NetError):
            self.flush()                # replies held back by send_soon still go out
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
