"""net.peers() across real hosts: 10 peers on 5 network namespaces, discovered from a 6th.

Discovery (multicast query, ARP sweep) runs only inside the lab's
namespaces; the pytest process itself never calls net.peers() here.
"""
import json
import subprocess
import sys

import pytest
from netlab import ask

pytestmark = pytest.mark.netns

DISCOVERER = 6
# host -> [(group, hub, discovery mode)]: two peers per host, ten in all
LAYOUT = {
    1: [("g1", False, "answer"), ("g1", False, "answer")],
    2: [("g2", True, "answer"), ("g2", False, "answer")],
    3: [(None, False, "answer"), (None, False, "query")],    # the second one never answers a query
    4: [("g1", True, "answer"), ("g2", False, "answer")],
    5: [(None, False, "answer"), ("g3", False, "answer")],
}


@pytest.fixture(scope="module")
def lan(netlab_module):
    lab = netlab_module(hosts=DISCOVERER)
    peers = {}
    for host, specs in LAYOUT.items():
        for group, hub, mode in specs:
            extra = {"NET_DISCOVERY": mode, "NET_IS_HUB": "1" if hub else "0"}
            if group is not None:
                extra["NET_GROUP"] = group
            process = lab.spawn(host, "basic", **extra)
            peers[process.id.decode()] = {"host": host, "group": str(group), "hub": hub, "process": process}
    discoverer = lab.discoverer(DISCOVERER)
    return lab, peers, discoverer


def expected(peers, groups=None, hubs_only=False):
    return {peer_id for peer_id, p in peers.items()
            if (groups is None or p["group"] in groups) and (not hubs_only or p["hub"])}


def test_finds_all_ten_peers_across_five_hosts(lan):
    lab, peers, discoverer = lan
    found = ask(discoverer, refresh=True)
    print(f"\nnet.peers(refresh=True): {len(found['peers'])} peers in {found['elapsed'] * 1000:.0f} ms")
    assert set(found["peers"]) == set(peers)
    for peer_id, entry in found["peers"].items():
        assert entry["host"] == lab.address(peers[peer_id]["host"])
        assert entry["group"] == peers[peer_id]["group"] and entry["hub"] is peers[peer_id]["hub"]
        assert set(entry) >= {"group", "host", "port", "hub", "executable", "user"}
    assert set(found["groups"]["g1"]) == expected(peers, {"g1"})
    assert set(found["groups"]["None"]) == expected(peers, {"None"})
    assert found["first"] in peers
    assert found["elapsed"] < 5, "discovery must not wait on anything slow (target: < 1 s, see bench/)"


def test_groups_and_hubs_filters(lan):
    _, peers, discoverer = lan
    ask(discoverer, refresh=True)
    assert set(ask(discoverer, groups=["g1"])["peers"]) == expected(peers, {"g1"})
    assert set(ask(discoverer, "g1", refresh=True)["peers"]) == expected(peers, {"g1"})
    both = ask(discoverer, ["g1", "g2"], refresh=True)
    assert set(both["peers"]) == expected(peers, {"g1", "g2"})
    assert set(both["groups"]) == {"g1", "g2"}
    assert set(ask(discoverer, hubs_only=True, refresh=True)["peers"]) == expected(peers, hubs_only=True)
    hubs = ask(discoverer, ["g1", "g2"], hubs_only=True, refresh=True)
    assert set(hubs["peers"]) == expected(peers, {"g1", "g2"}, hubs_only=True) and len(hubs["peers"]) == 2
    assert ask(discoverer, groups=["nobody"])["peers"] == {}


def test_cache_until_refresh(lan):
    lab, peers, discoverer = lan
    ask(discoverer, refresh=True)
    late = lab.spawn(1, "basic", NET_GROUP="late")
    try:
        cached = ask(discoverer)
        assert late.id.decode() not in cached["peers"], "a call without refresh must answer from the cache"
        assert set(cached["peers"]) == set(peers)
        assert late.id.decode() in ask(discoverer, refresh=True)["peers"]
        assert set(ask(discoverer, "late")["peers"]) == {late.id.decode()}
    finally:
        late.stop()
    assert late.id.decode() not in ask(discoverer, refresh=True)["peers"]


def test_host_that_goes_away_disappears_on_refresh(lan):
    lab, peers, discoverer = lan
    ask(discoverer, refresh=True)
    gone = {peer_id for peer_id, p in peers.items() if p["host"] == 5}
    lab.unplug(5)
    try:
        assert gone <= set(ask(discoverer)["peers"]), "the cache still lists it until a refresh"
        found = ask(discoverer, refresh=True)
        assert set(found["peers"]) == set(peers) - gone
        assert found["elapsed"] < 5, "an unreachable host costs one short probe timeout, not a hang"
    finally:
        lab.plug(5)
    assert set(ask(discoverer, refresh=True)["peers"]) == set(peers)


def test_filtered_host_does_not_slow_discovery(lan):
    """A firewalled machine in the ARP table (drops every packet) over a 20-port range costs one timeout."""
    lab, peers, _ = lan
    wide = lab.discoverer(DISCOVERER, NET_PORT_RANGE="19", NET_CONNECT_TIMEOUT="10")
    try:                                    # this test's own process: the module's lab outlives it
        ask(wide, refresh=True)
        baseline = min(ask(wide, refresh=True)["elapsed"] for _ in range(2))
        lab.add_silent_neighbour(DISCOVERER, 200)
        assert "10" in lab.arp_table(DISCOVERER) and lab.address(200) in lab.arp_table(DISCOVERER)
        found = ask(wide, refresh=True)
    finally:
        wide.stop()
    assert set(found["peers"]) == set(peers)
    # Probed one port after another, 20 ports x 0.3 s would add 6 s; in parallel they add one timeout.
    assert found["elapsed"] < baseline + 2.0, (found["elapsed"], baseline)


