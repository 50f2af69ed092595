"""Drive the real ``net`` entry point (``python -m net``) in subprocesses on loopback."""
from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
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
    """A long-running command (``net serve``, ``net listen``, an example script) we read line by line."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
        self.env = env or peer_env()
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env, cwd=str(cwd or ROOT), text=True)
        self.lines: list[str] = []

    @classmethod
    def net(cls, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> "Running":
        return cls([sys.executable, "-m", "net", *args], env=env, cwd=cwd)

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        """Read stdout until a line containing ``needle``; fail with everything the process said."""
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.lines.append(line.rstrip("\n"))
                if needle in line:
                    return line.rstrip("\n")
        finally:
            selector.close()
        self.stop()
        raise AssertionError(f"never printed {needle!r}; stdout={self.lines} stderr={self.stderr[-3000:]}")

    @property
    def stderr(self) -> str:
        try:
            return self.proc.stderr.read() if self.proc.poll() is not None else ""
        except (OSError, ValueError):
            return ""

    def interrupt(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> tuple[int, str, str]:
        """Send ``sig`` to the process we started and collect the rest of its output."""
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "\n".join(self.lines) + "\n" + out, err

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


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
