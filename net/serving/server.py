"""The serving side of a peer: the accept loop, and the watchdog that keeps connections reading.

Each accepted socket becomes an :class:`~net.inbound.InboundLink`
(``inbound.py``), whose reader thread runs synchronous handlers itself. If a
handler is still running after ``HANDOFF_AFTER`` seconds, the
:class:`Watchdog` here gives the reading role to a fresh thread, so a slow
handler never delays other calls on the same connection. At most
``NET_WORKERS`` synchronous handlers run at once (:class:`HandlerSlots`;
beyond that, calls queue in the peer's bounded
:class:`~net.workers.WorkerPool`); ``async def`` handlers run on the peer's
event loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from typing import Any

from .. import config
from ..threads.workers import WorkerPool
from ..transport import busy_poll, endpoints as transport
from .link import InboundLink

log = logging.getLogger("net")
ACCEPT_ERROR_PAUSE = 0.05       # after EMFILE and the like, so a full fd table cannot spin a core
WATCH_INTERVAL = 0.002          # how often the watchdog looks while calls come in
READER_IDLE_EXIT = 1.0          # seconds a spare reader thread waits for a new connection
IDLE_LOOKS = 50                 # looks without inline work before the watchdog sleeps (~0.1 s)
# What calls read from callers may hold before their connection stops being read (see Intake):
LINK_HELD = 8 * 1024 * 1024     # bytes per connection: a burst of calls of a few MiB each still flows
TOTAL_HELD = 64 * 1024 * 1024   # bytes over all connections
LINK_CALLS = 1024               # calls per connection on the pool or the loop: bounds what their replies cost
CALL_WEIGHT = 512               # bytes counted per call on top of its size: its objects (state, task, frame)


class HandlerSlots:
    """Counts synchronous handlers running (at most ``limit``), without a lock when a slot is free.

    One token per free slot in a list: ``list.pop`` and ``list.append`` are atomic
    in CPython, so taking and returning a slot costs no lock on the call path.
    A waiter counts itself in ``waiting`` *before* it looks for a token, so a
    releaser that then finds ``waiting`` at 0 knows nobody can miss its token.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.waiting = 0
        self._free: list[None] = [None] * limit
        self._freed = threading.Condition(threading.Lock())

    @property
    def running(self) -> int:
        return self.limit - len(self._free)

    def try_acquire(self) -> bool:
        """Take a slot if one is free, without waiting."""
        try:
            self._free.pop()
        except IndexError:
            return False
        return True

    def acquire_blocking(self) -> None:
        with self._freed:
            self.waiting += 1
            try:
                while True:
                    try:
                        self._free.pop()
                        return
                    except IndexError:
                        self._freed.wait()
            finally:
                self.waiting -= 1

    def release(self) -> None:
        self._free.append(None)
        if self.waiting:
            with self._freed:
                self._freed.notify()


class Intake:
    """What calls read from callers hold until they run, per connection and in total.

    A call counts, from when it is read, with its size as received plus CALL_WEIGHT:
    a synchronous one until a worker starts it, an ``async def`` one until it
    finishes (the loop runs any number at once). A connection whose calls hold
    LINK_HELD bytes or number LINK_CALLS, or that holds any while all connections
    hold TOTAL_HELD, is not read further until calls start or finish
    (:meth:`InboundLink._hold_back`): TCP then pushes back on its caller. Refusing
    with an error instead would fail a legitimate burst that merely came faster
    than the workers; back-pressure only slows it down. The call being read when a
    bound is crossed is kept, so each connection may go over by one call.
    Only calls that wait for a worker or run on the loop take this lock, never
    the inline fast path.
    """

    def __init__(self) -> None:
        self.total = 0
        self._waiting = 0
        self._changed = threading.Condition(threading.Lock())

    def hold(self, link: InboundLink, size: int) -> int:
        """Count a call of ``size`` bytes just read from ``link``; its weight, to give back."""
        weight = size + CALL_WEIGHT
        with self._changed:
            link.held += weight
            link.in_flight += 1
            self.total += weight
        return weight

    def started(self, link: InboundLink, weight: int) -> None:
        """A worker started the call: its bytes no longer count (it still does until finished)."""
        with self._changed:
            link.held -= weight
            self.total -= weight
            if self._waiting:
                self._changed.notify_all()

    def finished(self, link: InboundLink, weight: int) -> None:
        """The call is over; ``weight``: what it still held (0 if :meth:`started` gave it back)."""
        with self._changed:
            link.held -= weight
            link.in_flight -= 1
            self.total -= weight
            if self._waiting:
                self._changed.notify_all()

    def over(self, link: InboundLink) -> bool:
        """Whether ``link`` holds more than it may (read without the lock: a look)."""
        held = link.held
        return held >= LINK_HELD or link.in_flight >= LINK_CALLS or (held > 0 and self.total >= TOTAL_HELD)

    def wait(self, link: InboundLink, timeout: float) -> None:
        """Sleep while ``link`` is over its bounds, until a call starts or finishes, at most ``timeout``."""
        with self._changed:
            if self.over(link):
                self._waiting += 1
                try:
                    self._changed.wait(timeout)
                finally:
                    self._waiting -= 1


