"""Events under the security modes and through faults: subscribers keep receiving."""
import json
import time

import pytest
from support import PEERS, peer_env
from test_events import fire_until_received_again, me, publisher_hook, received, records, unique

import net
from net.cli import certs

KEY = "correct horse battery staple 42"


@pytest.fixture(params=["key", "tls"])
def secured(request, monkeypatch, tmp_path):
    """Make the test process (publisher) keyed or TLS; returns the env a matching subscriber needs."""
    if request.param == "key":
        monkeypatch.setattr(net, "SECRET", KEY)
        env = {"NET_SECRET": KEY}
    else:
        certs.create_ca(tmp_path)
        for name in ("publisher", "subscriber"):
            certs.create_peer(tmp_path, name)
        monkeypatch.setattr(net, "TLS_CERT", str(tmp_path / "publisher.pem"))
        monkeypatch.setattr(net, "TLS_KEY", str(tmp_path / "publisher.key"))
        monkeypatch.setattr(net, "TLS_CA", str(tmp_path / "ca.pem"))
        env = {"NET_TLS_CERT": str(tmp_path / "subscriber.pem"), "NET_TLS_KEY": str(tmp_path / "subscriber.key"),
               "NET_TLS_CA": str(tmp_path / "ca.pem")}
    return env


def test_secured_subscribers_receive_and_strangers_cannot_subscribe(spawn, secured):
    name = unique("secured")
    trigger = publisher_hook(name)
    member = spawn("events_sub", env=peer_env(NET_TEST_EVENT=name, NET_TEST_PUBLISHER=me(), **secured))
    stranger = spawn("events_sub", env=peer_env(NET_TEST_EVENT=name, NET_TEST_PUBLISHER=me()))
    assert set(records(name)) == {member.id}        # the stranger's subscribe call was refused
    for i in range(20):
        trigger(i)
    assert received(member, name, count=20) == list(range(20))
    assert stranger.proc.poll() is None             # refused, not crashed; it keeps retrying quietly


def lab_call(caller, host, port, fn, *args, timeout=None):
    caller.proc.stdin.write(json.dumps({"host": host, "port": port, "fn": fn, "args": list(args),
                                        "timeout": timeout}) + "\n")
    caller.proc.stdin.flush()
    return json.loads(caller.wait_for("RESULT ", 30).split(" ", 1)[1])


@pytest.mark.netns
def test_subscribers_keep_receiving_through_a_link_cut(netlab):
    """Publisher on host 1, subscribers on hosts 2 and 3; host 2's cable is pulled, then plugged back."""
    lab = netlab(hosts=4)
    name = unique("cut")
    publisher = lab.spawn(1, "events_pub", NET_LEASE="1", NET_HEARTBEAT="2")
    where = f"{publisher.host}:{publisher.port}"
    cut, steady = (lab.spawn(n, "events_sub", NET_TEST_EVENT=name, NET_TEST_PUBLISHER=where, NET_LEASE="1")
                   for n in (2, 3))
    caller = lab.spawn(4, script=PEERS / "lab_caller.py")

    def fire(*values):
        result = lab_call(caller, publisher.host, publisher.port, "fire", name, list(values), timeout=10)
        assert result["error"] is None, result

    fire(0)
    assert received(cut, name, count=1) == [0] and received(steady, name, count=1) == [0]
    lab.unplug(2)
    try:
        for i in range(1, 11):          # spread over 2.5 s: longer than the publisher's heartbeat
            fire(i)
            time.sleep(0.25)
        assert received(steady, name, count=10) == list(range(1, 11))   # nobody else waits for host 2
    finally:
        lab.plug(2)
    # Host 2 gets events again without any restart: queued ones and/or new ones after its lease renews.
    seen, value = fire_until_received_again(cut, name, fire, look=1.0)
    assert seen == sorted(seen), "events from one publisher arrive in order"
    assert received(steady, name, count=value - 100) == list(range(100, value))
