"""Deadlines of calls: the ``net.timeout()`` scope, dial timeouts, and one thread for Future deadlines.

:data:`call_timeout` is what ``with net.timeout(t):`` sets for the calls made
in it (this thread or task only); :data:`dial_timeout` overrides
``NET_CONNECT_TIMEOUT`` for the dials made in its scope (discovery probes use a
short one).

``Future``-style calls (``f.submit``) with a deadline register it here; the
thread sleeps until the earliest one, runs the callbacks that are due, and
exits after a while with nothing to wait for.
"""
from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from typing import Callable

log = logging.getLogger("net")

call_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "net_call_timeout", default=None)
dial_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "net_dial_timeout", default=None)


@contextlib.contextmanager
def timeout(seconds: float | None) -> Iterator[None]:
    """Deadline for remote calls made in this block (this thread/task only); None: no deadline."""
    if seconds is not None and seconds <= 0:
        raise ValueError("timeout must be > 0 seconds, or None")
    token = call_timeout.set(seconds)
    try:
        yield
    finally:
        call_timeout.reset(token)
IDLE_EXIT_SECONDS = 30.0


class Deadline:
    __slots__ = ("when", "callback")

    def __init__(self, when: float, callback: Callable[[], None] | None):
        self.when = when
        self.callback = callback

    def cancel(self) -> None:
        """Forget the deadline (cheap: it is dropped when it comes up)."""
        self.callback = None


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, callback: Callable[[], None]) -> Deadline:
        """Run ``callback`` (on the deadline thread) ``delay`` seconds from now unless cancelled."""
        deadline = Deadline(time.monotonic() + delay, callback)
        with self._changed:
            heapq.heappush(self._heap, (deadline.when, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="net-deadlines")
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._changed.notify()
        return deadline

    def _run(self) -> None:
        while True:
            due: list[Deadline] = []
            with self._changed:
                heap = self._heap
                while heap and heap[0][2].callback is None:
                    heapq.heappop(heap)
                if not heap:
                    self._changed.wait(IDLE_EXIT_SECONDS)
                    if not heap:
                        self._thread = None
                        return
                    continue
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    due.append(heapq.heappop(heap)[2])
                if not due:
                    self._changed.wait(heap[0][0] - now)
                    continue
            for deadline in due:
                callback = deadline.callback
                if callback is not None:
                    try:
                        callback()
                    except Exception:
                        log.exception("net: deadline callback %r failed", callback)


DEADLINES = Deadlines()
