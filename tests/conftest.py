"""Test-wide set-up: the pytest process's own peer stays on loopback, in its own port block."""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))  # handler modules, same names as in peers

from support import PORT_BLOCK, port_block

os.environ["NET_HOST"] = "127.0.0.1"
os.environ["NET_BIND"] = "127.0.0.1"
os.environ["NET_DISCOVERY"] = "off"     # never scan the real LAN from the root namespace (on_host still works)
os.environ["NET_PORT_START"] = str(port_block())
os.environ["NET_PORT_RANGE"] = str(PORT_BLOCK - 1)

import pytest
from support import LeakCheck, PeerProcess, reset_net_state


@pytest.fixture(autouse=True)
def clean_process():
    """Each test starts from fresh net globals and fails if it leaves a thread or child process behind.

    Set up before (so torn down after) every other function-scoped fixture: the check sees what
    the test's own clean-up (``spawn``, ``netlab``...) did not stop.
    """
    check = LeakCheck()
    reset_net_state()
    yield
    reset_net_state()
    check.verify()


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


def _lab_factory():
    from netlab import Lab, skip_reason
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    labs = []

    def build(hosts: int = 2) -> Lab:
        lab = Lab(hosts)
        labs.append(lab)
        return lab

    return build, labs


@pytest.fixture
def netlab():
    """Build network-namespace labs (``lab = netlab(hosts=3)``, see tests/netlab.py).

    Skipped with the reason when namespaces can't be made (not root, not
    Linux); every lab is torn down after the test, even when it fails.
    """
    yield from _labs()


@pytest.fixture(scope="module")
def netlab_module():
    """Like ``netlab``, but the labs live for the whole test module (cheaper for many tests)."""
    yield from _labs()


def _labs():
    build, labs = _lab_factory()
    try:
        yield build
    finally:
        for lab in labs:
            lab.close()
