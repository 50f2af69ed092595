"""Real peer processes for tests: start, wait for READY, stop by PID. No sleeps, no mocks.

Every helper process stops by itself: it exits when its stdin closes (the test
process died) or after ``NET_TEST_LIFETIME`` seconds.

Also the one reset of net's globals between tests, and the check that a test leaves no
thread or child process behind (both run by conftest's ``clean_process``).
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
PORT_BLOCK = 20
# Test ports stay below Linux's ephemeral range (32768-60999 by default), where the kernel picks
# the source port of every outgoing connection: a test that binds a port there can find it taken.
PORT_FLOOR, PORT_CEILING = 10000, 32000
_next_port = PORT_FLOOR + (os.getpid() % 500) * 40


def port_block(blocks: int = 1) -> int:
    """A fresh port range start for one peer (peers bind the first free port of its block);
    ``blocks`` consecutive blocks for a test that needs a wider range."""
    global _next_port
    if _next_port + blocks * PORT_BLOCK > PORT_CEILING:
        _next_port = PORT_FLOOR
    start = _next_port
    _next_port += blocks * PORT_BLOCK
    return start


def peer_env(port_start: int | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "NET_HOST": "127.0.0.1",
        "NET_BIND": "127.0.0.1",
        "NET_DISCOVERY": "off",
        "NET_PORT_START": str(port_start if port_start is not None else port_block()),
        "NET_PORT_RANGE": str(PORT_BLOCK - 1),
        "NET_TEST_LIFETIME": env.get("NET_TEST_LIFETIME", "120"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class PeerProcess:
    """A peer running ``tests/peers/serve.py MODULE`` in its own OS process."""

    def __init__(self, *modules: str, env: dict[str, str] | None = None, ready_timeout: float = 20.0,
                 script: Path | None = None, args: list[str] | None = None, wrap: list[str] | None = None):
        self.env = env or peer_env()
        command = [*(wrap or []), sys.executable, str(script or PEERS / "serve.py"), *modules, *(args or [])]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env, cwd=str(ROOT), text=True)
        self.lines: list[str] = []
        # A thread reads stdout: select() on the pipe cannot see lines already in Python's buffer.
        self._stdout: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self.wait_for("READY ", ready_timeout)
        _, peer_id, port = ready.split()
        self.id = peer_id.encode()
        self.port = int(port)
        self.host = "127.0.0.1"
        self.address = (self.host, self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        try:
            for line in self.proc.stdout:
                self._stdout.put(line.rstrip("\n"))
        except (OSError, ValueError):
            pass
        self._stdout.put(None)

    def next_line(self, prefix: str, timeout: float) -> str | None:
        """The next stdout line starting with ``prefix``, or None if none came within ``timeout``.

        Unlike :meth:`wait_for` it leaves the process running: for tests that poll
        ("nothing yet? act, then look again").
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self._stdout.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                self._stdout.put(None)          # stays at end of file for later readers
                return None
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def wait_for(self, prefix: str, timeout: float = 20.0) -> str:
        """Read stdout until a line starting with ``prefix``; else stop the process and fail with its output."""
        line = self.next_line(prefix, timeout)
        if line is not None:
            return line
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            stderr = self.proc.stderr.read()[-3000:] if self.proc.stderr else ""
        except (OSError, ValueError):
            stderr = ""
        self.stop()
        raise AssertionError(f"peer process never printed {prefix!r}; stdout={self.lines} "
                             f"stderr={stderr}")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the process we started (by PID): close stdin, then SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=timeout / 2)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout / 2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        return self.proc.returncode

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- test hygiene: one reset of net's globals, and a check that nothing outlives a test --------------
def reset_net_state() -> None:
    """Forget what one test left in this process's net globals, so the next starts clean:
    the pool's outbound links (a test's key, TLS or limits live on in them) and the discovery cache."""
    from net.calls import client
    from net.discovery import peers as discovery
    client.POOL.close_all()
    discovery.clear_cache()


# Threads net starts on purpose and keeps past the end of a test (full-name patterns; "{port}" is the
# process peer's port, so a Peer(test=True) a test forgot to close is still caught).
PROCESS_WIDE_THREADS = {
    r"net-accept-{port}": "the process peer's listener: lives as long as the peer (the whole session)",
    r"net-idle-{port}": "the process peer's NET_IDLE_TIMEOUT sweeper: lives as long as the peer",
    r"net-loop-{port}": "the process peer's event loop for async handlers: kept once started",
    r"net-handler-{port}-\d+": "the process peer's handler workers: exit after 30 s idle (WorkerPool)",
    r"net-reader-{port}-\d+": "the process peer's spare readers: exit 1 s after their connection ends",
    r"net-deadlines": "the process-wide call deadline timer: exits after 30 s with nothing scheduled",
    r"net-heartbeat": "the pool's monitor: exits within 1 s of the pool's last link closing",
    r"net-stream-reaper": "cancels streams dropped without close(): process-wide, never exits",
    r"net-events-\d+": "the publisher's delivery workers: exit after 30 s idle (WorkerPool)",
    r"net-events-leases": "the publisher's janitor: exits once subscribers' leases expire (3 lease periods)",
    r"net-events-renew": "the subscriber's renewer: sleeps NET_LEASE, exits on a round with no subscription",
}
LEAK_GRACE = 2.0        # seconds a thread or process that is on its way out gets to finish


def _process_wide(thread: threading.Thread) -> bool:
    from net.serving import running
    peer = running.process_peer()
    server = getattr(peer, "server", None)
    if server is not None and thread is getattr(server.watchdog, "_thread", None):
        return True         # the process peer's watchdog sleeps when idle but stays
    port = str(server.port) if server is not None else None
    for pattern in PROCESS_WIDE_THREADS:
        if "{port}" in pattern:
            if port is None:
                continue
            pattern = pattern.replace("{port}", port)
        if re.fullmatch(pattern, thread.name):
            return True
    return False


def child_processes() -> dict[tuple[int, str], str]:
    """This process's live children, ``(pid, start time): command line``; empty without /proc (not Linux)."""
    found = {}
    me = str(os.getpid())
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:         # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()   # after "pid (comm) ": state, ppid, ...
        if fields[1] == me and fields[0] != "Z":         # a zombie has exited: nothing runs
            found[(int(entry), fields[19])] = command
    return found


class LeakCheck:
    """Snapshot threads and child processes now; :meth:`verify` fails on new ones still alive.

    A leaked thread or process makes later tests flaky and slow, and hides in a green run: so the
    test that left it behind fails, by name (modelled on python-zeroconf's ``verify_threads_ended``).
    """

    def __init__(self, grace: float = LEAK_GRACE):
        self.grace = grace
        self.threads = set(threading.enumerate())
        self.children = child_processes()

    def leaks(self) -> list[str]:
        threads = [t for t in threading.enumerate() if t not in self.threads and not _process_wide(t)]
        children = {key: command for key, command in child_processes().items() if key not in self.children}
        return ([f"thread {t.name!r}" for t in threads]
                + [f"process {pid} ({command})" for (pid, _), command in children.items()])

    def verify(self) -> None:
        deadline = time.monotonic() + self.grace
        while (leaks := self.leaks()) and time.monotonic() < deadline:
            time.sleep(0.02)        # poll: most leftovers are already on their way out
        if leaks:
            import pytest
            pytest.fail("left running after the test: " + ", ".join(leaks), pytrace=False)
