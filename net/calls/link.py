"""One persistent connection to another peer, shared by every thread of this process.

Sending registers a waiter (:mod:`net.waiters`) under a fresh request id;
reading routes each reply to its waiter. Whoever is blocked in a call reads
for everyone while nobody else does (leader/follower); a background reader
per connection covers callers that never block (futures, asyncio). Any
failure kills the connection and fails every waiter with the first cause.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from time import monotonic
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import FrameTooLarge, MessageTooLarge, NetError, PeerUnreachable, ProtocolError
from ..transport import endpoints as transport
from ..wire import frames as wire, payloads
from ..wire.frames import HEADER, MAX_REQUEST_ID, Kind
from .deadlines import dial_timeout as dial_timeout_override
from .waiters import Led, Pending, Retired, Waiter

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger("net")
IDLE_CHECK_AFTER = 0.05     # seconds of quiet after which a pooled connection is checked before use
CALL, RESULT, ERROR = Kind.CALL, Kind.RESULT, Kind.ERROR
NO_OPTIONS = payloads.NO_OPTIONS    # a call's options when it has none (packed as is, never changed)


def dial_timeout() -> float:
    """Seconds to open a connection: ``deadlines.dial_timeout`` if set (discovery probes), else the setting."""
    return dial_timeout_override.get() or config.get("CONNECT_TIMEOUT")


class OutboundLink:
    """A persistent connection to one remote peer, shared by all threads.

    Whoever holds ``_read_lock`` reads frames and routes them to their
    waiters. A thread blocked in a call takes that role itself when it is
    free (leader/follower), so a sequential caller reads its own reply with no
    thread hand-off; when callers are still waiting as a leader leaves, or
    only futures and asyncio callers wait, a background reader takes over.
    """

    def __init__(self, pool: Pool, host: str, port: int):
        self.pool = pool
        self.host = host
        self.port = port
        self.where = f"{host}:{port}"
        self.dial_timeout = dial_timeout()
        self.max_message = config.get("MAX_MESSAGE")
        self.framed = transport.dial(host, port, self.dial_timeout, self.max_message)
        self.opened = time.monotonic()
        self.pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)
        self.last_heard = time.monotonic()
        self.unanswered = False         # a request went out and nothing was heard since
        self.last_ping = 0.0
        self.dead: NetError | None = None
        self.calls_started = 0
        self._read_lock = threading.Lock()
        self._wake = threading.Lock()       # released = the background reader should look again
        self._wake.acquire()
        self._background: threading.Thread | None = None    # started on first need (see _rouse)
        self._background_lock = threading.Lock()

    def next_id(self) -> int:
        request_id = next(self._ids) & wire.MAX_REQUEST_ID
        return request_id or next(self._ids) & wire.MAX_REQUEST_ID

    def send_call(self, key: bytes, args: list[Any], kwargs: dict[str, Any], pending: Pending,
                  kind: Kind = Kind.CALL, options: dict[str, Any] | None = None) -> int:
        """Register ``pending`` and send the call; raises before anything is registered if it can't go."""
        # payloads.call, inline (every future and stream sends here; tests/test_payloads.py checks the bytes)
        return self.send(kind, [key, args, kwargs, options or NO_OPTIONS], pending)

    def send_packed_call(self, body: bytes, pending: Pending) -> int:
        """Like :meth:`send_call` for a payload already packed by the caller (event batches)."""
        return self.send(Kind.CALL, body, pending, packed=True)

    def send(self, kind: Kind, payload: Any, pending: Pending, packed: bool = False) -> int:
        """Frame ``payload`` under a fresh request id, register ``pending`` for the reply, send.

        Raises (with nothing registered) if the call cannot go. Flat on purpose:
        every call goes through here.
        """
        request_id, header, body = self._frame(kind, payload, packed)
        if not self.unanswered:
            self._start_silence_clock()
        pending_by_id = self.pending
        pending_by_id[request_id] = pending
        try:
            self.framed.send_encoded(header, body)
        except NetError as exc:
            if pending_by_id.pop(request_id, None) is None:
                # Already answered or failed by a reader while we were still sending (e.g. the
                # peer refused the call's size and closed): the waiter holds the real outcome.
                return request_id
            self._die(exc)
            raise
        self.calls_started += 1
        if type(pending) is not Waiter:
            self._rouse()            # nobody will lead for it: make sure the background reads
        return request_id

    def _frame(self, kind: Kind, payload: Any, packed: bool = False) -> tuple[int, bytes, bytes]:
        """A fresh request id and its frame; raises (nothing registered) if the call cannot go."""
        if self.dead is not None:
            raise self.dead
        # frames.encode_frame / packed_frame, inline: every call frames here (the path is measured;
        # tests/test_payloads.py checks the bytes against them).
        request_id = next(self._ids) & MAX_REQUEST_ID or self.next_id()
        body = payload if packed else wire.pack(payload)
        if len(body) > self.max_message:
            raise wire.too_large(len(body), self.max_message)
        return request_id, HEADER.pack(len(body), kind, request_id), body

    def _register(self, request_id: int, pending: Pending) -> None:
        if not self.unanswered:
            self._start_silence_clock()
        self.pending[request_id] = pending

    def _start_silence_clock(self) -> None:
        """A request now waits for an answer: the heartbeat counts silence from here.

        Not restarted by later requests until something is heard, so calls that
        each give up before NET_HEARTBEAT (or are abandoned) cannot hide a frozen
        peer from the heartbeat monitor.
        """
        self.unanswered = True
        self.last_heard = monotonic()

    def register_call(self, key: bytes, args: list[Any], kwargs: dict[str, Any], pending: Pending,
                      options: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """Like :meth:`send_call` but returns the framed call instead of sending it.

        For :class:`LoopOutbox`, which sends the calls made during one turn of an
        event loop together (:meth:`send_batch`).
        """
        # payloads.call, inline (every acall sends here; tests/test_payloads.py checks the bytes)
        request_id, header, body = self._frame(Kind.CALL, [key, args, kwargs, options or NO_OPTIONS])
        self._register(request_id, pending)
        self.calls_started += 1
        return request_id, header + body

    def send_batch(self, data: bytes, request_ids: list[int]) -> None:
        """Send calls framed by :meth:`register_call`; if that fails they fail as never sent (Retired)."""
        try:
            self.framed.send_encoded(b"", data)
        except NetError as exc:
            for request_id in request_ids:
                waiter = self.pending.pop(request_id, None)
                if waiter is not None:
                    waiter.fail(Retired(f"could not send to {self.where}: {exc}", peer=self.where))
            self._die(exc)
            return
        self._rouse()                # nobody will lead for these: make sure the background reads

    def abandon(self, request_id: int) -> None:
        """Stop waiting for a request and tell the peer to cancel it."""
        if self.pending.pop(request_id, None) is not None and self.dead is None:
            try:
                self.framed.send(Kind.CANCEL, request_id)
            except NetError:
                pass

    def ping(self) -> None:
        self.last_ping = time.monotonic()
        try:
            self.framed.send(Kind.PING, 0)
        except NetError as exc:
            self._die(exc)

    def usable(self) -> bool:
        """False if the peer closed this connection while it sat idle (restart, idle timeout).

        Only looks (one poll, no wait) after ``IDLE_CHECK_AFTER`` seconds of quiet, so
        back-to-back calls pay nothing, and a restarted peer is never sent a call on a
        dead socket.
        """
        if self.dead is not None:
            return False
        if not self.pending and time.monotonic() - self.last_heard > IDLE_CHECK_AFTER \
                and self._read_lock.acquire(blocking=False):
            try:
                self._pump(0.0)
            finally:
                self._read_lock.release()
        return self.dead is None

    def call(self, payload: Any, deadline: float | None) -> tuple[Waiter | Led, int, bool]:
        """Send a CALL and block for its outcome: (settled waiter, request id, arrived before deadline).

        Every blocking call runs this, so the common case is kept short: a caller
        that finds nobody reading reads its own reply (leader/follower, see
        :meth:`wait`), and because nobody else can route that reply, its waiter
        needs no lock and is registered only once the call is on its way.
        Interrupted (e.g. Ctrl-C), the call is cancelled on the peer.
        """
        if deadline is not None or not self._read_lock.acquire(False):
            waiter = Waiter()
            request_id = self.send(CALL, payload, waiter)
            try:
                return waiter, request_id, self.wait(waiter, deadline)
            except BaseException:
                self.abandon(request_id)
                raise
        try:
            request_id, header, body = self._frame(CALL, payload)
            try:
                self.framed.send_encoded(header, body)
            except NetError as exc:
                self._die(exc)
                raise
            self.calls_started += 1
            led = Led()
            if not self.unanswered:             # _register, inline (the measured path)
                self._start_silence_clock()
            self.pending[request_id] = led
            try:
                while led.frame is None and led.error is None:
                    if self.dead is not None:       # died before we registered: nobody failed us
                        led.fail(self.dead)
                    else:
                        self._pump(None, len(self.pending) < 2)     # polls only for a lone call
            except BaseException:
                self.abandon(request_id)
                raise
        finally:
            self._read_lock.release()
            if self.pending:
                self._rouse()        # others wait: the background reader takes over
        return led, request_id, True

    # -- reading -------------------------------------------------------------------------------
    def wait(self, waiter: Waiter, deadline: float | None) -> bool:
        """Block until ``waiter`` is settled, reading frames ourselves when nobody else is.

        Returns False if ``deadline`` (a monotonic time) passed first.
        """
        while waiter.frame is None and waiter.error is None:
            if self._read_lock.acquire(False):
                try:
                    while waiter.frame is None and waiter.error is None:
                        if deadline is None:
                            self._pump(None, len(self.pending) < 2)
                        else:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                return False
                            self._pump(remaining, len(self.pending) < 2)
                finally:
                    self._read_lock.release()
                    if self.pending:
                        self._rouse()
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if waiter.wait(left):
                return True
        return True

    def _pump(self, timeout: float | None, poll: bool = True) -> None:
        """Read once and route what arrived; on any failure the connection dies (waiters fail).

        ``poll``: see FramedSocket._recv. Only a caller waiting for its own reply, with no
        other call in flight, polls: the threads its reads wake would wait for the GIL."""
        if self.dead is not None:
            return
        try:
            frames = self.framed.receive_available(timeout, poll)
            if frames is None:
                raise PeerUnreachable(f"{self.where} closed the connection", peer=self.where)
            if frames:
                self.last_heard = monotonic()
                self.unanswered = False
                pending = self.pending
                for frame in frames:
                    kind = frame.kind
                    if kind is RESULT or kind is ERROR:     # the usual reply, routed inline
                        waiter = pending.pop(frame.request_id, None)
                        if waiter is not None:
                            waiter.deliver(frame)
                    else:
                        self._route(frame)
        except FrameTooLarge as exc:
            waiter = self.pending.pop(exc.request_id, None) if exc.request_id else None
            log.warning("net: dropping connection to %s: %s", self.where, exc)
            self._die(PeerUnreachable(f"{self.where} sent a frame over NET_MAX_MESSAGE", peer=self.where))
            if waiter is not None:      # after _die, so the woken caller's next call dials afresh
                waiter.fail(MessageTooLarge(
                    f"the reply from {self.where} is {exc.length:,} bytes, over this process's limit of "
                    f"{exc.limit:,} bytes (NET_MAX_MESSAGE)"))
        except NetError as exc:
            if isinstance(exc, ProtocolError) and self.framed.decoder.expect_preamble is None:
                log.warning("net: dropping connection to %s: %s", self.where, exc)
                exc = PeerUnreachable(f"{self.where} broke the protocol: {exc}", peer=self.where)
            self._die(exc)
        except Exception as exc:        # never leave callers waiting on a connection nobody reads
            log.exception("net: reading from %s failed", self.where)
            self._die(PeerUnreachable(f"connection to {self.where} failed: {exc}", peer=self.where))

    def _route(self, frame: wire.Frame) -> None:
        kind = frame.kind
        if kind is Kind.RESULT or kind is Kind.ERROR or kind is Kind.STREAM_END:
            waiter = self.pending.pop(frame.request_id, None)
        elif kind is Kind.STREAM_ITEM:
            waiter = self.pending.get(frame.request_id)
        elif kind is Kind.PING:
            self.framed.send(Kind.PONG, frame.request_id)
            return
        elif kind is Kind.PONG:
            return
        elif kind is Kind.GOODBYE:
            reason, last = payloads.parse_goodbye(frame.payload)     # malformed: ProtocolError, we die
            if last is not None:
                # Calls after the last one the peer read never ran: safe to resend.
                for request_id in [r for r in list(self.pending) if r > last]:
                    unread = self.pending.pop(request_id, None)
                    if unread is not None:
                        unread.fail(Retired(f"{self.where} closed the connection ({reason}) before "
                                            f"reading this call", peer=self.where))
            elif reason == payloads.IDLE:   # an older peer: it retires only with nothing in flight
                raise Retired(f"{self.where} closed the connection ({reason})", peer=self.where)
            # What is still pending was read by the peer and may have run: never resent.
            raise PeerUnreachable(f"{self.where} closed the connection ({reason})", peer=self.where)
        else:
            raise ProtocolError(f"{self.where} sent an unexpected {kind.name} frame")
        if waiter is not None:
            waiter.deliver(frame)

    def _rouse(self) -> None:
        """Make sure the background reader reads. It starts on first need: a connection used
        only by blocking callers never needs it, and starting a thread would slow the first call."""
        if self._background is None:
            with self._background_lock:
                if self._background is None and self.dead is None:
                    self._background = threading.Thread(target=self._background_reader, daemon=True,
                                                        name=f"net-client-{self.where}")
                    self._background.start()
        self._signal()

    def _signal(self) -> None:
        """Wake the background reader (a lock as a binary semaphore: cheaper than an Event)."""
        try:
            self._wake.release()
        except RuntimeError:        # already signalled, not yet seen
            pass

    def _background_reader(self) -> None:
        """Read whenever callers wait and no caller is reading; sleep otherwise."""
        lock = self._read_lock
        while self.dead is None:
            self._wake.acquire()
            while self.pending and self.dead is None and lock.acquire(blocking=False):
                try:
                    while self.pending and self.dead is None:
                        self._pump(None, False)     # its callers (futures, asyncio) keep the GIL
                finally:
                    lock.release()
                # A caller may have registered after our last look but failed to take the
                # lock while we held it: the loop condition looks again after releasing.

    def _die(self, error: NetError) -> None:
        if self.dead is None:
            self.dead = error
        self.pool.discard(self)
        self.framed.close(linger=False)     # its calls fail now: nothing queued for it goes out
        error = self.dead or error      # the first cause, also when a reader races to report the close
        while self.pending:
            try:
                _, waiter = self.pending.popitem()
            except KeyError:
                break
            waiter.fail(error)
        self._signal()

    def close(self) -> None:
        self._die(PeerUnreachable(f"connection to {self.where} was closed by this process", peer=self.where))
