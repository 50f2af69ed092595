"""The calling side: pooled persistent connections to other peers, with request ids.

One :class:`OutboundConnection` per remote ``(host, port)`` carries every call
from every thread of this process at once: each call gets a request id, a
reader thread routes replies back to whoever waits for them (a blocked
thread, a Future, an asyncio future). A heartbeat monitor pings connections
with calls in flight and declares a connection dead when it hears nothing
for ``NET_HEARTBEAT`` seconds, so a frozen or vanished peer never hangs a
caller that set no deadline.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
import weakref
from typing import Any, Callable

from . import config, handoff, identity, registry, transport, wire
from .context import call_timeout
from .deadlines import DEADLINES
from .errors import (Cancelled, FrameTooLarge, MessageTooLarge, NetError, PeerUnreachable,
                     ProtocolError, RemoteError, Timeout)
from .wire import Kind

log = logging.getLogger("net")
IDLE_CHECK_AFTER = 0.05     # seconds of quiet after which a pooled connection is checked before use


class Retired(PeerUnreachable):
    """The peer closed an idle connection (GOODBYE) before reading this call: safe to resend."""


class Pending:
    """Someone waiting for the reply to one request."""

    __slots__ = ()

    def deliver(self, frame: wire.Frame) -> None:
        raise NotImplementedError

    def fail(self, error: NetError) -> None:
        raise NotImplementedError


class Waiter(Pending):
    """A blocked thread: a pre-acquired lock is the cheapest one-shot signal in CPython."""

    __slots__ = ("_lock", "frame", "error")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.frame: wire.Frame | None = None
        self.error: NetError | None = None

    def deliver(self, frame: wire.Frame) -> None:
        self.frame = frame
        self._lock.release()

    def fail(self, error: NetError) -> None:
        if self.frame is None and self.error is None:
            self.error = error
            self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        return self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0))


class FutureWaiter(Pending):
    """Resolves a ``concurrent.futures.Future`` via ``finish`` (run off the reader thread)."""

    __slots__ = ("future", "finish", "retry")

    def __init__(self, future: concurrent.futures.Future, finish: Callable[[wire.Frame], Any]):
        self.future = future
        self.finish = finish
        self.retry: Callable[[], None] | None = None    # resends the call if the peer retired the connection

    def deliver(self, frame: wire.Frame) -> None:
        if frame.kind is Kind.RESULT and isinstance(frame.payload, wire.Flag):
            # Flag handlers may call other peers: never run them on the reader thread.
            threading.Thread(target=self._settle, args=(frame,), daemon=True).start()
        else:
            self._settle(frame)

    def _settle(self, frame: wire.Frame) -> None:
        if self.future.done():
            return
        try:
            self.future.set_result(self.finish(frame))
        except BaseException as exc:
            self.future.set_exception(exc)

    def fail(self, error: NetError) -> None:
        retry, self.retry = self.retry, None
        if isinstance(error, Retired) and retry is not None and not self.future.done():
            # Dialing again must not hold up whichever thread is failing this connection.
            threading.Thread(target=retry, daemon=True, name="net-resend").start()
        elif not self.future.done():
            self.future.set_exception(error)


class AsyncWaiter(Pending):
    """Hands the frame to an asyncio future on its own loop (thread-safe, batched per loop)."""

    __slots__ = ("handoff", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.handoff = handoff.for_loop(loop)
        self.future = future

    def deliver(self, frame: wire.Frame) -> None:
        self.handoff.call(_settle, self.future, frame, None)

    def fail(self, error: NetError) -> None:
        self.handoff.call(_settle, self.future, None, error)


def _settle(future: asyncio.Future, frame: wire.Frame | None, error: NetError | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(frame)


class LoopOutbox:
    """Calls made on one event loop for one connection, sent together when the loop's turn ends.

    A hundred ``acall``s started in one turn cost one ``sendall`` instead of a
    hundred (and as many GIL hand-offs to the reading thread). A call abandoned
    before the flush (cancelled, timed out) is simply left out.
    """

    __slots__ = ("connection", "loop", "frames", "scheduled")

    def __init__(self, connection: "OutboundConnection", loop: asyncio.AbstractEventLoop):
        self.connection = connection
        self.loop = loop
        self.frames: list[tuple[int, bytes]] = []
        self.scheduled = False

    def add(self, request_id: int, data: bytes) -> None:
        self.frames.append((request_id, data))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        frames, self.frames = self.frames, []
        pending = self.connection.pending
        live = [(request_id, data) for request_id, data in frames if request_id in pending]
        if live:
            self.connection.send_batch(b"".join(data for _, data in live),
                                       [request_id for request_id, _ in live])


_outboxes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[OutboundConnection, LoopOutbox]]" = \
    weakref.WeakKeyDictionary()


def outbox(loop: asyncio.AbstractEventLoop, connection: "OutboundConnection") -> LoopOutbox:
    boxes = _outboxes.get(loop)
    if boxes is None:
        boxes = _outboxes.setdefault(loop, {})
    box = boxes.get(connection)
    if box is None:
        if len(boxes) > 64:             # forget outboxes of dead connections
            for old in [c for c in boxes if c.dead is not None]:
                del boxes[old]
        box = boxes[connection] = LoopOutbox(connection, loop)
    return box


class OutboundConnection:
    """A persistent connection to one remote peer, shared by all threads.

    Whoever holds ``_read_lock`` reads frames and routes them to their
    waiters. A thread blocked in a call takes that role itself when it is
    free (leader/follower), so a sequential caller reads its own reply with no
    thread hand-off; when callers are still waiting as a leader leaves, or
    only futures and asyncio callers wait, a background reader takes over.
    """

    def __init__(self, pool: "Pool", host: str, port: int):
        self.pool = pool
        self.host = host
        self.port = port
        self.where = f"{host}:{port}"
        self.dial_timeout = dial_timeout()
        self.framed = transport.dial(host, port, self.dial_timeout, config.get("MAX_MESSAGE"))
        self.opened = time.monotonic()
        self.pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)
        self.last_heard = time.monotonic()
        self.last_ping = 0.0
        self.dead: NetError | None = None
        self.calls_started = 0
        self._read_lock = threading.Lock()
        self._wake = threading.Event()
        self._background = threading.Thread(target=self._background_reader, daemon=True,
                                            name=f"net-client-{self.where}")
        self._background.start()

    def next_id(self) -> int:
        request_id = next(self._ids) & wire.MAX_REQUEST_ID
        return request_id or next(self._ids) & wire.MAX_REQUEST_ID

    def send_call(self, key: bytes, args: list[Any], kwargs: dict[str, Any], pending: Pending,
                  kind: Kind = Kind.CALL, options: dict[str, Any] | None = None) -> int:
        """Register ``pending`` and send the call; raises before anything is registered if it can't go."""
        if self.dead is not None:
            raise self.dead
        request_id = self.next_id()
        header, body = wire.encode_frame(kind, request_id, [key, args, kwargs, options or {}],
                                         max_message=self.framed.max_message)
        return self._send_registered(request_id, header, body, pending)

    def send_packed_call(self, body: bytes, pending: Pending) -> int:
        """Like :meth:`send_call` for a payload already packed by the caller (event batches)."""
        if self.dead is not None:
            raise self.dead
        request_id = self.next_id()
        header, body = wire.packed_frame(Kind.CALL, request_id, body, max_message=self.framed.max_message)
        return self._send_registered(request_id, header, body, pending)

    def _send_registered(self, request_id: int, header: bytes, body: bytes, pending: Pending) -> int:
        if not self.pending:
            self.last_heard = time.monotonic()      # the silence clock starts when someone waits
        self.pending[request_id] = pending
        try:
            self.framed.send_encoded(header, body)
        except NetError as exc:
            if self.pending.pop(request_id, None) is None:
                # Already answered or failed by a reader while we were still sending (e.g. the
                # peer refused the call's size and closed): the waiter holds the real outcome.
                return request_id
            self._die(exc)
            raise
        self.calls_started += 1
        if type(pending) is not Waiter:
            self._wake.set()            # nobody will lead for it: make sure the background reads
        return request_id

    def register_call(self, key: bytes, args: list[Any], kwargs: dict[str, Any], pending: Pending,
                      options: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """Like :meth:`send_call` but returns the framed call instead of sending it.

        For :class:`LoopOutbox`, which sends the calls made during one turn of an
        event loop together (:meth:`send_batch`).
        """
        if self.dead is not None:
            raise self.dead
        request_id = self.next_id()
        header, body = wire.encode_frame(Kind.CALL, request_id, [key, args, kwargs, options or {}],
                                         max_message=self.framed.max_message)
        if not self.pending:
            self.last_heard = time.monotonic()      # the silence clock starts when someone waits
        self.pending[request_id] = pending
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
        self._wake.set()                # nobody will lead for these: make sure the background reads

    def send_notify(self, key: bytes, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Fire-and-forget call (no reply): used for event deliveries."""
        if self.dead is not None:
            raise self.dead
        try:
            self.framed.send(Kind.NOTIFY, 0, [key, args, kwargs, {}])
        except (TypeError, ValueError):
            raise
        except NetError as exc:
            self._die(exc)
            raise

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

    # -- reading -------------------------------------------------------------------------------
    def wait(self, waiter: Waiter, deadline: float | None) -> bool:
        """Block until ``waiter`` is settled, reading frames ourselves when nobody else is.

        Returns False if ``deadline`` (a monotonic time) passed first.
        """
        while waiter.frame is None and waiter.error is None:
            if self._read_lock.acquire(blocking=False):
                try:
                    while waiter.frame is None and waiter.error is None:
                        if deadline is None:
                            self._pump(None)
                        else:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                return False
                            self._pump(remaining)
                finally:
                    self._read_lock.release()
                    if self.pending:
                        self._wake.set()
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if waiter.wait(remaining):
                return True
        return True

    def _pump(self, timeout: float | None) -> None:
        """Read once and route what arrived; on any failure the connection dies (waiters fail)."""
        if self.dead is not None:
            return
        try:
            frames = self.framed.receive_available(timeout)
            if frames is None:
                raise PeerUnreachable(f"{self.where} closed the connection", peer=self.where)
            if frames:
                self.last_heard = time.monotonic()
                for frame in frames:
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
            payload = frame.payload if isinstance(frame.payload, dict) else {}
            reason, last = payload.get("reason"), payload.get("last_request")
            if isinstance(last, int) and not isinstance(last, bool):
                # Calls after the last one the peer read never ran: safe to resend.
                for request_id in [r for r in list(self.pending) if r > last]:
                    unread = self.pending.pop(request_id, None)
                    if unread is not None:
                        unread.fail(Retired(f"{self.where} closed the connection ({reason}) before "
                                            f"reading this call", peer=self.where))
            elif reason == "idle":      # an older peer: it retires only with nothing in flight
                raise Retired(f"{self.where} closed the connection ({reason})", peer=self.where)
            # What is still pending was read by the peer and may have run: never resent.
            raise PeerUnreachable(f"{self.where} closed the connection ({reason})", peer=self.where)
        else:
            raise ProtocolError(f"{self.where} sent an unexpected {kind.name} frame")
        if waiter is not None:
            waiter.deliver(frame)

    def _background_reader(self) -> None:
        """Read whenever callers wait and no caller is reading; sleep otherwise."""
        lock = self._read_lock
        while self.dead is None:
            self._wake.wait()
            self._wake.clear()
            while self.pending and self.dead is None and lock.acquire(blocking=False):
                try:
                    while self.pending and self.dead is None:
                        self._pump(None)
                finally:
                    lock.release()
                # A caller may have registered after our last look but failed to take the
                # lock while we held it: the loop condition looks again after releasing.

    def _die(self, error: NetError) -> None:
        if self.dead is None:
            self.dead = error
        self.pool.discard(self)
        self.framed.close()
        error = self.dead or error      # the first cause, also when a reader races to report the close
        while self.pending:
            try:
                _, waiter = self.pending.popitem()
            except KeyError:
                break
            waiter.fail(error)
        self._wake.set()

    def close(self) -> None:
        self._die(PeerUnreachable(f"connection to {self.where} was closed by this process", peer=self.where))


class Pool:
    """Process-wide connections, one per remote (host, port), plus their heartbeat monitor."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, int], OutboundConnection] = {}
        self._lock = threading.Lock()
        self._dialing: dict[tuple[str, int], threading.Lock] = {}
        self._monitor: threading.Thread | None = None

    def get(self, host: str, port: int) -> OutboundConnection:
        address = (host, port)
        connection = self._connections.get(address)
        if connection is not None and connection.usable():
            return connection
        with self._lock:
            dial_lock = self._dialing.setdefault(address, threading.Lock())
        with dial_lock:             # one dial per address at a time; others reuse its result
            connection = self._connections.get(address)
            if connection is not None and connection.dead is None:
                return connection
            connection = OutboundConnection(self, host, port)
            with self._lock:
                self._connections[address] = connection
                if self._monitor is None or not self._monitor.is_alive():
                    self._monitor = threading.Thread(target=self._watch, daemon=True, name="net-heartbeat")
                    self._monitor.start()
            return connection

    def discard(self, connection: OutboundConnection) -> None:
        with self._lock:
            address = (connection.host, connection.port)
            if self._connections.get(address) is connection:
                del self._connections[address]

    def connections(self) -> list[OutboundConnection]:
        with self._lock:
            return list(self._connections.values())

    def close_all(self) -> None:
        for connection in self.connections():
            connection.close()

    def _watch(self) -> None:
        """Ping connections that have callers waiting; kill those silent for NET_HEARTBEAT.

        Checks every ``limit/8`` (at most 1 s) and declares a connection dead once
        it has been silent for ``limit`` minus one check interval, so a dead or
        frozen peer is always detected within NET_HEARTBEAT of the last thing it
        sent. Pings go out after ``limit/4`` of silence, so a PONG has more than
        half the limit to come back on a busy machine.
        """
        while True:
            limit = config.get("HEARTBEAT")
            interval = min(1.0, limit / 8)
            time.sleep(interval)
            connections = self.connections()
            if not connections:
                with self._lock:
                    if not self._connections:
                        self._monitor = None
                        return
                continue
            now = time.monotonic()
            for connection in connections:
                if not connection.pending:
                    continue
                if connection.framed.decoder.expect_preamble is not None \
                        and now - connection.opened > connection.dial_timeout:
                    connection._die(Timeout(
                        f"{connection.where} accepted the connection but did not greet within "
                        f"{connection.dial_timeout:g}s: not a net peer?", peer=connection.where))
                    continue
                silent = now - connection.last_heard
                if silent > limit - interval:
                    connection._die(PeerUnreachable(
                        f"{connection.where} stopped answering: nothing heard for {silent:.1f}s "
                        f"with calls in flight (NET_HEARTBEAT={limit:g})", peer=connection.where))
                elif silent > limit / 4 and now - connection.last_ping > limit / 4:
                    connection.ping()


POOL = Pool()


def finish(frame: wire.Frame, where: str, key: bytes, target: Any) -> Any:
    """Turn a reply frame into the call's result, or raise what the remote raised."""
    if frame.kind is Kind.RESULT:
        value = frame.payload
        if isinstance(value, wire.Flag):
            handler = registry.FLAGS.get(identity.key(value.name))
            if handler is None:
                raise ProtocolError(f"{where} answered with flag {value.name!r}, which this process "
                                    f"does not know")
            return handler(registry.name_of(key), target)
        return value
    if frame.kind is Kind.ERROR:
        error = frame.payload if isinstance(frame.payload, dict) else {}
        if error.get("type") == "net.MessageTooLarge":      # refused by the receiver's limit
            raise MessageTooLarge(str(error.get("message", "message too large")))
        raise RemoteError(str(error.get("type", "Error")), str(error.get("message", "")),
                          str(error.get("traceback", "")), peer=where, connection=registry.name_of(key))
    raise ProtocolError(f"{where} answered a call with a {frame.kind.name} frame")


def dial_timeout() -> float:
    """Seconds to open a connection: ``context.dial_timeout`` if set (discovery probes), else the setting."""
    from .context import dial_timeout as override
    return override.get() or config.get("CONNECT_TIMEOUT")


def effective_timeout() -> float | None:
    timeout = call_timeout.get()
    return timeout if timeout is not None else config.get("TIMEOUT")


def call(host: str, port: int, key: bytes, args: list[Any], kwargs: dict[str, Any],
         target: Any = None, timeout: float | None = None) -> Any:
    """Run connection ``key`` on the peer at host:port and return its result (blocking)."""
    if timeout is None:
        timeout = effective_timeout()
    deadline = None if timeout is None else time.monotonic() + timeout
    for attempt in (1, 2):
        connection = POOL.get(host, port)
        reused = connection.calls_started > 0
        waiter = Waiter()
        try:
            request_id = connection.send_call(key, args, kwargs, waiter)
        except PeerUnreachable:
            if reused and attempt == 1:     # a stale pooled socket: the call never left, dial again
                continue
            raise
        try:
            arrived = connection.wait(waiter, deadline)
        except BaseException:               # KeyboardInterrupt while waiting: cancel remotely
            connection.abandon(request_id)
            raise
        if not arrived:
            connection.abandon(request_id)
            raise Timeout(f"call to {registry.name_of(key)} on {connection.where} did not finish "
                          f"within {timeout:g}s", peer=connection.where)
        if waiter.error is not None:
            if isinstance(waiter.error, Retired) and attempt == 1:
                continue
            raise type(waiter.error)(str(waiter.error), peer=connection.where) \
                if isinstance(waiter.error, (PeerUnreachable, Timeout)) else waiter.error
        assert waiter.frame is not None
        return finish(waiter.frame, connection.where, key, target)
    raise PeerUnreachable(f"could not reach {host}:{port}", peer=f"{host}:{port}")


def submit(host: str, port: int, key: bytes, args: list[Any], kwargs: dict[str, Any],
           target: Any = None, timeout: float | None = None) -> concurrent.futures.Future:
    """Start a call and return a Future; cancelling the Future cancels the remote call.

    A deadline is kept by the process's one deadline thread, never a thread per
    call. Like :func:`call`, a call that met a stale pooled connection is sent
    again once on a fresh one.
    """
    if timeout is None:
        timeout = effective_timeout()
    future: concurrent.futures.Future = concurrent.futures.Future()
    latest: list[Any] = [None, 0, None]         # connection, request id, waiter of the latest attempt

    def send(attempt: int) -> None:
        connection = POOL.get(host, port)
        reused = connection.calls_started > 0
        where = connection.where
        waiter = FutureWaiter(future, lambda frame: finish(frame, where, key, target))
        if attempt == 1:
            waiter.retry = resend
        try:
            request_id = connection.send_call(key, args, kwargs, waiter)
        except PeerUnreachable:
            if reused and attempt == 1:     # a stale pooled socket: the call never left, dial again
                return send(2)
            raise
        latest[:] = [connection, request_id, waiter]

    def resend() -> None:
        if future.done():
            return
        try:
            send(2)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)

    send(1)

    def on_done(done: concurrent.futures.Future) -> None:
        if done.cancelled():
            latest[0].abandon(latest[1])

    future.add_done_callback(on_done)
    if timeout is not None:
        def expire() -> None:
            if not future.done():
                connection, request_id, waiter = latest
                connection.abandon(request_id)
                waiter.fail(Timeout(f"call to {registry.name_of(key)} on {connection.where} did not "
                                    f"finish within {timeout:g}s", peer=connection.where))
        deadline = DEADLINES.schedule(timeout, expire)
        future.add_done_callback(lambda _: deadline.cancel())
    return future


async def acall(host: str, port: int, key: bytes, args: list[Any], kwargs: dict[str, Any],
                target: Any = None, timeout: float | None = None) -> Any:
    """Await a call from a running event loop; no thread is parked per call in flight.

    Like :func:`call`, a call that met a stale pooled connection (closed by the
    peer while idle, before it read the call) is sent again on a fresh one.
    """
    if timeout is None:
        timeout = effective_timeout()
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    for attempt in (1, 2):
        connection = POOL._connections.get((host, port))
        if connection is None or not connection.usable():
            connection = await loop.run_in_executor(None, POOL.get, host, port)    # dialing blocks
        reused = connection.calls_started > 0
        future: asyncio.Future = loop.create_future()
        try:
            request_id, data = connection.register_call(key, args, kwargs, AsyncWaiter(loop, future))
        except PeerUnreachable:
            if reused and attempt == 1:
                continue
            raise
        outbox(loop, connection).add(request_id, data)
        try:
            frame = await asyncio.wait_for(future, None if deadline is None else deadline - loop.time())
        except asyncio.TimeoutError:
            connection.abandon(request_id)
            raise Timeout(f"call to {registry.name_of(key)} on {connection.where} did not finish "
                          f"within {timeout:g}s", peer=connection.where) from None
        except asyncio.CancelledError:
            connection.abandon(request_id)
            raise
        except Retired:
            if attempt == 1:
                continue
            raise
        except (PeerUnreachable, Timeout) as exc:
            raise type(exc)(str(exc), peer=connection.where) from None
        if frame.kind is Kind.RESULT and isinstance(frame.payload, wire.Flag):
            return await loop.run_in_executor(None, finish, frame, connection.where, key, target)
        return finish(frame, connection.where, key, target)
    raise PeerUnreachable(f"could not reach {host}:{port}", peer=f"{host}:{port}")