class Server:
    """Listens on the first free port of the range and serves every connection."""

    def __init__(self, peer: Any):
        self.peer = peer
        self.listener, self.port = transport.listen(
            config.get("BIND"), config.get("PORT_START"), config.get("PORT_RANGE"))
        self.workers = WorkerPool(config.get("WORKERS"), name=f"net-handler-{self.port}")
        # Reader threads outlive their connection only briefly: a closed connection's thread
        # is reused by the next one, or exits after READER_IDLE_EXIT seconds.
        self.readers = WorkerPool(config.get("MAX_CONNECTIONS") + config.get("WORKERS"),
                                  name=f"net-reader-{self.port}",
                                  idle_exit=READER_IDLE_EXIT)
        self.handler_slots = HandlerSlots(config.get("WORKERS"))
        self.intake = Intake()          # what calls read hold until they run (bounds per connection, total)
        self.watchdog = Watchdog(self.readers)
        self.max_connections = config.get("MAX_CONNECTIONS")
        self.handshake_timeout = config.get("HANDSHAKE_TIMEOUT")
        self.idle_timeout = config.get("IDLE_TIMEOUT")
        self.max_message = config.get("MAX_MESSAGE")
        self.shared = busy_poll.SharedServer()      # whether its readers may busy-poll
        self.connections: set[InboundLink] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name=f"net-accept-{self.port}")
        self._accept_thread.start()
        if self.idle_timeout is not None:
            threading.Thread(target=self._sweep_idle, daemon=True, name=f"net-idle-{self.port}").start()

    def _sweep_idle(self) -> None:
        """Close inbound connections idle past NET_IDLE_TIMEOUT (their callers reconnect)."""
        interval = min(max(self.idle_timeout / 4, 0.05), 5.0)
        while not self._closed.wait(interval):
            now = time.monotonic()
            with self._lock:
                connections = list(self.connections)
            for connection in connections:
                connection.retire_if_idle(now, self.idle_timeout)

    # -- accepting ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                sock, address = self.listener.accept()
            except OSError as exc:
                if self._closed.is_set():
                    return
                log.warning("net: accept failed on port %s: %s", self.port, exc)
                time.sleep(ACCEPT_ERROR_PAUSE)
                continue
            where = f"{address[0]}:{address[1]}"
            with self._lock:
                full = len(self.connections) >= self.max_connections
                if not full:
                    connection = InboundLink(self, sock, where)
                    self.connections.add(connection)
            if full:
                log.warning("net: refusing %s: %d connections open (NET_MAX_CONNECTIONS)",
                            where, self.max_connections)
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            self.readers.submit(connection.serve)

    def forget(self, connection: InboundLink) -> None:
        with self._lock:
            self.connections.discard(connection)

    # -- async handlers ----------------------------------------------------------------------
    def loop(self) -> asyncio.AbstractEventLoop:
        """The peer's own event loop for ``async def`` handlers, started on first need."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=run, daemon=True, name=f"net-loop-{self.port}").start()
                ready.wait()
                self._loop = loop
            return self._loop

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)     # wakes the blocked accept() on Linux
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            connections = list(self.connections)
        for connection in connections:
            connection.close(linger=False)      # shutting down: replies not taken yet are dropped
        self._accept_thread.join(timeout=2)
        self.watchdog.close()
        self.workers.close()
        self.readers.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


class Watchdog:
    """Takes the reading role away from connections whose reader runs a handler for too long.

    Costs the call path one set insertion: while calls come in it looks every
    ``WATCH_INTERVAL``; after ``IDLE_LOOKS`` looks with nothing running inline
    it sleeps until the next inline call wakes it.
    """

    def __init__(self, readers: Any):
        self.readers = readers
        self.recent: set[InboundLink] = set()
        self.sleeping = True
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def watch(self, connection: InboundLink) -> None:
        self.recent.add(connection)
        if self.sleeping:
            self._wake.set()
            if self._thread is None:
                with self._lock:
                    if self._thread is None and not self._closed:
                        self._thread = threading.Thread(target=self._run, daemon=True, name="net-watchdog")
                        self._thread.start()

    def _run(self) -> None:
        idle_looks = 0
        while not self._closed:
            self.sleeping = False
            time.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            busy = False
            for connection in list(self.recent):
                if connection.inline_since is None:
                    self.recent.discard(connection)
                    continue
                busy = True
                if connection.take_over_if_stuck(now):
                    self.recent.discard(connection)
                    self.readers.submit(connection.read_as, connection.generation)
            idle_looks = 0 if busy or self.recent else idle_looks + 1
            if idle_looks >= IDLE_LOOKS:
                self._wake.clear()
                self.sleeping = True
                if not self.recent:         # a reader that saw sleeping=False added itself: look again
                    self._wake.wait()
                idle_looks = 0

    def close(self) -> None:
        self._closed = True
        self._wake.set()
