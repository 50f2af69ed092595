"""NET_BUSY_POLL: a thread about to wait for a reply polls its socket first, while that pays.

The framing layer is tested over real socket pairs; calls across processes with
polling off on either side are tested with real peers.
"""
import os
import socket
import subprocess
import sys
import threading
import time

import basic
import pytest
from support import ROOT, peer_env

import net
from net.cli import certs
from net.transport import busy_poll, tls
from net.transport.framed import FramedSocket
from net.wire import frames as wire

pytestmark = pytest.mark.skipif(not busy_poll.budget_seconds(),
                                reason="busy polling needs MSG_DONTWAIT, two CPUs and /proc/loadavg")


@pytest.fixture
def pair(monkeypatch):
    """A FramedSocket (polling for up to 50 ms) and the raw socket at the other end."""
    monkeypatch.setattr(net, "BUSY_POLL", 50_000)
    ours, theirs = socket.socketpair()
    connection = FramedSocket(ours, "pair", 1 << 20)
    yield connection, theirs
    connection.close()
    theirs.close()


def frame(kind, request_id, payload):
    return wire.frame_bytes(kind, request_id, payload, max_message=1 << 20)


def send_later(sock, delay, data):
    timer = threading.Timer(delay, sock.sendall, args=(data,))
    timer.start()
    return timer


def test_a_frame_that_arrives_while_polling_is_read_and_polling_stays_on(pair):
    connection, theirs = pair
    assert connection.polling
    send_later(theirs, 0.002, frame(wire.Kind.RESULT, 7, {"ok": [1, b"2"]})).join()
    frames = connection.receive_available(None)
    assert [(f.kind, f.request_id, f.payload) for f in frames] == [(wire.Kind.RESULT, 7, {"ok": [1, b"2"]})]
    assert connection.polling


def test_a_slow_answer_turns_polling_off_and_a_fast_one_back_on(pair, monkeypatch):
    connection, theirs = pair
    connection._busy_poll = 0.005
    timer = send_later(theirs, 0.2, frame(wire.Kind.RESULT, 1, "late"))
    assert connection.receive_available(None)[0].payload == "late"
    timer.join()
    assert not connection.polling, "an answer slower than NET_BUSY_POLL must stop the polling"
    theirs.sendall(frame(wire.Kind.RESULT, 2, "at once"))
    assert connection.receive_available(None)[0].payload == "at once"
    assert connection.polling, "an answer that came at once would have been caught by polling"


def test_a_zero_timeout_look_neither_polls_nor_changes_the_mode(pair):
    connection, theirs = pair
    assert connection.receive_available(0.0) == []
    assert connection.polling
    theirs.sendall(frame(wire.Kind.PONG, 0, None))
    assert [f.kind for f in connection.receive_available(0.0)] == [wire.Kind.PONG]


def test_a_timed_wait_never_polls_past_its_timeout(pair):
    connection, _ = pair
    connection._busy_poll = 5.0
    started = time.monotonic()
    assert connection.receive_available(0.05) == []
    assert time.monotonic() - started < 2.0


def test_the_other_side_closing_while_polling_is_a_clean_close(pair):
    connection, theirs = pair
    threading.Timer(0.002, theirs.shutdown, args=(socket.SHUT_WR,)).start()
    assert connection.receive_available(None) is None


def test_tls_connections_poll_too(monkeypatch, tmp_path):
    monkeypatch.setattr(net, "BUSY_POLL", 50_000)
    certs.create_ca(tmp_path)
    paths = {name: certs.create_peer(tmp_path, name) for name in ("a", "b")}
    ca = str(tmp_path / "ca.pem")
    ours, theirs = socket.socketpair()
    server_side = tls.server_context(*map(str, paths["b"]), ca).wrap_socket(theirs, server_side=True,
                                                                            do_handshake_on_connect=False)
    handshake = threading.Thread(target=server_side.do_handshake)
    handshake.start()
    client_side = tls.client_context(*map(str, paths["a"]), ca).wrap_socket(ours)
    handshake.join(10)
    connection = FramedSocket(tls.TLSChannel(client_side, "pair"), "pair", 1 << 20)
    try:
        assert connection.polling
        send_later(server_side, 0.002, frame(wire.Kind.RESULT, 3, "sealed")).join()
        assert connection.receive_available(None)[0].payload == "sealed"
        assert connection.polling
        server_side.sendall(frame(wire.Kind.RESULT, 4, b"x" * 100_000))     # several records
        received = []
        for _ in range(1000):           # a record at a time
            received = connection.receive_available(5.0)
            if received:
                break
        assert received[0].payload == b"x" * 100_000
    finally:
        connection.close()
        server_side.close()


