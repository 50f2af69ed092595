"""net.peers() on this machine (loopback only) and the pieces of LAN discovery that need no LAN.

Discovery across hosts runs in the namespace lab: tests/test_discovery_lab.py.
"""
import json
import socket
import time

import pytest
from support import peer_env, port_block

import net
from net.discovery import lan, peers as discovery


@pytest.fixture(scope="module")
def scan_start():
    """The first port of a fresh 40-port range (two port blocks) that this module's on_host scans cover."""
    return port_block(blocks=2)


@pytest.fixture
def port_range(monkeypatch, scan_start):
    monkeypatch.setattr(net, "PORT_START", scan_start, raising=False)
    monkeypatch.setattr(net, "PORT_RANGE", 39, raising=False)
    return scan_start


@pytest.fixture(scope="module")
def local_processes(scan_start):
    """Three peers on loopback inside the scanned range: plain, group g1, hub in g2."""
    from support import PeerProcess
    started = [PeerProcess("basic", env=peer_env(port_start=scan_start, **extra))
               for extra in ({}, {"NET_GROUP": "g1"}, {"NET_GROUP": "g2", "NET_IS_HUB": "1"})]
    yield tuple(started)
    for process in started:
        process.stop()


@pytest.fixture
def local_peers(local_processes, port_range):
    return local_processes


def test_on_host_finds_local_peers_in_the_spec_shape(local_peers):
    plain, grouped, hub = local_peers
    found = net.peers(on_host=True)
    assert set(found["peers"]) == {plain.id, grouped.id, hub.id}
    entry = found["peers"][grouped.id]
    assert set(entry) >= {"group", "host", "port", "hub", "executable", "user"}
    assert entry["group"] == "g1" and entry["host"] == "127.0.0.1" and entry["port"] == grouped.port
    assert entry["hub"] is False and found["peers"][hub.id]["hub"] is True
    assert found["None"] == [plain.id] and found["g1"] == [grouped.id] and found["g2"] == [hub.id]
    assert net.peer._Peer.decode_id(found[0])["port"] == min(p.port for p in local_peers)


def test_index_zero_is_a_peer_id_you_can_call(local_peers):
    first = net.peers(on_host=True)[0]
    assert isinstance(first, bytes)
    assert net.pass_through("x", peer=first) == [["x"], {}]
    with pytest.raises(IndexError):
        net.peers(groups="no-such-group", on_host=True)[0]


def test_groups_filters_and_group_as_first_positional(local_peers):
    plain, grouped, hub = local_peers
    assert set(net.peers(groups=["g1"], on_host=True)["peers"]) == {grouped.id}
    assert set(net.peers("g1", on_host=True, refresh=True)["peers"]) == {grouped.id}
    both = net.peers(["g1", "g2"], on_host=True)
    assert set(both["peers"]) == {grouped.id, hub.id}
    assert "None" not in both
    ungrouped = net.peers(groups="None", on_host=True)
    assert set(ungrouped["peers"]) == {plain.id}
    empty = net.peers(groups=["nobody"], on_host=True)
    assert empty["peers"] == {} and empty["nobody"] == [] and not empty


def test_hubs_only(local_peers):
    _, _, hub = local_peers
    assert set(net.peers(hubs_only=True, on_host=True)["peers"]) == {hub.id}
    assert net.peers(["g1", "g2"], hubs_only=True, on_host=True)["g2"] == [hub.id]
    assert set(net.peers(["g1"], hubs_only=True, on_host=True)["peers"]) == set()


def test_spec_positional_order_still_works(local_peers):
    _plain, grouped, _hub = local_peers
    assert set(net.peers(True, ["g1"], True)["peers"]) == {grouped.id}
    with pytest.raises(TypeError):
        net.peers("g1", "g2")
    with pytest.raises(TypeError):
        net.peers("g1", groups=["g2"])
    with pytest.raises(TypeError):
        net.peers(groups=[3], on_host=True)


def test_cached_until_refresh(spawn, local_peers, port_range):
    before = net.peers(on_host=True)
    late = spawn("basic", env=peer_env(port_start=port_range))
    assert late.id not in net.peers(on_host=True)["peers"], "a cached call must not rescan"
    assert late.id in net.peers(on_host=True, refresh=True)["peers"]
    late.stop()
    assert late.id in net.peers(on_host=True)["peers"]
    after = net.peers(on_host=True, refresh=True)
    assert late.id not in after["peers"]
    assert set(after["peers"]) == set(before["peers"])


