"""Events under hostile subscribers: what a remote party can make a publisher hold, and who waits.

Real peer processes on 127.0.0.1. Hostile subscribe requests are sent from this process with
net's own client, built like ``payloads.subscribe_request``. A publisher's memory is read from
/proc/<pid>/status; its trigger latency is timed by the publisher itself (tests/peers/events_probe.py).
An unreachable subscriber is a listening socket here whose accept queue is full (``listen(0)``,
never accepted, filled): a connect to it hangs until the dialler's timeout, as on a dead host.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import select
import socket
import time

import events_probe
import events_pub
import pytest
from support import peer_env
from test_events import publisher_hook, received, records, unique, wait_until

import net
from net.calls import client
from net.events import publisher as events, shared
from net.wire import ids, payloads

FLOOD_REQUESTS = 8
FLOOD_NAMES = 50_000
FLOOD_ROUNDS = 10


def status_kib(pid: int, field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of process ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def fake(i: int, events: list[str], lease: float = 30.0, port: int = 9, host: str = "127.0.0.1",
         instance: str = "fake-instance") -> dict:
    """A subscribe request for a subscriber that does not exist (nothing listens on ``port``)."""
    return payloads.subscribe_request(f"fake-{i}".encode(), host, port, instance, f"fake-route-{i}",
                                      events, lease)


def subscribe(p, request: dict, timeout: float = 30.0):
    return client.call(p.host, p.port, ids.SUBSCRIPTION_KEY, payloads.subscribe_args(request), {},
                       timeout=timeout)


def refusal(p, request: dict) -> str:
    """The publisher's refusal of ``request``: its ValueError's message (fails if it was accepted)."""
    with pytest.raises(net.RemoteError) as refused:
        subscribe(p, request)
    assert refused.value.remote_type == "ValueError", refused.value
    return refused.value.remote_message


def table(p) -> dict:
    return net.subscription_handler("list", peer=p.id)


def records_held(p) -> dict:
    """What a publisher started with events_probe holds: leases, (lease, event) pairs, names."""
    return events_probe.held(peer=p.id)


class _Here:
    """This process's own peer, addressed like a spawned one."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port


@contextlib.contextmanager
def unreachable(count: int):
    """``count`` (host, port) on 127.0.0.1 whose connects hang: accept queue full, never accepted."""
    sockets: list[socket.socket] = []
    try:
        addresses = []
        for _ in range(count):
            listener = socket.socket()
            sockets.append(listener)
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            address = listener.getsockname()
            filler = socket.socket()
            sockets.append(filler)
            filler.settimeout(5)
            filler.connect(address)         # takes the one place in the accept queue
            addresses.append(address)
        probes = []
        for address in addresses:
            probe = socket.socket()
            sockets.append(probe)
            probe.setblocking(False)
            probe.connect_ex(address)
            probes.append(probe)
        _, writable, _ = select.select([], probes, [], 0.3)
        assert not writable, "a connect to a full accept queue completed: the test cannot make unreachable peers"
        yield addresses
    finally:
        for sock in sockets:
            sock.close()


def flood(p, requests: list[dict]) -> list:
    """Send ``requests`` at once (a thread each); each one's outcome: the reply, or the error raised."""
    def one(request):
        try:
            return subscribe(p, request, timeout=60)
        except net.NetError as exc:
            return exc
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


