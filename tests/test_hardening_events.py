"""Event publishers against hostile subscribe requests (real publisher process, loopback)."""
from __future__ import annotations

import time

from support import peer_env

from net.calls import client
from net.wire import ids, payloads

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
