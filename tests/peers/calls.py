"""Handlers for the asyncio / streaming / cancellation / liveness tests.

Handlers record what they observed under a caller-chosen token, and
``observed(token, wait)`` lets the test ask for it (a readiness signal, no sleeps).
"""
import asyncio
import threading
import time

import net

_events: dict[str, list] = {}
_changed = threading.Condition()


def _record(token, what):
    with _changed:
        _events.setdefault(token, []).append(what)
        _changed.notify_all()


@net.connect()
def observed(token, what, wait=10.0):
    """Wait up to ``wait`` s until ``what`` was recorded for ``token``; return everything recorded."""
    deadline = time.monotonic() + wait
    with _changed:
        while what not in _events.get(token, []) and time.monotonic() < deadline:
            _changed.wait(deadline - time.monotonic())
        return list(_events.get(token, []))


@net.connect()
def produced(token):
    """How many items the stream under ``token`` has produced so far."""
    return sum(1 for what in _events.get(token, []) if what == "item")


@net.connect()
def thread_count():
    return threading.active_count()


@net.connect()
def add(a, b):
    return a + b


@net.connect()
async def asleep(seconds, value=None):
    await asyncio.sleep(seconds)
    return value


@net.connect()
def sleep(seconds):
    time.sleep(seconds)
    return seconds


_overlap = {"now": 0, "most": 0}


@net.connect()
def overlapping_sleep(seconds):
    """Sleep, counting how many of these run at the same moment (see ``most_overlapping``)."""
    with _changed:
        _overlap["now"] += 1
        _overlap["most"] = max(_overlap["most"], _overlap["now"])
    try:
        time.sleep(seconds)
    finally:
        with _changed:
            _overlap["now"] -= 1
    return seconds


@net.connect()
def most_overlapping():
    return _overlap["most"]


@net.connect()
async def wait_for_cancel(token):
    _record(token, "started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        _record(token, "cancelled")
        raise
    _record(token, "not cancelled")


@net.connect()
def sync_wait_for_cancel(token):
    _record(token, "started")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if net.cancelled():
            _record(token, "cancelled")
            return None
        time.sleep(0.01)
    _record(token, "not cancelled")


@net.connect()
def count(n):
    yield from range(n)


@net.connect()
async def acount(n):
    for i in range(n):
        yield i
        if i % 1000 == 0:
            await asyncio.sleep(0)


@net.connect()
def chunks(size, number):
    chunk = b"\xab" * size
    for _ in range(number):
        yield chunk


@net.connect()
def guarded(token, n=None):
    """A long (or endless) generator that records each item and whether its finally ran."""
    _record(token, "started")
    try:
        i = 0
        while n is None or i < n:
            _record(token, "item")
            yield i
            i += 1
    finally:
        _record(token, "finally")


@net.connect()
async def aguarded(token):
    _record(token, "started")
    try:
        i = 0
        while True:
            _record(token, "item")
            yield i
            i += 1
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        _record(token, "cancelled")
        raise
    finally:
        _record(token, "finally")


@net.connect()
def slow_items(token, delay):
    """Yields one item per ``delay`` seconds: each must reach the caller without waiting for the next."""
    try:
        i = 0
        while True:
            yield [i, time.time()]
            i += 1
            time.sleep(delay)
    finally:
        _record(token, "finally")


@net.connect()
def fails_after(n):
    yield from range(n)
    raise ValueError(f"broke after {n}")


@net.connect()
def not_a_generator():
    return 42


@net.connect()
def big_guarded(token, size, n):
    """``n`` items of ``size`` bytes, each recorded as produced."""
    try:
        for i in range(n):
            _record(token, "item")
            yield bytes([i % 256]) * size
    finally:
        _record(token, "finally")
