"""Handlers for the trust tests (limits, faults, soak)."""
import os
import threading
import time

import net

_calls = {"count": 0}
_lock = threading.Lock()


@net.connect()
def blob(size):
    """A reply of ``size`` bytes."""
    return b"x" * size


@net.connect()
def counted(value):
    """Echo, counting how often it ran (so a test can tell a call never ran twice)."""
    with _lock:
        _calls["count"] += 1
    return value


@net.connect()
def call_count():
    return _calls["count"]


@net.connect()
def nap(seconds):
    """Sleep; prints NAPPING first so a test knows the call is in flight (no sleeps in tests)."""
    print(f"NAPPING {seconds}", flush=True)
    time.sleep(seconds)
    return os.getpid()


@net.connect()
def rss_kib():
    """Resident set size of this process in KiB (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1
