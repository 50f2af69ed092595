"""When busy polling a socket pays: NET_BUSY_POLL, the CPUs this process may use, and how busy they are.

Polling (reading without sleeping for a few microseconds before a blocking
wait) saves the wake-up of a sleeping thread, but only while another CPU is
free to run whoever we wait for. With every CPU busy, a poller takes the CPU
from the very peer it waits for: two callers and a callee polling on two
CPUs measured 2.5x slower than sleeping. So polling also needs a spare CPU
right now: fewer runnable tasks on the machine than CPUs this process may
use (Linux ``/proc/loadavg``, sampled at most every millisecond). Where that
cannot be seen, there is no polling.
"""
from __future__ import annotations

import os
import socket
from time import perf_counter

from . import config

DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)   # the non-blocking recv flag; absent on Windows
LOAD_FILE = "/proc/loadavg"
SAMPLE_EVERY = 0.001            # seconds between looks at the load


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Load:
    """Whether a CPU is spare right now: runnable tasks (the 4th field of /proc/loadavg,
    ``running/total``, this thread included) no more than the CPUs this process may use."""

    def __init__(self, path: str = LOAD_FILE):
        try:
            self.fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:
            self.fd = None
        self.cpus = usable_cpus()
        self.next_sample = 0.0
        self.spare = False

    @property
    def visible(self) -> bool:
        return self.fd is not None and hasattr(os, "pread")

    def spare_cpu(self) -> bool:
        now = perf_counter()
        if now >= self.next_sample:
            self.next_sample = now + SAMPLE_EVERY
            try:
                running = int(os.pread(self.fd, 128, 0).split()[3].split(b"/")[0])  # type: ignore[arg-type]
            except (OSError, TypeError, ValueError, IndexError):
                running = self.cpus + 1         # cannot tell: do not poll
            self.spare = running <= self.cpus
        return self.spare


_load: Load | None = None


def load() -> Load:
    """The process's one load sampler (opened on first use, kept open: each look is one pread)."""
    global _load
    if _load is None:
        _load = Load()
    return _load


def budget_seconds() -> float:
    """NET_BUSY_POLL in seconds; 0 where polling can never pay: no non-blocking recv (Windows),
    one usable CPU, or no way to see whether a CPU is spare."""
    if not DONTWAIT or usable_cpus() < 2 or not load().visible:
        return 0.0
    return config.get("BUSY_POLL") / 1_000_000


def spare_cpu() -> bool:
    """True if polling now would not take a CPU someone else needs (see the module doc)."""
    return load().spare_cpu()
