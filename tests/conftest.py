"""Test-wide set-up: the pytest process's own peer stays on loopback, in its own port block."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))  # handler modules, same names as in peers

from support import PORT_BLOCK, port_block  # noqa: E402

os.environ["NET_HOST"] = "127.0.0.1"
os.environ["NET_BIND"] = "127.0.0.1"
os.environ["NET_DISCOVERY"] = "off"     # never scan the real LAN from the root namespace (on_host still works)
os.environ["NET_PORT_START"] = str(port_block())
os.environ["NET_PORT_RANGE"] = str(PORT_BLOCK - 1)

import pytest  # noqa: E402

from support import PeerProcess  # noqa: E402


@pytest.fixture
def spawn():
    """Start peer processes (``spawn("basic")``); every one is stopped by PID at teardown."""
    started: list[PeerProcess] = []

    def start(*modules: str, **kwargs) -> PeerProcess:
        process = PeerProcess(*modules, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
