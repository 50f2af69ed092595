"""A bounded pool of daemon threads for synchronous handlers.

Threads are created on demand up to ``limit`` and exit after idling, so an
idle peer holds few threads and a busy one never holds more than ``limit``.
Cheaper per task than ``ThreadPoolExecutor`` (no Future per task), which
matters on the call path.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

log = logging.getLogger("net")
IDLE_EXIT_SECONDS = 30.0


class WorkerPool:
    def __init__(self, limit: int, name: str = "net-worker", idle_exit: float = IDLE_EXIT_SECONDS):
        self.limit = limit
        self.idle_exit = idle_exit
        self.name = name
        self._tasks: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._queued = 0
        self._closed = False

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue a task; start a thread if every existing one is busy and the limit allows."""
        if self._closed:
            raise RuntimeError("worker pool is closed")
        with self._lock:
            self._queued += 1
            spawn = self._queued > self._idle and self._threads < self.limit
            if spawn:
                self._threads += 1
                number = self._threads
        self._tasks.put((function, args))
        if spawn:
            threading.Thread(target=self._run, name=f"{self.name}-{number}", daemon=True).start()

    def _run(self) -> None:
        tasks = self._tasks
        lock = self._lock
        while True:
            with lock:
                self._idle += 1
            while True:
                try:
                    task = tasks.get(timeout=self.idle_exit)
                    break
                except queue.Empty:
                    with lock:
                        if self._queued == 0:       # nothing promised to us: leave
                            self._idle -= 1
                            self._threads -= 1
                            return
            with lock:
                self._idle -= 1
                if task is None:
                    self._threads -= 1
                    return
                self._queued -= 1
            function, args = task
            try:
                function(*args)
            except BaseException:       # a task must never kill its worker silently
                log.exception("net worker task %r failed", function)
            del task, function, args

    @property
    def threads(self) -> int:
        return self._threads

    def close(self) -> None:
        """Let running tasks finish; idle workers exit."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._tasks.put(None)


def ensure_thread(thread: threading.Thread | None, target: Callable[[], Any], name: str) -> threading.Thread:
    """``thread`` if it still runs, else a new daemon thread running ``target``, started.

    For a background loop that exits when it runs out of work: call this under the
    lock the loop holds when it decides to exit and clears its handle, so work
    added at that moment always finds a running loop.
    """
    if thread is not None and thread.is_alive():
        return thread
    thread = threading.Thread(target=target, daemon=True, name=name)
    thread.start()
    return thread

