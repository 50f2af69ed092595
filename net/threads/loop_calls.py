"""Run callbacks on an event loop from other threads, waking the loop once per batch.

``loop.call_soon_threadsafe`` writes to the loop's self-pipe on every call;
when replies (caller side) or calls (callee side) arrive in bursts, handing
them over as a batch saves a system call and a loop wake-up for each.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from typing import Any, Callable

log = logging.getLogger("net")


class LoopHandoff:
    __slots__ = ("loop", "pending", "scheduled", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self.scheduled = False

    def call(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop soon (thread-safe, order kept)."""
        self.pending.append((callback, args))
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:        # the loop is closed: nothing there waits any more
                self.pending.clear()

    def _drain(self) -> None:
        self.scheduled = False          # first: anything appended from now on schedules a new drain
        pending = self.pending
        while pending:
            callback, args = pending.popleft()
            try:
                callback(*args)
            except Exception:           # one failing callback must not strand the rest of the batch
                log.exception("net: callback %r failed on the event loop", callback)


_handoffs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopHandoff] = weakref.WeakKeyDictionary()


def for_loop(loop: asyncio.AbstractEventLoop) -> LoopHandoff:
    """The process's one hand-off for ``loop``."""
    handoff = _handoffs.get(loop)
    if handoff is None:
        handoff = _handoffs.setdefault(loop, LoopHandoff(loop))
    return handoff
