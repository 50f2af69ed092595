"""The namespace lab itself: isolated, guarded, torn down."""
import subprocess

import pytest

pytestmark = pytest.mark.netns


def test_lab_hosts_reach_each_other_and_leave_no_trace(netlab):
    lab = netlab(hosts=2)
    names = list(lab.namespaces)
    subnet = lab.subnet
    assert subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True,
                          text=True).stdout.count(subnet) == 1, "the root namespace must refuse the lab subnet"
    peer = lab.spawn(2, "basic")
    assert lab.can_connect(1, lab.address(2), peer.port)
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "br0" not in root_links and "veth" not in root_links
    lab.unplug(2)
    assert not lab.can_connect(1, lab.address(2), peer.port, timeout=0.5)
    lab.close()
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listing for name in names)
    assert subnet not in subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True,
                                        text=True).stdout


def test_lab_peer_advertises_its_lan_address_not_loopback(netlab):
    """Inside a namespace the hostname resolves to 127.0.0.1; the peer's id must still carry its LAN address."""
    import net
    lab = netlab(hosts=1)
    peer = lab.spawn(1, "basic", NET_HOST=None, NET_BIND="0.0.0.0")
    assert net.peer._Peer.decode_id(peer.id)["host"] == lab.address(1)


def test_root_namespace_refuses_the_lab_subnet(netlab):
    """The guard route: a socket opened outside the lab by mistake fails at once, nothing is sent."""
    import errno
    import socket
    lab = netlab(hosts=1)
    with pytest.raises(OSError) as failure:
        socket.create_connection((lab.address(1), 9), timeout=2)
    assert failure.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)


def test_leftovers_of_dead_owners_are_swept():
    from netlab import PREFIX, ip, skip_reason, sweep_leftovers
    if skip_reason():
        pytest.skip(skip_reason())
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{PREFIX}-{dead.pid}-1-br"
    ip("netns", "add", name)
    try:
        sweep_leftovers()
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        ip("netns", "del", name, check=False)
