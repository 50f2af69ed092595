"""Events between real OS processes on loopback: order, isolation from bad subscribers, restarts."""
from __future__ import annotations

import itertools
import logging
import signal
import threading
import time

import pytest

import net
from net import events
from support import peer_env

import events_pub

_names = itertools.count()


def unique(prefix: str) -> str:
    """A fresh event name per test: the pytest process's publisher table outlives each test."""
    return f"{prefix}_{next(_names)}_{time.monotonic_ns()}"


def publisher_hook(name: str):
    @net.event(name)
    def trigger(*args, **kwargs):
        return args, kwargs
    return trigger


def me() -> str:
    peer = net.Peer()
    return f"{peer.host}:{peer.port}"


def subscriber(spawn, name: str, publisher: str, mode: str = "good", env=None, **extra):
    env = env or peer_env()
    env.update({"NET_TEST_EVENT": name, "NET_TEST_PUBLISHER": publisher, "NET_TEST_MODE": mode,
                **extra})
    return spawn("events_sub", env=env)


def received(process, name: str, count: int | None = None, until=None, timeout: float = 30.0) -> list:
    """Values of the EVENT lines a subscriber prints: ``count`` of them, or up to value ``until``."""
    values = []
    deadline = time.monotonic() + timeout
    prefix = f"EVENT {name} "
    while count is None or len(values) < count:
        line = process.wait_for(prefix, max(0.1, deadline - time.monotonic()))
        value = line[len(prefix):]
        if until is not None and value == str(until):
            break
        values.append(int(value))
    return values


def records(name: str) -> dict:
    return dict(net.Peer().SUBSCRIPTIONS.get(events.identity.key(name), {}))


