"""Publisher-side probes for tests/test_hardening_events.py: a trigger loop that times itself, table counts.

Loaded next to ``events_pub`` (``spawn("events_pub", "events_probe")``), whose hooks it shares.
Bounded: a ticker triggers at most ``limit`` times and stops when asked or after ``TICK_LIMIT`` s.
"""
import threading
import time

import events_pub

import net
from net.events import publisher

TICK_LIMIT = 120.0
_tickers = {}


def _tick(name, interval, limit, stop, times):
    trigger = events_pub.hook(name)
    ends = time.monotonic() + TICK_LIMIT
    for value in range(limit):
        if stop.is_set() or time.monotonic() > ends:
            return
        started = time.perf_counter()
        trigger(value)
        times.append(time.perf_counter() - started)
        stop.wait(interval)


@net.connect()
def start_ticking(name, interval, limit):
    """Trigger ``name`` every ``interval`` s (``limit`` times at most) on a thread, timing each trigger."""
    stop, times = threading.Event(), []
    thread = threading.Thread(target=_tick, args=(name, interval, limit, stop, times), daemon=True)
    _tickers[name] = (thread, stop, times)
    thread.start()
    return True


@net.connect()
def stop_ticking(name):
    """Stop the ticker of ``name``: how many triggers ran, the slowest and the median (seconds)."""
    thread, stop, times = _tickers.pop(name)
    stop.set()
    thread.join(10)
    ordered = sorted(times)
    return {"count": len(ordered), "max": ordered[-1] if ordered else None,
            "p50": ordered[len(ordered) // 2] if ordered else None}


@net.connect()
def held():
    """What the publisher holds: leases, (lease, event) pairs, distinct event names."""
    table = dict(net.Peer().SUBSCRIPTIONS)
    return {"leases": len(publisher.PUBLISHER.records), "pairs": sum(len(v) for v in table.values()),
            "names": len(table)}
