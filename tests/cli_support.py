"""Drive the real ``net`` entry point (``python -m net``) in subprocesses on loopback."""
from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from support import ROOT, peer_env

# Every process started here stops by itself after this long, whatever happens to the test.
LIFETIME = "120"


def net_command(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m net ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "net", *args], env=env or peer_env(), cwd=str(cwd or ROOT),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class Running:
    """A long-running command (``net serve``, ``net listen``, an example script) we read line by line.

    Reader threads drain stdout and stderr (a selector on a buffered text pipe
    misses lines that arrived in the same chunk), so ``wait_for`` sees every line.
    """

    def __init__(self, command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        self.env = env or peer_env()
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env, cwd=str(cwd or ROOT), text=True)
        self.lines: list[str] = []          # stdout lines seen by wait_for
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout.put), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr.append),
                                          daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream: Any, sink: Any) -> None:
        try:
            for line in stream:
                sink(line.rstrip("\n"))
        except (OSError, ValueError):
            pass
        sink(None)

    @classmethod
    def net(cls, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Running:
        return cls([sys.executable, "-m", "net", *args], env=env, cwd=cwd)

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        """Read stdout until a line containing ``needle``; fail with everything the process said."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._stdout.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if needle in line:
                return line
        self.stop()
        raise AssertionError(f"never printed {needle!r}; stdout={self.lines} stderr={self.stderr[-3000:]}")

    @property
    def stderr(self) -> str:
        return "\n".join(line for line in self._stderr if line is not None)

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        """Wait for the process to exit; its exit code, all of its stdout and its stderr."""
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        while True:
            try:
                line = self._stdout.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.proc.returncode, "\n".join(self.lines), self.stderr

    def interrupt(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> tuple[int, str, str]:
        """Send ``sig`` to the process we started and collect the rest of its output."""
        self.proc.send_signal(sig)
        return self.finish(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        for reader in self._readers:
            reader.join(timeout=5)


def serve(*modules: str, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> tuple[Running, str, int]:
    """Start ``net serve MODULES`` and return it with its id and port once it serves."""
    running = Running.net("serve", *modules, "--duration", LIFETIME, *extra, env=env)
    if "--json" in extra:
        started = json.loads(running.wait_for('"serving"'))
        return running, started["serving"], started["port"]
    line = running.wait_for("net: serving ")
    words = line.split()
    peer_id, address = words[2], words[4]
    return running, peer_id, int(address.rsplit(":", 1)[1])
