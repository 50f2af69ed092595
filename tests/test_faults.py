"""Faults on loopback: a callee killed or frozen mid-call, restarted on its port. Nothing hangs."""
import concurrent.futures
import signal
import time

import basic
import pytest
import trusty
from support import peer_env

import net


def in_flight(p, call):
    """Start ``call`` in a thread; return its future once the callee has started running it."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    p.wait_for("NAPPING", timeout=10)
    return future


def test_sigkill_mid_call_raises_peer_unreachable_at_once(spawn):
    p = spawn("basic", "trusty")
    future = in_flight(p, lambda: trusty.nap(60, peer=p.id))      # no deadline at all
    killed = time.monotonic()
    p.signal(signal.SIGKILL)
    with pytest.raises(net.PeerUnreachable):
        future.result(timeout=10)
    assert time.monotonic() - killed < 5


def test_sigkill_with_a_deadline_is_typed_within_the_deadline(spawn):
    p = spawn("basic", "trusty")

    def call():
        with net.timeout(3):
            return trusty.nap(60, peer=p.id)

    future = in_flight(p, call)
    p.signal(signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises((net.PeerUnreachable, net.Timeout)):
        future.result(timeout=10)
    assert time.monotonic() - started < 4


@pytest.mark.slow
def test_a_call_longer_than_the_heartbeat_on_a_live_peer_is_kept_alive(spawn, monkeypatch):
    monkeypatch.setattr(net, "HEARTBEAT", 1.0)
    p = spawn("basic", "trusty")
    assert trusty.nap(2.5, peer=p.id) == p.pid      # PONGs keep it alive: no false "stopped answering"


def test_frozen_callee_is_detected_by_heartbeats(spawn, monkeypatch):
    monkeypatch.setattr(net, "HEARTBEAT", 2.0)   # above a loaded machine's stalls
    p = spawn("basic", "trusty")
    future = in_flight(p, lambda: trusty.nap(60, peer=p.id))
    p.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        with pytest.raises(net.PeerUnreachable, match="stopped answering"):
            future.result(timeout=15)
        assert time.monotonic() - stopped < 2.0 + 3
    finally:
        p.signal(signal.SIGCONT)
    assert basic.add(1, 1, peer=p.id) == 2          # thawed: reachable again on a new connection


def test_a_frozen_callee_is_detected_even_when_every_call_times_out_first(spawn, monkeypatch):
    """Calls that give up before NET_HEARTBEAT must not restart the silence clock for the next one."""
    monkeypatch.setattr(net, "HEARTBEAT", 2.0)
    p = spawn("basic", "trusty")
    assert basic.add(1, 1, peer=p.id) == 2
    p.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        errors = []
        while time.monotonic() - stopped < 8 and not any(isinstance(e, net.PeerUnreachable) for e in errors):
            try:
                with net.timeout(0.5):
                    basic.add(1, 1, peer=p.id)
            except (net.Timeout, net.PeerUnreachable) as exc:
                errors.append(exc)
        unreachable = [e for e in errors if isinstance(e, net.PeerUnreachable)]
        assert unreachable and "stopped answering" in str(unreachable[0]), errors
        assert time.monotonic() - stopped < 2.0 + 3
    finally:
        p.signal(signal.SIGCONT)
    assert basic.add(1, 1, peer=p.id) == 2


def test_peer_killed_and_restarted_on_the_same_port_is_reconnected(spawn):
    env = peer_env()
    first = spawn("basic", env=env)
    assert basic.add(1, 1, peer=first.id) == 2     # a pooled connection now exists
    first.signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    second = spawn("basic", env=env)
    assert second.port == first.port
    assert basic.whoami(peer=first.id)["pid"] == second.pid    # same id, new process, no error


def test_keyed_peer_restarted_is_reconnected_with_a_fresh_handshake(spawn, monkeypatch):
    key = "correct horse battery staple 42"
    monkeypatch.setattr(net, "SECRET", key)
    env = peer_env(NET_SECRET=key)
    first = spawn("basic", env=env)
    assert basic.add(1, 1, peer=first.id) == 2
    first.stop()
    second = spawn("basic", env=env)
    assert basic.whoami(peer=first.id)["pid"] == second.pid