# -- 4. subscribe floods ---------------------------------------------------------------------------
def test_a_flood_of_huge_subscribe_requests_is_refused_costs_no_memory_and_never_delays_a_trigger(spawn):
    """8 requests naming 50,000 events each (~3 MiB): were held (+381 MiB) and stalled triggers 1.74 s."""
    pub = spawn("events_pub", "events_probe")
    name = unique("tick")
    sub = spawn("events_sub", env=peer_env(NET_TEST_EVENT=name, NET_TEST_PUBLISHER=f"127.0.0.1:{pub.port}"))
    events_pub.fire(name, [-1], peer=pub.id)
    assert received(sub, name, count=1) == [-1]
    rss_before = status_kib(pub.pid, "VmRSS")
    requests = [fake(i, [f"flood_{i}_{n:05d}" for n in range(FLOOD_NAMES)]) for i in range(FLOOD_REQUESTS)]
    events_probe.start_ticking(name, 0.002, 20_000, peer=pub.id)
    started = time.monotonic()
    outcomes: list = []
    for rounds in range(1, FLOOD_ROUNDS + 1):          # 80 requests, 4 million names; triggers all along
        outcomes += flood(pub, requests)
        if rounds == 1:
            rss_first = status_kib(pub.pid, "VmRSS")
    took = time.monotonic() - started
    ticks = events_probe.stop_ticking(name, peer=pub.id)
    grown = (status_kib(pub.pid, "VmRSS") - rss_before) / 1024
    peak = (status_kib(pub.pid, "VmHWM") - rss_before) / 1024
    later = (status_kib(pub.pid, "VmRSS") - rss_first) / 1024
    print(f"\n{rounds} floods of {FLOOD_REQUESTS} x {FLOOD_NAMES:,} names in {took:.2f}s: publisher +{grown:.1f} MiB "
          f"(peak +{peak:.1f} MiB; {later:+.1f} MiB after the first flood); {ticks['count']} triggers meanwhile, "
          f"slowest {ticks['max'] * 1e3:.2f} ms, median {ticks['p50'] * 1e6:.0f} us")
    for outcome in outcomes:
        assert isinstance(outcome, net.RemoteError), f"a {FLOOD_NAMES:,}-name lease was accepted: {outcome}"
        assert outcome.remote_type == "ValueError"
        assert f"{FLOOD_NAMES:,} events" in outcome.remote_message
        assert f"{events.MAX_LEASE_EVENTS:,}" in outcome.remote_message
    assert records_held(pub)["pairs"] == 1          # only the real subscriber's lease
    # What is left is the allocator keeping what decoding 8 requests at once took (the call path's,
    # bounded by its intake limits): the table keeps nothing, so 10 floods cost what one does.
    assert grown < 32, f"the publisher grew by {grown:.1f} MiB"
    assert ticks["count"] > 10 and ticks["max"] < 0.05, ticks
    events_pub.fire(name, ["end"], peer=pub.id)     # the real subscriber got every tick, in order
    assert received(sub, name, until="end") == list(range(ticks["count"]))


