"""A link cut between two lab hosts: typed error within the deadline, success once the link returns.

The callee and the caller run in separate network namespaces (tests/netlab.py);
the cut is the callee's bridge port going down: a silent blackhole, as when a
cable is pulled (this kernel has no netem, see /work/shared/NETWORK-LAB.md).
Nothing is restarted between the cut and the recovery.
"""
import json
import time

import pytest
from support import PEERS

pytestmark = pytest.mark.netns

HEARTBEAT = 2.0     # above a loaded machine's scheduling stalls


def call(caller, callee, fn, *args, timeout=None):
    caller.proc.stdin.write(json.dumps({"host": callee.host, "port": callee.port, "fn": fn,
                                        "args": list(args), "timeout": timeout}) + "\n")
    caller.proc.stdin.flush()
    line = caller.wait_for("RESULT ", 30)
    return json.loads(line.split(" ", 1)[1])


def until_ok(caller, callee, within=15.0):
    """Call add(2, 3) until it succeeds (the link is back); the first success, bounded in time."""
    deadline = time.monotonic() + within
    while True:
        result = call(caller, callee, "add", 2, 3, timeout=2)
        if result["error"] is None or time.monotonic() > deadline:
            return result


@pytest.fixture
def pair(netlab):
    lab = netlab(hosts=2)
    callee = lab.spawn(1, "basic", "trusty")
    caller = lab.spawn(2, script=PEERS / "lab_caller.py",
                       env=lab.env(2, NET_HEARTBEAT=str(HEARTBEAT), NET_CONNECT_TIMEOUT="1"))
    assert call(caller, callee, "add", 1, 2)["value"] == 3
    return lab, callee, caller


def test_link_cut_gives_timeout_within_the_deadline_then_the_same_connection_recovers(pair):
    lab, callee, caller = pair
    lab.unplug(1)
    try:
        result = call(caller, callee, "add", 1, 1, timeout=1.0)
        assert result["error"] == "Timeout" and result["elapsed"] < 1.0 + 1.0, result
    finally:
        lab.plug(1)
    assert until_ok(caller, callee)["value"] == 5


@pytest.mark.slow
def test_link_cut_without_a_deadline_is_detected_by_heartbeats(pair):
    lab, callee, caller = pair
    lab.unplug(1)
    try:
        result = call(caller, callee, "nap", 0.1)                # no deadline at all
        assert result["error"] == "PeerUnreachable" and "stopped answering" in result["message"], result
        assert result["elapsed"] < HEARTBEAT + 2.5, result
        result = call(caller, callee, "add", 1, 1)               # a fresh dial into the blackhole
        assert result["error"] in ("Timeout", "PeerUnreachable") and result["elapsed"] < 1 + 1.5, result
    finally:
        lab.plug(1)
    assert until_ok(caller, callee)["value"] == 5
