"""Who waits for a reply: the one-shot receivers a connection's reader hands frames to.

A call registers a :class:`Pending` under its request id; whichever thread
reads the connection calls ``deliver`` with the reply frame, or ``fail`` if
the connection dies first. Each kind of caller gets the cheapest signal that
wakes it: a blocked thread (:class:`Waiter`), a ``concurrent.futures.Future``
(:class:`FutureWaiter`), an asyncio future on its own loop (:class:`AsyncWaiter`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable

from ..errors import NetError, PeerUnreachable
from ..threads import loop_calls as handoff
from ..wire import frames as wire
from ..wire.frames import Kind


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


class Led(Pending):
    """A caller that reads its own reply (it holds the connection's read lock): no signal needed."""

    __slots__ = ("frame", "error")

    def __init__(self) -> None:
        self.frame: wire.Frame | None = None
        self.error: NetError | None = None

    def deliver(self, frame: wire.Frame) -> None:
        self.frame = frame

    def fail(self, error: NetError) -> None:
        if self.frame is None and self.error is None:
            self.error = error


class FutureWaiter(Pending):
    """Resolves a ``concurrent.futures.Future`` via ``finish`` (run off the reader thread)."""

    __slots__ = ("future", "finish", "retry")

    def __init__(self, future: concurrent.futures.Future[Any], finish: Callable[[wire.Frame], Any]):
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

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[wire.Frame]):
        self.handoff = handoff.for_loop(loop)
        self.future = future

    def deliver(self, frame: wire.Frame) -> None:
        self.handoff.call(_resolve, self.future, frame)

    def fail(self, error: NetError) -> None:
        self.handoff.call(_reject, self.future, error)


def _resolve(future: asyncio.Future[wire.Frame], frame: wire.Frame) -> None:
    if not future.done():
        future.set_result(frame)


def _reject(future: asyncio.Future[wire.Frame], error: NetError) -> None:
    if not future.done():
        future.set_exception(error)
