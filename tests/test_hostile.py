"""Hostile and broken input against a live peer process: it logs, drops that connection, keeps serving."""
import socket
import struct
import time

import basic
import pytest
from support import peer_env

import net
from net.wire import frames as wire
from net.wire.frames import Kind

HANDSHAKE = 0.5


@pytest.fixture
def victim(spawn):
    p = spawn("basic", env=peer_env(NET_HANDSHAKE_TIMEOUT=str(HANDSHAKE)))
    assert basic.add(1, 1, peer=p.id) == 2
    p.baseline_threads = basic.thread_count(peer=p.id)
    return p


def raw(p, greet=True):
    sock = socket.create_connection(p.address, timeout=5)
    if greet:
        sock.sendall(wire.preamble())
        assert sock.recv(6) == wire.preamble()
    return sock


def closed_by_peer(sock, within=5.0):
    """True when the peer closes the socket (recv returns b'' or resets) within the time."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        sock.close()


def still_serving(p):
    assert basic.add(2, 3, peer=p.id) == 5


def settled_thread_count(p, limit, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        count = basic.thread_count(peer=p.id)
        if count <= limit or time.monotonic() > deadline:
            return count
        time.sleep(0.05)    # polling an observable value, bounded by the deadline


def test_garbage_instead_of_preamble(victim):
    sock = raw(victim, greet=False)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed_by_peer(sock)
    still_serving(victim)


def test_wrong_protocol_version_is_told_ours_and_dropped(victim):
    sock = raw(victim, greet=False)
    sock.sendall(wire.PREAMBLE.pack(b"NET", 99, 0))
    sock.settimeout(5)
    assert sock.recv(6) == wire.preamble()      # the peer says which version it speaks
    assert closed_by_peer(sock)
    still_serving(victim)


def test_four_gib_length_prefix(victim):
    sock = raw(victim)
    sock.sendall(struct.pack("!IBI", 0xFFFFFFFF, Kind.CALL, 1) + b"x" * 1000)
    assert closed_by_peer(sock)
    still_serving(victim)


def test_garbage_frames_after_a_valid_greeting(victim):
    sock = raw(victim)
    sock.sendall(struct.pack("!IBI", 4, Kind.CALL, 1) + b"\xc1\xc1\xc1\xc1")
    assert closed_by_peer(sock)
    still_serving(victim)


def test_malformed_call_shape_gets_an_error_reply(victim):
    sock = raw(victim)
    sock.sendall(wire.frame_bytes(Kind.CALL, 5, {"not": "a call"}, max_message=1 << 20))
    decoder = wire.FrameDecoder(1 << 20)
    sock.settimeout(5)
    while (frame := decoder.next_frame()) is None:
        decoder.feed(sock.recv(65536))
    assert frame.kind is Kind.ERROR and frame.request_id == 5
    assert "malformed call" in frame.payload["message"]
    sock.close()
    still_serving(victim)


def test_truncated_frame_then_close(victim):
    sock = raw(victim)
    sock.sendall(wire.frame_bytes(Kind.CALL, 1, ["x", [], {}, {}], max_message=1 << 20)[:-3])
    sock.close()
    still_serving(victim)


def test_silent_half_open_connections_are_dropped_and_leak_nothing(victim):
    socks = [socket.create_connection(victim.address, timeout=5) for _ in range(20)]
    still_serving(victim)           # serving while 20 silent connections sit there
    assert all(closed_by_peer(s, within=HANDSHAKE + 5) for s in socks)
    count = settled_thread_count(victim, victim.baseline_threads)
    assert count <= victim.baseline_threads, f"{count} threads, {victim.baseline_threads} before"
    still_serving(victim)


def test_client_sending_result_frames_is_dropped(victim):
    sock = raw(victim)
    sock.sendall(wire.frame_bytes(Kind.RESULT, 1, "unexpected", max_message=1 << 20))
    assert closed_by_peer(sock)
    still_serving(victim)


def test_peer_never_steals_a_port_and_names_the_range_when_full():
    from support import port_block
    start = port_block()
    holders = []
    try:
        for port in range(start, start + 3):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            s.listen()
            holders.append(s)
        net.PORT_START, old_start = start, net.PORT_START
        net.PORT_RANGE, old_range = 2, net.PORT_RANGE
        try:
            with pytest.raises(net.PortsExhausted, match=f"{start}-{start + 2}"):
                net.peer._Peer(test=True)
            holders.pop().close()
            with net.peer._Peer(test=True) as peer:
                assert peer.port == start + 2
        finally:
            net.PORT_START, net.PORT_RANGE = old_start, old_range
    finally:
        for s in holders:
            s.close()


def random_streams(seed, count):
    """Reproducible hostile byte streams: raw noise, and noise behind a valid greeting/header."""
    import random
    rng = random.Random(seed)
    keys = [basic.add.key, basic.echo.key, b"", b"\xff" * 40]
    for _ in range(count):
        shape = rng.randrange(5)
        noise = rng.randbytes(rng.randrange(1, 400))
        if shape == 0:
            yield noise                                            # not even a preamble
        elif shape == 1:
            yield wire.preamble() + noise                          # noise after the greeting
        elif shape == 2:                                           # a header of any kind, noise body
            kind = rng.choice(list(Kind))
            yield wire.preamble() + struct.pack("!IBI", len(noise), kind, rng.randrange(1 << 32)) + noise
        elif shape == 3:                                           # well-formed frames of odd content
            frames = []
            for _ in range(rng.randrange(1, 6)):
                kind = rng.choice([Kind.CALL, Kind.NOTIFY, Kind.CANCEL, Kind.PING, Kind.CREDIT, Kind.HELLO,
                                   Kind.AUTH, Kind.GOODBYE])
                payload = rng.choice([None, 7, "x", [rng.choice(keys), [1, 2], {}, {}], [rng.choice(keys)],
                                      {"a": noise[:10]}, [b"k", "not args", 3, None]])
                frames.append(wire.frame_bytes(kind, rng.randrange(1 << 32), payload, max_message=1 << 20))
            yield wire.preamble() + b"".join(frames)
        else:                                                      # a valid stream, then one byte flipped
            data = bytearray(wire.preamble() + wire.frame_bytes(Kind.CALL, 9, [basic.add.key, [1, 2], {}, {}],
                                                                max_message=1 << 20))
            data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
            yield bytes(data)


@pytest.mark.parametrize("mode", ["plain", "keyed"])
def test_random_and_malformed_frames_never_stop_a_live_peer(spawn, mode, monkeypatch):
    extra = {"NET_SECRET": "correct horse battery staple 42"} if mode == "keyed" else {}
    p = spawn("basic", env=peer_env(NET_HANDSHAKE_TIMEOUT=str(HANDSHAKE), NET_IDLE_TIMEOUT="1", **extra))
    if extra:
        monkeypatch.setattr(net, "SECRET", extra["NET_SECRET"])
    baseline = basic.thread_count(peer=p.id)
    for i, data in enumerate(random_streams(seed=6 + len(mode), count=120)):
        sock = socket.create_connection(p.address, timeout=5)
        try:
            sock.sendall(data)
            if i % 4 == 0:
                sock.shutdown(socket.SHUT_WR)          # sometimes hang up at once, sometimes linger
        except OSError:
            pass                                       # the peer already dropped us: that is fine
        sock.close()
        if i % 30 == 0:
            still_serving(p)
    assert p.proc.poll() is None, "the peer process died"
    still_serving(p)
    count = settled_thread_count(p, baseline + 1, timeout=10)
    assert count <= baseline + 1, f"{count} threads, {baseline} before: connections leaked"