def test_on_host_skips_ports_that_are_not_peers(local_peers, port_range):
    """A silent listener and a non-net listener in the range cost one probe timeout at most, and are skipped."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", port_range + 30))
    silent.listen()
    talker = socket.socket()
    talker.bind(("127.0.0.1", port_range + 31))
    talker.listen()
    try:
        began = time.monotonic()
        found = net.peers(on_host=True, refresh=True)
        elapsed = time.monotonic() - began
        assert len(found["peers"]) == 3
        # one probe (0.3 s dial + 0.3 s reply at most) per thread, in parallel: far below the 3 s connect timeout
        assert elapsed < 2.5
    finally:
        silent.close()
        talker.close()


def test_peer_whose_handshake_fails_is_not_listed(local_peers, port_range):
    """Something in the range that speaks another protocol is not a peer."""
    server = socket.socket()
    server.bind(("127.0.0.1", port_range + 35))
    server.listen()
    server.settimeout(5)
    import threading

    def answer_garbage():
        try:
            conn, _ = server.accept()
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        assert set(net.peers(on_host=True, refresh=True)["peers"]) == {p.id for p in local_peers}
    finally:
        thread.join(5)
        server.close()


def test_lan_scan_refused_when_discovery_is_off(monkeypatch):
    monkeypatch.setattr(net, "DISCOVERY", "off", raising=False)
    with pytest.raises(net.DiscoveryDisabled):
        net.peers()
    with pytest.raises(net.DiscoveryDisabled):
        net.peers(refresh=True, groups=["g1"])
    with pytest.raises(net.DiscoveryDisabled):
        discovery.scan()


def test_discovery_setting_is_validated():
    from net import config
    with pytest.raises(net.ConfigError, match="NET_DISCOVERY"):
        config.load({"NET_DISCOVERY": "loud"})
    assert config.load({"NET_DISCOVERY": "Query"})["DISCOVERY"] == "query"
    assert config.load({})["DISCOVERY"] == "answer"
    with pytest.raises(net.ConfigError, match="NET_DISCOVERY_TIMEOUT"):
        config.load({"NET_DISCOVERY_TIMEOUT": "0"})


def test_loopback_peer_never_joins_the_multicast_group():
    peer = net.peer._Peer(test=True)
    try:
        assert peer.host == "127.0.0.1"
        assert peer.responder is None
    finally:
        peer.close()


def test_arp_table_parsing():
    proc = (
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "10.231.0.2       0x1         0x2         02:aa:bb:cc:dd:01     *        eth0\n"
        "10.231.0.9       0x1         0x0         00:00:00:00:00:00     *        eth0\n"
        "10.231.0.3       0x1         0x6         02:aa:bb:cc:dd:03     *        eth0\n"
        "garbage\n"
    )
    assert lan._parse_proc_arp(proc) == ["10.231.0.2", "10.231.0.3"]
    command = ("? (192.168.1.1) at aa:bb:cc:dd:ee:ff [ether] on eth0\n"
               "? (192.168.1.7) at <incomplete> on eth0\n"
               "router (192.168.1.254) at 0:1:2:3:4:5 on en0 ifscope [ethernet]\n")
    assert lan._parse_arp_command(command) == ["192.168.1.1", "192.168.1.254"]
    windows = ("Interface: 192.168.1.10 --- 0x4\n"
               "  Internet Address      Physical Address      Type\n"
               "  192.168.1.1           aa-bb-cc-dd-ee-ff     dynamic\n"
               "  192.168.1.255         ff-ff-ff-ff-ff-ff     static\n"
               "  224.0.0.22            01-00-5e-00-00-16     static\n"
               "  192.168.1.20          00-11-22-33-44-55     dynamic\n")
    assert lan._parse_arp_command(windows) == ["192.168.1.1", "192.168.1.20"]


@pytest.mark.parametrize("data", [
    b"", b"\xff\xfe", b"[]", b"null", b"{}", json.dumps({"net": "query"}).encode(),
    json.dumps({"net": "query", "v": 2}).encode(), json.dumps({"net": "shout", "v": 1}).encode(),
    b"{" + b" " * 2000 + b"}",
])
def test_discovery_datagrams_that_are_not_ours_are_ignored(data):
    assert lan.decode(data) is None


def test_discovery_datagram_round_trip():
    message = {"net": "here", "v": 1, "nonce": "ab", "port": 3011}
    assert lan.decode(lan.encode(message)) == message


def test_open_ports_sweep_finds_listeners_only():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free_port = closed.getsockname()[1]
    closed.close()
    try:
        port = listener.getsockname()[1]
        assert lan.open_ports([("127.0.0.1", port), ("127.0.0.1", free_port)], 1.0) == [("127.0.0.1", port)]
    finally:
        listener.close()


def test_open_ports_sweep_when_everything_is_refused():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free_port = closed.getsockname()[1]
    closed.close()
    assert lan.open_ports([("127.0.0.1", free_port)] * 3, 1.0) == []
    assert lan.open_ports([], 1.0) == []