@pytest.mark.parametrize("reader", ["receive_available", "receive"])
def test_frames_that_come_together_pause_polling(pair, reader):
    """A sender that does not wait for each answer gains nothing from polling: it would split its batches."""
    connection, theirs = pair
    theirs.sendall(frame(wire.Kind.RESULT, 1, "one"))
    first = getattr(connection, reader)()
    assert connection.calm_until < time.perf_counter(), "one frame at a time is no batch"
    theirs.sendall(frame(wire.Kind.RESULT, 2, "two") + frame(wire.Kind.RESULT, 3, "three"))
    second = getattr(connection, reader)()
    assert connection.calm_until > time.perf_counter(), "two frames in one read: polling pauses"
    payloads = [f.payload for f in (first if isinstance(first, list) else [first])]
    payloads += [f.payload for f in (second if isinstance(second, list) else [second, connection.receive()])]
    assert payloads == ["one", "two", "three"]


def test_zero_turns_polling_off(monkeypatch):
    monkeypatch.setattr(net, "BUSY_POLL", 0)
    ours, theirs = socket.socketpair()
    connection = FramedSocket(ours, "pair", 1 << 20)
    try:
        assert not connection.polling
        theirs.sendall(frame(wire.Kind.RESULT, 1, "x"))
        assert connection.receive_available(None)[0].payload == "x"
        assert not connection.polling
    finally:
        connection.close()
        theirs.close()


def test_a_process_on_one_cpu_never_polls():
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " \
           "from net.transport import busy_poll; print(busy_poll.budget_seconds())"
    result = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == 0.0


def test_no_polling_while_every_cpu_is_busy():
    """Pollers on a machine with no CPU to spare would take it from the peer they wait for."""
    spin = "import time; print('go', flush=True); end = time.monotonic() + 10\nwhile time.monotonic() < end: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True)
                for _ in range(busy_poll.usable_cpus() + 1)]
    try:
        assert all(p.stdout.readline().strip() == "go" for p in spinners)
        load = busy_poll.Load()
        looks = []
        for _ in range(5):
            load.next_sample = 0.0      # look again now
            looks.append(load.spare_cpu())
        assert looks == [False] * 5, f"{len(spinners)} spinning processes, yet a CPU looked spare: {looks}"
    finally:
        for p in spinners:
            p.kill()
            p.wait(10)


def test_a_callee_called_over_two_connections_stops_polling_until_one_calls_alone():
    shared, a, b = busy_poll.SharedServer(), object(), object()
    window = busy_poll.SharedServer.WINDOW
    for n in range(100):                        # one caller, however fast: its reader may poll
        shared.called(a, n * 0.0001)
    assert shared.alone(0.01)
    shared.called(b, 0.0101)                    # a second caller right after
    assert not shared.alone(0.0101)
    shared.called(a, 0.0102)
    assert not shared.alone(0.0102 + window / 2)
    assert shared.alone(0.0102 + window)        # b went quiet: a is alone again
    shared.called(b, 1.0)                       # long after: not shared use
    assert shared.alone(1.0)


def test_calls_work_with_polling_off_on_either_side(spawn, monkeypatch):
    quiet_callee = spawn("basic", env=peer_env(NET_BUSY_POLL="0"))
    assert [basic.add(i, 1, peer=quiet_callee.id) for i in range(50)] == [i + 1 for i in range(50)]
    monkeypatch.setattr(net, "BUSY_POLL", 0)        # connections opened from now on do not poll
    polling_callee = spawn("basic")
    assert [basic.echo(b"x" * i, peer=polling_callee.id) for i in range(50)] == [b"x" * i for i in range(50)]
