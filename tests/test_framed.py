"""FramedSocket sending from many threads at once, over real socket pairs.

A small frame sent while another thread holds the send lock is left for that
thread to send; these tests check that nothing is lost, duplicated, torn or
reordered within a thread, whatever the mix of small and big frames.
"""
import socket
import threading

import pytest

from net.transport.framed import SMALL_BODY, FramedSocket
from net.wire import frames as wire

THREADS = 8
PER_THREAD = 300


def read_all(sock, expected, decoder):
    """Frames read from ``sock`` until ``expected`` have come (bounded by a socket timeout)."""
    frames = []
    sock.settimeout(20)
    while len(frames) < expected:
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {len(frames)} of {expected} frames"
        decoder.feed(chunk)
        frames.extend(decoder.frames())
    return frames


@pytest.mark.parametrize("big_every", [0, 50])
def test_frames_from_many_threads_all_arrive_once_whole_and_in_order_per_thread(big_every):
    ours, theirs = socket.socketpair()
    connection = FramedSocket(ours, "pair", 64 << 20)
    big = b"b" * (SMALL_BODY * 2)
    total = THREADS * PER_THREAD
    received = {}
    reader = threading.Thread(target=lambda: received.update(
        frames=read_all(theirs, total, wire.FrameDecoder(64 << 20))))
    reader.start()

    def send(thread):
        for n in range(PER_THREAD):
            body = big if big_every and n % big_every == big_every - 1 else b"s" * (n % 40)
            connection.send(wire.Kind.CALL, thread * PER_THREAD + n + 1, [thread, n, body])

    senders = [threading.Thread(target=send, args=(t,)) for t in range(THREADS)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    reader.join(60)
    try:
        frames = received["frames"]
        assert sorted(f.request_id for f in frames) == list(range(1, total + 1))
        by_thread = {}
        for frame in frames:
            thread, n, body = frame.payload
            assert frame.request_id == thread * PER_THREAD + n + 1
            assert body in (big, b"s" * (n % 40))
            by_thread.setdefault(thread, []).append(n)
        assert all(order == list(range(PER_THREAD)) for order in by_thread.values())
    finally:
        connection.close()
        theirs.close()


def test_a_failed_send_of_frames_left_by_others_shuts_the_connection_for_its_reader():
    """The thread that sends what others left has its own frame out already: the failure is
    not raised to it; the connection is shut down, and its reader sees that at once."""
    ours, theirs = socket.socketpair()
    connection = FramedSocket(ours, "pair", 1 << 20)
    try:
        theirs.shutdown(socket.SHUT_RD)         # it still could send to us, but takes nothing more
        connection._left.append(wire.frame_bytes(wire.Kind.CALL, 1, None, max_message=1 << 20))
        connection._send_what_was_left()        # fails (EPIPE) without raising here
        assert not connection._left
        assert connection.receive_available(5.0) is None, "the reader must see the connection end"
    finally:
        connection.close()
        theirs.close()