def test_peer_only_on_arp_path_is_found(lan):
    """The host-3 peer in 'query' mode never answers multicast; it is found through the ARP sweep."""
    _, peers, discoverer = lan
    silent = [peer_id for peer_id, p in peers.items()
              if p["host"] == 3 and p["process"].env["NET_DISCOVERY"] == "query"]
    assert len(silent) == 1
    assert silent[0] in ask(discoverer, refresh=True)["peers"]


LISTEN = """
import socket, struct, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("239.255.30.10", 3010))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton("239.255.30.10") + socket.inet_aton(sys.argv[1]))
print("LISTENING", flush=True)
sock.settimeout(0.2)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data, source = sock.recvfrom(2048)
        print(source[0], data.decode(), flush=True)
        end = min(end, time.monotonic() + 0.3)     # heard something: a short grace for more, then stop
    except socket.timeout:
        pass
"""


def _heard(lab, host, seconds, action):
    """Datagrams host ``host`` hears on the discovery group while ``action()`` runs."""
    listener = subprocess.Popen([*lab.wrap(host), sys.executable, "-c", LISTEN, lab.address(host), str(seconds)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "LISTENING"
        action()
        out, _ = listener.communicate(timeout=seconds + 10)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    return [json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if " " in line]


def test_peers_send_nothing_unless_asked_or_announcing(netlab):
    lab = netlab(hosts=2)
    started = []
    heard = _heard(lab, 2, 0.8, lambda: started.append(lab.spawn(1, "basic", NET_DISCOVERY="answer")))
    assert heard == [], "a peer in 'answer' mode must stay silent until queried"
    started[0].stop()
    heard = _heard(lab, 2, 5, lambda: started.append(lab.spawn(1, "basic", NET_DISCOVERY="announce")))
    assert [m["net"] for m in heard] == ["here"] and heard[0]["port"] == started[1].port
    heard = _heard(lab, 2, 5, started[1].stop)
    assert [m["net"] for m in heard] == ["bye"]
    quiet = lab.discoverer(2, NET_DISCOVERY="off")

    def ask_and_fail() -> None:
        with pytest.raises(AssertionError):
            ask(quiet, refresh=True)

    heard = _heard(lab, 1, 0.8, ask_and_fail)
    assert heard == [], "NET_DISCOVERY=off must not send a query"


SPEC_EXAMPLES = """
import net
all_peers = net.peers()
assert len(all_peers["peers"]) == 10, all_peers
all_peers = net.peers(on_host=True)
assert all_peers["peers"] == {}, all_peers
all_peers = net.peers(refresh=True)
assert len(all_peers["peers"]) == 10
all_peers = net.peers("g1", refresh=True)
assert set(all_peers) == {"peers", "g1"} and len(all_peers["g1"]) == 3, all_peers
all_peers = net.peers(["g1", "g2"], refresh=True)
assert len(all_peers["peers"]) == 6 and len(all_peers["g2"]) == 3
all_peers = net.peers(hubs_only=True, refresh=True)
assert len(all_peers["peers"]) == 2 and all(e["hub"] for e in all_peers["peers"].values())
all_peers = net.peers(["group1", "group2"], hubs_only=True, refresh=True)
assert all_peers["peers"] == {}
group1_peers = net.peers(groups=['g1'])
peer = net.peers()[0]
assert net.info(peer=peer)["host"] == net.peers()["peers"][peer]["host"]
print("SPEC OK")
"""


def test_every_spec_example_runs_as_written(lan):
    """The spec's net.peers section (and its peers()[0] usage), verbatim but for group names."""
    lab, _, _ = lan
    result = subprocess.run([*lab.wrap(DISCOVERER), sys.executable, "-c", SPEC_EXAMPLES], capture_output=True,
                            text=True, env=lab.env(DISCOVERER), timeout=60)
    assert result.stdout.strip() == "SPEC OK", result.stderr[-3000:]


HOSTILE = """
import json, socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
group = ("239.255.30.10", 3010)
for junk in [b"", b"\\xff" * 2000, b"not json", b"[1,2]", b'{"net": "query", "v": 99, "nonce": "x"}',
             b'{"net": "query", "v": 1, "nonce": 7}', b'{"net": "query", "v": 1, "nonce": "' + b"a" * 500 + b'"}',
             b'{"net": "here", "v": 1, "port": "x"}', b'{"net": "bye", "v": 1}']:
    sock.sendto(junk, group)
for i in range(150):                      # a query flood from one address
    sock.sendto(json.dumps({"net": "query", "v": 1, "nonce": str(i)}).encode(), group)
print("SENT")
"""


def test_garbage_and_query_floods_do_not_hurt_peers_or_discovery(lan):
    lab, peers, discoverer = lan
    result = subprocess.run([*lab.wrap(5), sys.executable, "-c", HOSTILE], capture_output=True, text=True,
                            env=lab.env(5), timeout=30)
    assert result.stdout.strip() == "SENT", result.stderr
    assert set(ask(discoverer, refresh=True)["peers"]) == set(peers)
    assert all(p["process"].proc.poll() is None for p in peers.values())