def test_leases_over_the_bytes_per_lease_are_refused():
    """Few names but long ones, or a long route / id / host: the bytes of a lease are bounded too."""
    p = net.Peer()
    me = (p.host, p.port)
    size = events.MAX_LEASE_BYTES
    long_names = [f"{n:04d}" + "n" * 1000 for n in range(size // 1000 + 1)]     # under the name count
    assert len(long_names) <= events.MAX_LEASE_EVENTS
    for request in (fake(0, long_names), {**fake(1, ["e"]), "route": "r" * (size + 1)},
                    {**fake(2, ["e"]), "id": b"i" * (size + 1)}, {**fake(3, ["é" * (size // 2 + 1)])}):
        message = refusal(_Here(*me), request)
        assert "bytes" in message and f"{size:,}" in message, message
    assert not any(r.route.startswith("fake-route-") for r in events.PUBLISHER.records.values()), "held"


def lease_bytes(request: dict) -> int:
    """The bytes of text a lease holds, as the publisher counts them (MAX_LEASE_BYTES)."""
    texts = [request["host"], request["route"], request["instance"], *request["events"]]
    return len(request["id"]) + sum(len(text.encode()) for text in texts)


@pytest.mark.parametrize("per_lease, length", [(1024, 22), (500, 128)], ids=["names", "bytes"])
def test_leases_within_the_bounds_are_held_up_to_the_table_budget_and_never_delay_a_trigger(spawn, per_lease,
                                                                                            length):
    """Distinct names, as many a lease may hold, past the table's budget: of names (1,024 short names
    a lease) or of bytes (500 names of 128 bytes)."""
    pub = spawn("events_pub", "events_probe")
    name = unique("tick")
    rss_before = status_kib(pub.pid, "VmRSS")

    def request(i: int) -> dict:
        return fake(i, [f"lease{i:03d}_event_{n:04d}".ljust(length, "x") for n in range(per_lease)])

    size = lease_bytes(request(0))
    assert per_lease <= events.MAX_LEASE_EVENTS and size <= events.MAX_LEASE_BYTES
    fit = min(events.MAX_TABLE_EVENTS // per_lease, events.MAX_TABLE_BYTES // size, events.MAX_SUBSCRIBERS)
    leases = fit + 16
    events_probe.start_ticking(name, 0.002, 50_000, peer=pub.id)
    started = time.monotonic()
    for i in range(leases):
        subscribe(pub, request(i))      # all dormant: the oldest makes room for the next, none refused
    took = time.monotonic() - started
    ticks = events_probe.stop_ticking(name, peer=pub.id)
    held = records_held(pub)
    grown = (status_kib(pub.pid, "VmRSS") - rss_before) / 1024
    print(f"\n{leases} leases x {per_lease} names of {length} B in {took:.2f}s: publisher holds {held}, "
          f"+{grown:.1f} MiB; {ticks['count']} triggers meanwhile, slowest {ticks['max'] * 1e3:.2f} ms")
    assert held == {"leases": fit, "pairs": fit * per_lease, "names": fit * per_lease}, held
    assert grown < 64, f"the publisher grew by {grown:.1f} MiB"
    assert ticks["count"] > 10 and ticks["max"] < 0.05, ticks
    listed = table(pub)
    assert {entry["id"] for entries in listed.values() for entry in entries} == {
        f"fake-{i}".encode() for i in range(leases - fit, leases)}          # the newest ones


def test_a_subscriber_whose_lease_is_refused_logs_why(spawn):
    pub = spawn("events_pub")
    prefix = unique("many")
    count = events.MAX_LEASE_EVENTS + 1
    sub = spawn("events_many_sub", env=peer_env(NET_TEST_EVENT=prefix, NET_TEST_EVENT_COUNT=str(count),
                                                NET_TEST_PUBLISHER=f"127.0.0.1:{pub.port}"),
                ready_timeout=60)
    logged = [line for line in sub.lines if line.startswith("LOG ")]
    assert any("could not subscribe" in line and "refused" in line and f"{count:,} events" in line
               and f"{events.MAX_LEASE_EVENTS:,}" in line for line in logged), logged
    held = {entry["port"] for entries in table(pub).values() for entry in entries}
    assert held == {sub.port}           # the lease it had before the one too many is kept
    events_pub.fire(f"{prefix}_0", [7], peer=pub.id)
    assert sub.wait_for(f"EVENT {prefix}_0 ", 10) == f"EVENT {prefix}_0 7"


def test_a_full_table_refuses_new_leases_clearly_and_makes_room_only_by_dormant_ones(monkeypatch):
    """At MAX_SUBSCRIBERS a lease that has had events is never displaced; one that never had any is."""
    monkeypatch.setattr(events, "PUBLISHER", events.Publisher())    # this process's own holds earlier tests'
    monkeypatch.setattr(events, "MAX_SUBSCRIBERS", 4)
    name, idle = unique("live"), unique("never_published")
    trigger = publisher_hook(name)
    p = net.Peer()
    here = _Here(p.host, p.port)

    def ours(i: int, names: list[str]) -> dict:      # deliveries to this process are taken (and ignored)
        return payloads.subscribe_request(p.id, p.host, p.port, shared.INSTANCE, f"route-{i}", names, 30.0)

    try:
        for i in range(4):
            subscribe(here, ours(i, [name]))
        assert trigger(0) == 4
        held = list(events.PUBLISHER.records.values())
        assert len(held) == 4
        wait_until(lambda: all(r.delivered == 1 for r in held), what="the deliveries")
        assert list(records(name)) == [p.id]        # one id, four routes: SUBSCRIPTIONS shows one of them
        message = refusal(here, ours(9, [idle]))
        assert "already holds 4 leases" in message and "MAX_SUBSCRIBERS" in message, message
        subscribe(here, ours(0, []))                     # one leaves: room for a lease nobody publishes to
        subscribe(here, ours(5, [idle]))
        subscribe(here, ours(6, [idle]))                 # full again: the dormant route-5 makes room
        routes = sorted(r.route for r in events.PUBLISHER.records.values())
        assert routes == ["route-1", "route-2", "route-3", "route-6"]
        assert any(entry["host"] == p.host and "never had an event" in entry["reason"]
                   for entry in net.Peer().STALE)
    finally:
        for i in range(10):
            events.PUBLISHER.subscribe(ours(i, []))


# -- 5. permanent fake leases ----------------------------------------------------------------------
LEASE = 0.2                 # the publisher's NET_LEASE: leases are capped at 10 of these


def listed(p, event: str) -> int:
    table = client.call(p.host, p.port, ids.SUBSCRIPTION_KEY, ["list"], {}, timeout=5)
    return len(table.get(event, []))


def test_a_lease_asked_for_ever_is_capped_and_expires(spawn):
    p = spawn("events_pub", env=peer_env(NET_LEASE=str(LEASE)))
    event = "nobody-publishes-this"
    request = payloads.subscribe_request(b"fake", "127.0.0.1", 9, "fake-instance", "fake-route",
                                         [event], 1e12)
    answer = client.call(p.host, p.port, ids.SUBSCRIPTION_KEY, payloads.subscribe_args(request), {}, timeout=5)
    assert answer["expires_in"] <= 3 * 10 * LEASE + 1e-9, answer
    assert listed(p, event) == 1
    deadline = time.monotonic() + 3 * 10 * LEASE + 5
    while listed(p, event) and time.monotonic() < deadline:
        time.sleep(0.1)     # polling the publisher's table, bounded by the deadline
    assert listed(p, event) == 0, "a lease asked for 1e12 s was never pruned"


def test_fake_leases_for_an_event_nobody_publishes_expire_and_never_lock_subscribers_out(spawn):
    """4,096 leases of 1e12 s: were held for ever, every real subscriber refused ("already serves 4096")."""
    lease = LEASE
    pub = spawn("events_pub", "events_probe", env=peer_env(NET_LEASE=str(lease)))
    nobody = unique("nobody_publishes")
    rss_before = status_kib(pub.pid, "VmRSS")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: subscribe(pub, fake(i, [nobody], lease=1e12, port=10_000 + i)),
                                range(events.MAX_SUBSCRIBERS)))
    sent = time.monotonic() - started
    filled = time.monotonic()
    assert records_held(pub)["leases"] == events.MAX_SUBSCRIBERS
    grown = (status_kib(pub.pid, "VmRSS") - rss_before) / 1024
    longest = events.LEASES_UNTIL_EXPIRY * events.MAX_LEASE_PERIODS * lease
    assert all(a["expires_in"] == pytest.approx(longest) for a in answers), answers[0]

    name = unique("real")
    sub = spawn("events_sub", env=peer_env(NET_TEST_EVENT=name, NET_TEST_PUBLISHER=f"127.0.0.1:{pub.port}",
                                           NET_LEASE=str(lease)))
    assert any(entry["port"] == sub.port for entry in table(pub).get(name, [])), "the real subscriber was refused"
    events_pub.fire(name, [1, 2, 3], peer=pub.id)
    assert received(sub, name, count=3) == [1, 2, 3]

    wait_until(lambda: nobody not in table(pub), timeout=longest + 10, what="the fake leases to expire")
    expired = time.monotonic() - filled
    print(f"\n{events.MAX_SUBSCRIBERS} fake leases sent in {sent:.2f}s (+{grown:.1f} MiB), "
          f"all expired {expired:.1f}s later (longest lease {longest:g}s)")
    assert records_held(pub)["leases"] == 1
    events_pub.fire(name, [4], peer=pub.id)         # the real one renews and stays
    assert received(sub, name, count=1) == [4]


def test_a_subscriber_with_a_longer_lease_than_the_cap_renews_in_time(spawn):
    """The publisher grants at most MAX_LEASE_PERIODS of its own NET_LEASE; the subscriber renews by it."""
    pub = spawn("events_pub", env=peer_env(NET_LEASE="0.1"))
    name = unique("capped")
    sub = spawn("events_sub", env=peer_env(NET_TEST_EVENT=name, NET_TEST_PUBLISHER=f"127.0.0.1:{pub.port}",
                                           NET_LEASE="60"))
    longest = events.LEASES_UNTIL_EXPIRY * events.MAX_LEASE_PERIODS * 0.1
    deadline = time.monotonic() + 2 * longest + 1
    value = 0
    while time.monotonic() < deadline:          # past two lease lifetimes: renewed, never dropped
        assert any(entry["port"] == sub.port for entry in table(pub).get(name, [])), "the lease lapsed"
        events_pub.fire(name, [value], peer=pub.id)
        assert received(sub, name, count=1) == [value]
        value += 1
    assert value > 5


# -- 6. unreachable subscribers --------------------------------------------------------------------
UNREACHABLE = 20
HEALTHY_DELAY = 0.1


def test_unreachable_subscribers_never_delay_a_healthy_one(spawn):
    """20 subscribers whose connects hang (3 s each) shared the 5 delivery threads: a healthy one's
    events arrived up to 11.7 s late. Now it gets each within HEALTHY_DELAY, connected or not."""
    pub = spawn("events_pub")
    name = unique("healthy")
    where = f"127.0.0.1:{pub.port}"
    connected = spawn("events_timed_sub", env=peer_env(NET_TEST_EVENT=name, NET_TEST_PUBLISHER=where))
    events_pub.fire(name, ["warm-up"], peer=pub.id)     # its connection exists before the others come
    connected.wait_for(f"EVENT {name} 'warm-up' ", 10)
    newcomer = spawn("events_timed_sub", env=peer_env(NET_TEST_EVENT=name, NET_TEST_PUBLISHER=where))
    with unreachable(UNREACHABLE + 1) as addresses:
        shared_address = addresses.pop()
        for i, (host, port) in enumerate(addresses):
            subscribe(pub, fake(i, [name], host=host, port=port))
        for i in range(10):                             # ten leases behind one address: one dial
            subscribe(pub, fake(100 + i, [name], host=shared_address[0], port=shared_address[1]))
        assert len(table(pub)[name]) == UNREACHABLE + 12
        started = time.monotonic()
        delays: list[float] = []
        window = net.CONNECT_TIMEOUT + 1                # every dial to the unreachable ones hangs meanwhile
        while time.monotonic() - started < window and len(delays) < 400:
            fired = time.monotonic()
            events_pub.fire(name, [fired], peer=pub.id)
            for process in (connected, newcomer):       # the newcomer's first event needs a dial
                line = process.next_line(f"EVENT {name} {fired!r} ", timeout=15)
                assert line is not None, f"no event in 15 s (delays so far: {delays})"
                delays.append(float(line.split()[-1]) - fired)
        print(f"\n{len(delays)} deliveries to 2 healthy subscribers while {UNREACHABLE + 10} were unreachable: "
              f"slowest {max(delays) * 1e3:.1f} ms, median {sorted(delays)[len(delays) // 2] * 1e3:.1f} ms")
        assert max(delays) < HEALTHY_DELAY, f"a healthy subscriber waited {max(delays):.2f}s"
        wait_until(lambda: len(table(pub)[name]) == 2, timeout=2 * net.CONNECT_TIMEOUT + 5,
                   what="the unreachable subscribers to be pruned")