def wait_until(condition, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_spec_example_hook_reaches_the_subscribed_function():
    """The spec's doing_something example, publisher and subscriber in this process."""
    name = unique("doing_something")
    got = []
    done = threading.Event()

    @net.event(name)
    def imDoingSomething(*args, **kwargs):
        return args, kwargs

    @net.subscribe(name, net.Peer().id)          # positional peer, as in the spec's examples
    def handleEvent(whatPeerBDid, note=None):
        got.append((whatPeerBDid, note))
        if whatPeerBDid == 9:
            done.set()

    try:
        for i in range(0, 10):
            assert imDoingSomething(i, note="n") == 1      # queued for one subscriber
        assert done.wait(10)
        assert got == [(i, "n") for i in range(10)]
        assert handleEvent("local") is None and got[-1] == ("local", None)   # still a plain function
    finally:
        handleEvent.unsubscribe()
    assert wait_until(lambda: not records(name), what="unsubscribe to reach the publisher")


def test_event_function_must_return_args_and_kwargs():
    @net.event(unique("bad_shape"))
    def bad(value):
        return value

    with pytest.raises(TypeError, match="must return \\(args, kwargs\\)"):
        bad(3)

    @net.event(unique("unsendable"))
    def unsendable(*args, **kwargs):
        return args, kwargs

    with pytest.raises(TypeError, match="cannot send a object"):
        unsendable(object())


def test_peers_argument_forms():
    peer = net.Peer()
    entry = {"group": "None", "host": peer.host, "port": peer.port, "hub": False}
    address = (peer.host, peer.port)
    for value in (peer.id, peer.id.decode(), [peer.id], entry, [entry], address, f"{peer.host}:{peer.port}",
                  {"peers": {peer.id: entry}, "None": [peer.id]}):
        assert events._looks_like_peers(value), value
        assert events.peer_addresses(value) == [address], value
    assert not events._looks_like_peers(["group1", "group2"])
    assert not events._looks_like_peers("group1")
    with pytest.raises(ValueError, match="mixes group names and peers"):
        net.subscribe("x", ["group1", peer.id])
    with pytest.raises(ValueError, match="not both"):
        net.subscribe("x", groups=["g"], peers=[peer.id])
    with pytest.raises(ValueError, match="cannot subscribe"):
        net.subscribe("x", peers=[3.5])


def test_three_subscribers_get_100_events_in_order(spawn):
    name = unique("ordered")
    trigger = publisher_hook(name)
    subs = [subscriber(spawn, name, me()) for _ in range(3)]
    assert len(records(name)) == 3          # subscribed before READY: the decorator told us
    for i in range(100):
        assert trigger(i, extra={"i": i}) == 3
    for process in subs:
        assert received(process, name, count=100) == list(range(100))


def test_dead_crashing_and_slow_subscribers_do_not_hurt_a_good_one(spawn, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="net")
    monkeypatch.setattr(net, "EVENT_QUEUE", 20)         # records made from now on queue 20 at most
    name = unique("mixed")
    trigger = publisher_hook(name)
    good = subscriber(spawn, name, me())
    crashing = subscriber(spawn, name, me(), mode="crash")
    slow = subscriber(spawn, name, me(), mode="slow", NET_TEST_SLOW="0.2")
    dead = subscriber(spawn, name, me())
    table = records(name)
    assert {good.id, crashing.id, slow.id, dead.id} <= set(table)
    dead.proc.kill()
    dead.proc.wait(10)

    elapsed = 0.0
    good_values, crashing_values = [], []
    for chunk in range(10):         # paced by the good subscriber, so only the slow one overflows
        started = time.perf_counter()
        for i in range(chunk * 10, chunk * 10 + 10):
            trigger(i)
            assert len(table[slow.id].queue) <= 20       # bounded, never grows
        elapsed += time.perf_counter() - started
        good_values += received(good, name, count=10)
        crashing_values += received(crashing, name, count=10)
    # 100 events at 0.2 s each would take the slow subscriber 20 s: the publisher never waits for it.
    assert elapsed < 2.0, f"100 trigger calls took {elapsed:.2f}s"
    assert good_values == list(range(100))
    assert crashing_values == list(range(100))
    slow_values = received(slow, name, until=99)
    assert slow_values == sorted(set(slow_values)) and len(slow_values) < 99

    wait_until(lambda: dead.id not in records(name), what="the dead subscriber to be pruned")
    assert any(entry["id"] == dead.id for entry in net.Peer().STALE)
    now = records(name)
    assert crashing.id in now and good.id in now and slow.id in now
    wait_until(lambda: now[crashing.id].failed == 100, what="the crashes to be acknowledged")
    assert now[slow.id].dropped > 0
    messages = [r.getMessage() for r in caplog.records]
    wait_until(lambda: any("too slow" in m and slow.id.decode() in m
                           for m in [r.getMessage() for r in caplog.records]), what="the drop log")
    assert any("raised in its handlers" in m and crashing.id.decode() in m for m in messages)
    assert any(dead.id.decode() in m and "dropped from" in m for m in messages)


def test_publisher_restart_gets_its_subscribers_back_by_lease_renewal(spawn):
    name = unique("restart_pub")
    env = peer_env()
    first = spawn("events_pub", env=env)
    sub = subscriber(spawn, name, f"127.0.0.1:{first.port}", NET_LEASE="0.3")

    def subscribed(publisher) -> bool:
        table = net.subscription_handler("list", peer=publisher.id)
        return any(entry["port"] == sub.port for entry in table.get(name, []))

    assert subscribed(first)
    events_pub.fire(name, [1, 2], peer=first.id)
    assert received(sub, name, count=2) == [1, 2]
    first.stop()
    second = spawn("events_pub", env=env)
    assert second.port == first.port
    wait_until(lambda: subscribed(second), timeout=20, what="the renewed lease")
    events_pub.fire(name, [3, 4, 5], peer=second.id)
    assert received(sub, name, count=3) == [3, 4, 5]


def test_restarted_subscriber_gets_no_duplicates_and_nothing_of_its_predecessor(spawn):
    name = unique("restart_sub")
    trigger = publisher_hook(name)
    env = peer_env()
    env.update({"NET_TEST_EVENT": name, "NET_TEST_PUBLISHER": me(), "NET_TEST_MODE": "slow",
                "NET_TEST_SLOW": "0.3"})
    old = spawn("events_sub", env=env)
    for i in range(10):
        trigger(i)
    assert received(old, name, count=1) == [0]
    old.signal(signal.SIGKILL)                  # dies with events queued and a batch in flight
    old.proc.wait(10)

    env = dict(env, NET_TEST_MODE="good")
    new = spawn("events_sub", env=env)
    assert new.port == old.port
    assert [r.port for r in records(name).values()] == [new.port]
    for i in range(100, 120):
        trigger(i)
    trigger("end")
    assert received(new, name, until="end") == list(range(100, 120))

    # A batch queued for the previous process on this address is refused, not handled.
    answer = net.subscription_handler(
        "deliver", {"to": "an-earlier-process", "lease": "x", "route": me(), "seq": 1},
        [[name, [999], {}]], peer=new.id)
    assert answer == {"unknown": True}
