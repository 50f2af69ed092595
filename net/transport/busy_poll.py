"""When busy polling a socket pays: NET_BUSY_POLL, the CPUs this process may use, and how busy they are.

Polling (reading without sleeping for a few microseconds before a blocking
wait) saves the wake-up of a sleeping thread, but only while nobody else
needs the CPU or the GIL the poller holds. Measured on 2 CPUs, two callers
and a callee all polling ran 2.5x slower than sleeping. So a thread polls
only while all of these hold:

- a CPU is spare: no more runnable tasks on the machine (this one included)
  than CPUs this process may use, from Linux ``/proc/loadavg``, looked at
  every 50 µs while polling; where that cannot be seen there is no polling;
- no other thread of this process polls (:data:`POLLER`);
- on a callee, no other connection has been calling lately
  (:class:`SharedServer`): the reader with a call to run would wait for the GIL.
"""
from __future__ import annotations

import os
import socket
import threading
from time import perf_counter

from .. import config

DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)   # the non-blocking recv flag; absent on Windows
LOAD_FILE = "/proc/loadavg"
SAMPLE_EVERY = 50e-6            # seconds between looks at the load (a look is one pread)
POLLER = threading.Lock()       # held by the one thread of this process that polls now (the GIL is one)


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
    micros: int = config.get("BUSY_POLL")
    return micros / 1_000_000


class SharedServer:
    """Whether more than one connection of a server has been calling lately.

    Then its readers do not poll: a polling reader holds the GIL between its
    non-blocking reads, and the reader that has a call to run would wait for
    it (measured: two callers, both polling, 0.84x of neither polling).
    """

    WINDOW = 0.01       # seconds: calls from two connections this close together mean shared use

    __slots__ = ("last", "last_at", "shared_until")

    def __init__(self) -> None:
        self.last: object = None
        self.last_at = 0.0
        self.shared_until = 0.0

    def called(self, connection: object, now: float) -> None:
        """``connection`` read a frame at ``now`` (only its reader thread calls this)."""
        if self.last is not connection:
            if now - self.last_at < self.WINDOW:
                self.shared_until = now + self.WINDOW
            self.last = connection
        self.last_at = now

    def alone(self, now: float) -> bool:
        return now >= self.shared_until

