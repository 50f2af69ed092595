"""Every limit holds against a real peer process: message size, connections, handshake, idle."""
import socket
import time

import basic
import pytest
import trusty
from support import peer_env

import net
from net.calls import client
from net.wire import frames as wire
from net.wire.frames import Kind


def greeted(p):
    sock = socket.create_connection(p.address, timeout=5)
    sock.sendall(wire.preamble())
    assert sock.recv(6) == wire.preamble()
    return sock


def closed_within(sock, seconds):
    """Seconds until the peer closed ``sock`` (None if it stayed open), collecting frames sent."""
    started = time.monotonic()
    sock.settimeout(seconds)
    decoder = wire.FrameDecoder(1 << 16)
    frames = []
    try:
        while data := sock.recv(65536):
            decoder.feed(data)
            frames += decoder.frames()
    except ConnectionResetError:
        pass
    except socket.timeout:
        return None, frames
    return time.monotonic() - started, frames


def test_receiver_refuses_a_call_over_its_limit_with_a_typed_error(spawn):
    p = spawn("basic", "trusty", env=peer_env(NET_MAX_MESSAGE="100000"))
    with pytest.raises(net.MessageTooLarge, match="at most 100,000 bytes"):
        trusty.counted(b"x" * 200_000, peer=p.id)
    assert trusty.counted("small", peer=p.id) == "small"       # still serving, same caller
    assert trusty.call_count(peer=p.id) == 1                   # the big call never ran (nor twice)


def test_a_reply_over_the_callers_limit_is_a_typed_error(spawn, monkeypatch):
    p = spawn("basic", "trusty")
    monkeypatch.setattr(net, "MAX_MESSAGE", 100_000)
    with pytest.raises(net.MessageTooLarge, match=r"reply .* over this process's limit"):
        trusty.blob(200_000, peer=p.id)
    assert trusty.blob(10, peer=p.id) == b"x" * 10


def test_max_connections_refuses_the_extra_and_recovers(spawn):
    p = spawn("basic", env=peer_env(NET_MAX_CONNECTIONS="3"))
    held = [greeted(p) for _ in range(3)]
    extra = socket.create_connection(p.address, timeout=5)
    extra.sendall(wire.preamble())
    elapsed, _ = closed_within(extra, 5)
    assert elapsed is not None, "the connection over the limit must be closed, not left hanging"
    with pytest.raises(net.PeerUnreachable):
        basic.add(1, 1, peer=p.id)
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:             # the peer notices the close asynchronously: retry, bounded
        try:
            assert basic.add(1, 1, peer=p.id) == 2
            break
        except net.PeerUnreachable:
            assert time.monotonic() < deadline, "a freed slot must be usable again"
            time.sleep(0.05)
    for sock in held:
        sock.close()


def test_handshake_timeout_is_a_deadline_not_per_byte(spawn):
    p = spawn("basic", env=peer_env(NET_HANDSHAKE_TIMEOUT="1"))
    sock = socket.create_connection(p.address, timeout=5)
    started = time.monotonic()
    closed = False
    for byte in wire.preamble()[:5]:            # a slow-loris: one byte every 0.4 s
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.4)
    if not closed:
        elapsed, _ = closed_within(sock, 5)
        assert elapsed is not None
    assert time.monotonic() - started < 3.5
    sock.close()
    assert basic.add(1, 1, peer=p.id) == 2


def test_idle_connections_are_closed_with_goodbye_and_callers_reconnect(spawn):
    p = spawn("basic", "trusty", env=peer_env(NET_IDLE_TIMEOUT="0.5"))
    raw = greeted(p)
    elapsed, frames = closed_within(raw, 5)
    assert elapsed is not None and [f.kind for f in frames] == [Kind.GOODBYE]
    assert frames[0].payload["reason"] == "idle"
    client.POOL.close_all()
    assert basic.add(1, 1, peer=p.id) == 2
    [first] = [c for c in client.POOL.connections() if c.port == p.port]
    deadline = time.monotonic() + 5
    while first.usable():                      # the peer retires the idle pooled connection
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert basic.add(2, 2, peer=p.id) == 4      # transparently on a new connection
    assert trusty.nap(0.9, peer=p.id) == p.pid  # a call in flight is not "idle"
