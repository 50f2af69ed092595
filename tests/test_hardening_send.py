"""Sending under hostile or stuck peers: one slow reader costs only its own connection.

Real peer processes on 127.0.0.1; a frozen caller is a raw socket in this process
with a 4 KiB receive buffer that never reads, a frozen callee a listening socket
here that greets and then never reads. The callee's memory is read from
/proc/<pid>/status. Races are provoked with hooks that hold one thread at the
exact point of the race, never with sleeps.
"""
import asyncio
import select
import socket
import threading
import time
from contextlib import contextmanager

import basic
import hardening
import pytest
import trusty
from support import peer_env

import net
from net.calls import client
from net.transport.framed import FramedSocket
from net.wire import frames as wire, ids, payloads
from net.wire.frames import Kind

MIB = 1024 * 1024
BIG_LIMIT = 1 << 30


def status_kib(pid, field):
    """``VmRSS`` / ``VmHWM`` of process ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def greeted(p, rcvbuf=None):
    """A raw plain connection to ``p`` that has exchanged preambles; ``rcvbuf``: its receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)     # before connect: sets the window
    sock.settimeout(5)
    sock.connect(p.address)
    sock.sendall(wire.preamble())
    assert sock.recv(6) == wire.preamble()
    return sock


def call_frame(request_id, function, *args):
    key = ids.key(f"{function.__module__}.{function.__name__}")
    return wire.frame_bytes(Kind.CALL, request_id, payloads.call(key, list(args), {}), max_message=BIG_LIMIT)


def push(sock, frames, quiet=1.0, limit=60.0):
    """Send ``frames`` without blocking until all went or the peer took nothing for ``quiet`` s.

    Returns the bytes the peer took. Bounded by ``limit`` seconds.
    """
    sock.setblocking(False)
    data = memoryview(b"".join(frames))
    sent = 0
    started = last = time.monotonic()
    try:
        while sent < len(data):
            now = time.monotonic()
            assert now - started < limit, "push: the peer kept taking bytes for too long"
            if now - last >= quiet:
                break
            try:
                count = sock.send(data[sent:sent + MIB])
            except BlockingIOError:
                select.select([], [sock], [], quiet / 10)
                continue
            sent += count
            last = time.monotonic()
    finally:
        sock.setblocking(True)
    return sent


def dropped_within(sock, seconds):
    """Seconds until the peer closed or reset ``sock`` (None if not within ``seconds``), without
    reading from it: a read would be progress, and the point is that the reader is frozen."""
    started = time.monotonic()
    poller = select.poll()
    gone = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
    poller.register(sock, gone)
    while time.monotonic() - started < seconds:
        for _, events in poller.poll(100):
            if events & gone:
                return time.monotonic() - started
    return None


def timed(function, *args, **kwargs):
    started = time.monotonic()
    result = function(*args, **kwargs)
    return time.monotonic() - started, result


def until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)        # polling an observable value, bounded by the deadline


# -- finding 1: a caller that stops reading ----------------------------------------------------

def test_a_caller_that_stops_reading_costs_only_its_own_connection(spawn):
    """100 replies of 1 MiB (and 4 from async handlers) to a caller that never reads: other callers,
    net.info and async handlers answer at normal speed, the callee holds a bounded amount, and the
    frozen connection is dropped after NET_HEARTBEAT (here 3 s) without progress."""
    heartbeat = 3.0
    p = spawn("basic", "trusty", "hardening", env=peer_env(NET_HEARTBEAT=str(heartbeat)))
    assert basic.add(1, 1, peer=p.id) == 2 and hardening.aping(peer=p.id) == p.pid
    net.info(peer=p.id)
    baseline = status_kib(p.pid, "VmRSS")

    frozen = greeted(p, rcvbuf=4096)
    calls = [call_frame(n, hardening.ablob, MIB) for n in range(1, 5)]
    calls += [call_frame(n, trusty.blob, MIB) for n in range(5, 105)]
    frozen.sendall(b"".join(calls))
    stuck_since = time.monotonic()
    try:
        # The callee has built replies (a few MiB more resident) and cannot send them.
        until(lambda: status_kib(p.pid, "VmRSS") - baseline > 4 * 1024, 10, "the callee never built the replies")
        latencies = {"add": [], "info": [], "async": []}
        with net.timeout(3):
            for _ in range(5):
                latencies["add"].append(timed(basic.add, 2, 3, peer=p.id)[0])
                latencies["info"].append(timed(net.info, peer=p.id)[0])
                latencies["async"].append(timed(hardening.aping, peer=p.id)[0])
        worst = {name: max(values) for name, values in latencies.items()}
        print(f"while one caller is frozen: worst of 5 calls each {worst}")
        assert max(worst.values()) < 0.5, worst
        grown = status_kib(p.pid, "VmHWM") - baseline
        print(f"callee peak growth with 104 MiB of replies unread: {grown / 1024:.1f} MiB")
        assert grown < 48 * 1024, f"the callee grew by {grown / 1024:.0f} MiB for one frozen caller"
        elapsed = dropped_within(frozen, heartbeat * 1.25 + 5)
        assert elapsed is not None, "the frozen caller's connection was never dropped"
        since_stuck = time.monotonic() - stuck_since
        print(f"frozen connection dropped {since_stuck:.1f}s after it stopped reading (NET_HEARTBEAT={heartbeat:g})")
        assert since_stuck < heartbeat * 1.25 + 3
        assert basic.add(3, 4, peer=p.id) == 7
    finally:
        frozen.close()


# -- finding 2: unbounded buffering per connection ---------------------------------------------

def test_replies_a_caller_does_not_read_are_bounded_per_connection(spawn):
    """4,000 calls of 60 KiB on a connection that never reads its replies: the callee stops reading
    it once REPLY_BACKLOG (8 MiB) of replies wait; the rest waits in TCP on the caller's side."""
    p = spawn("basic", env=peer_env())
    assert basic.add(1, 1, peer=p.id) == 2
    baseline = status_kib(p.pid, "VmRSS")
    sock = greeted(p, rcvbuf=4096)
    try:
        value = b"v" * (60 * 1024)
        taken = push(sock, [call_frame(n, basic.echo, value) for n in range(1, 4001)])
        grown = status_kib(p.pid, "VmHWM") - baseline
        print(f"unread replies: the callee took {taken / MIB:.0f} MiB of calls, grew by {grown / 1024:.1f} MiB")
        assert grown < 32 * 1024, f"the callee grew by {grown / 1024:.0f} MiB for one connection"
        assert basic.add(2, 2, peer=p.id) == 4
    finally:
        sock.close()


def test_calls_queued_behind_busy_workers_are_bounded_and_their_caller_is_pinged(spawn):
    """With both workers busy, 1,000 calls of 200 KiB on one connection: the callee stops reading it
    after LINK_HELD (8 MiB) of queued calls, and PINGs it meanwhile (so a caller's heartbeat hears it)."""
    p = spawn("basic", "trusty", env=peer_env(NET_WORKERS="2"))
    assert basic.add(1, 1, peer=p.id) == 2
    baseline = status_kib(p.pid, "VmRSS")
    busy = [greeted(p) for _ in range(2)]
    flood = greeted(p)
    try:
        for n, sock in enumerate(busy):
            sock.sendall(call_frame(1, trusty.nap, 8 + n))
        p.wait_for("NAPPING", 10)
        p.wait_for("NAPPING", 10)
        value = b"q" * (200 * 1024)
        taken = push(flood, [call_frame(n, basic.echo, value) for n in range(1, 1001)])
        grown = status_kib(p.pid, "VmHWM") - baseline
        print(f"queued calls: the callee took {taken / MIB:.0f} MiB of calls, grew by {grown / 1024:.1f} MiB")
        assert grown < 32 * 1024, f"the callee grew by {grown / 1024:.0f} MiB of queued calls"
        flood.settimeout(2)
        decoder = wire.FrameDecoder(BIG_LIMIT)
        decoder.feed(flood.recv(65536))
        assert [frame.kind for frame in decoder.frames()][:1] == [Kind.PING], \
            "a connection the callee stopped reading must be PINGed"
    finally:
        for sock in [*busy, flood]:
            sock.close()


def test_calls_queued_over_all_connections_are_bounded_in_total(spawn):
    """24 connections each queue 6 MB (under LINK_HELD) behind the one busy worker, 144 MB in all:
    the callee stops reading those that hold calls once TOTAL_HELD (64 MiB) is held."""
    p = spawn("basic", "trusty", env=peer_env(NET_WORKERS="1"))
    assert basic.add(1, 1, peer=p.id) == 2
    baseline = status_kib(p.pid, "VmRSS")
    busy = greeted(p)
    floods = []
    try:
        busy.sendall(call_frame(1, trusty.nap, 12))
        p.wait_for("NAPPING", 10)
        frames = [call_frame(n, basic.echo, b"t" * (200 * 1024)) for n in range(1, 31)]
        taken = 0
        for _ in range(24):
            floods.append(greeted(p))
            taken += push(floods[-1], frames, quiet=0.3)
        grown = status_kib(p.pid, "VmHWM") - baseline
        print(f"queued calls, 24 connections: the callee took {taken / MIB:.0f} MiB of calls, "
              f"grew by {grown / 1024:.1f} MiB")
        assert grown < 100 * 1024, f"the callee grew by {grown / 1024:.0f} MiB of queued calls"
    finally:
        for sock in [busy, *floods]:
            sock.close()


def test_a_burst_behind_busy_workers_is_slowed_not_refused_and_the_heartbeat_holds(spawn, monkeypatch):
    """A legit burst (100 x 200 KiB, over LINK_HELD) while the only worker naps for 3 s, with this
    caller's NET_HEARTBEAT at 1 s: every call succeeds, none is refused, the link is not declared dead."""
    monkeypatch.setattr(net, "HEARTBEAT", 1.0)
    p = spawn("basic", "trusty", env=peer_env(NET_WORKERS="1"))
    nap = trusty.nap.submit(3, peer=p.id)
    p.wait_for("NAPPING", 10)
    value = b"b" * (200 * 1024)
    futures = [basic.echo.submit(value, peer=p.id) for _ in range(100)]
    assert all(future.result(30) == value for future in futures)
    assert nap.result(10) == p.pid


# -- finding 7: deadlines hold while sending ---------------------------------------------------

@contextmanager
def frozen_callee():
    """A 'peer' on 127.0.0.1 that greets its first caller and then never reads: its peer id."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)
    held = []

    def accept():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        held.append(conn)
        conn.settimeout(5)
        conn.recv(6)
        conn.sendall(wire.preamble())

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield ids.generate_id(listener.getsockname()[1], "127.0.0.1")
    finally:
        client.POOL.close_all()
        listener.close()
        thread.join(10)
        for conn in held:
            conn.close()


@pytest.mark.parametrize("size", [1024, 16 * MIB])
def test_acall_times_out_on_time_and_never_blocks_the_loop_while_sending(size, monkeypatch):
    monkeypatch.setattr(net, "HEARTBEAT", 2.0)      # before the fix: the heartbeat ends the stall
    value = b"a" * size

    async def run(peer):
        gaps = [0.0]

        async def tick():
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps[0] = max(gaps[0], now - last)
                last = now

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        try:
            with net.timeout(1):
                await basic.echo.acall(value, peer=peer)
        except net.NetError as exc:
            outcome = exc
        else:
            outcome = None
        elapsed = time.monotonic() - started
        ticker.cancel()
        return outcome, elapsed, gaps[0]

    with frozen_callee() as peer:
        outcome, elapsed, gap = asyncio.run(run(peer))
    print(f"acall({size:,} B) under net.timeout(1) to a frozen peer: {type(outcome).__name__} after "
          f"{elapsed:.2f}s, longest loop stall {gap * 1000:.0f} ms")
    assert isinstance(outcome, net.Timeout), outcome
    assert elapsed < 1.5
    assert gap < 0.25, f"the event loop stalled for {gap:.2f}s"


@pytest.mark.parametrize("size", [1024, 16 * MIB])
def test_a_blocking_call_times_out_on_time_whatever_its_size(size, monkeypatch):
    monkeypatch.setattr(net, "HEARTBEAT", 2.0)
    with frozen_callee() as peer:
        started = time.monotonic()
        with pytest.raises(net.Timeout), net.timeout(1):
            basic.echo(b"s" * size, peer=peer)
        elapsed = time.monotonic() - started
    print(f"call({size:,} B) under net.timeout(1) to a frozen peer: Timeout after {elapsed:.2f}s")
    assert elapsed < 1.5


# -- finding 8: connections that greet and then say nothing ------------------------------------

def test_silent_connections_cannot_lock_callers_out(spawn):
    """NET_MAX_CONNECTIONS=32 taken by connections that sent the preamble and nothing else: they are
    dropped NET_HANDSHAKE_TIMEOUT (here 1 s) after connecting, with a GOODBYE; callers get in."""
    p = spawn("basic", env=peer_env(NET_MAX_CONNECTIONS="32", NET_HANDSHAKE_TIMEOUT="1"))
    silent = [greeted(p) for _ in range(32)]
    started = time.monotonic()
    try:
        while True:
            try:
                assert basic.add(1, 1, peer=p.id) == 2
                break
            except net.PeerUnreachable:
                assert time.monotonic() - started < 4, "silent connections kept callers out"
                time.sleep(0.05)    # the peer frees slots on its own clock: retry, bounded
        print(f"a caller got in {time.monotonic() - started:.2f}s after 32 silent connections took every slot")
        silent[0].settimeout(5)
        decoder = wire.FrameDecoder(1 << 16)
        decoder.feed(silent[0].recv(65536))
        assert [frame.kind for frame in decoder.frames()] == [Kind.GOODBYE]
    finally:
        for sock in silent:
            sock.close()


# -- finding 11: the reply batch (send_soon / flush) races -------------------------------------

def frame(request_id, value=None):
    return wire.encode_frame(Kind.RESULT, request_id, value, max_message=1 << 20)


def test_a_reply_corked_after_the_reader_began_to_wait_is_still_sent():
    """A thread that is no longer the reader corks its reply (send_soon) just after the reader made
    its last flush and went to wait for bytes: the reply must still go out, not wait for the next call."""
    ours, theirs = socket.socketpair()
    in_recv = threading.Event()

    class Watched(socket.socket):
        def recv_into(self, *args):
            in_recv.set()           # the reader is past its flush, reading
            return super().recv_into(*args)

    framed = FramedSocket(Watched(ours.family, ours.type, fileno=ours.detach()), "pair", 1 << 20)
    at_cork = threading.Event()

    class Hooked(type(framed._corked)):
        def append(self, item):
            at_cork.set()               # the handler decided to cork: hold it until the reader waits
            assert in_recv.wait(5)
            super().append(item)

    framed._corked = Hooked()
    theirs.sendall(wire.frame_bytes(Kind.CALL, 1, None, max_message=1 << 20)
                   + wire.frame_bytes(Kind.CALL, 2, None, max_message=1 << 20))
    assert framed.receive().request_id == 1         # call 2 waits in the decoder: replies may cork
    in_recv.clear()                                 # that read was this thread's; the reader's comes next
    handler = threading.Thread(target=framed.send_soon, args=frame(1, "one"))
    handler.start()
    assert at_cork.wait(5)
    taken = []

    def read():
        taken.append(framed.receive())          # call 2
        taken.append(framed.receive())          # flushes, then waits for bytes (None when closed)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        handler.join(5)
        theirs.settimeout(2)
        decoder = wire.FrameDecoder(1 << 20)
        try:
            decoder.feed(theirs.recv(65536))
        except socket.timeout:
            pass
        assert [f.request_id for f in decoder.frames()] == [1], "the corked reply was stranded"
    finally:
        theirs.close()
        reader.join(5)
        framed.close()


def test_a_reply_corked_while_a_flush_runs_is_never_dropped():
    """Another thread corks a reply between the moment flush() takes the corked replies and the
    moment it is done with them: that reply goes out with this flush or the next, never lost."""
    ours, theirs = socket.socketpair()
    framed = FramedSocket(ours, "pair", 1 << 20)
    framed.decoder.ready_frames.append(wire.Frame(Kind.CALL, 9, None))   # more calls wait: replies cork

    class Hooked(type(framed._corked)):
        injected = False

        def _another_thread_corks(self):
            if not self.injected:
                self.injected = True
                other = threading.Thread(target=framed.send_soon, args=frame(2, "two"))
                other.start()
                other.join(5)

        def clear(self):
            self._another_thread_corks()
            super().clear()

        def popleft(self):
            item = super().popleft()
            self._another_thread_corks()
            return item

    framed._corked = Hooked()
    framed.send_soon(*frame(1, "one"))
    try:
        framed.flush()
        framed.flush()          # what the reader does before it next waits
        theirs.settimeout(2)
        decoder = wire.FrameDecoder(1 << 20)
        seen = []
        deadline = time.monotonic() + 2
        while len(seen) < 2 and time.monotonic() < deadline:
            try:
                decoder.feed(theirs.recv(65536))
            except socket.timeout:
                break
            seen += [f.request_id for f in decoder.frames()]
        assert sorted(seen) == [1, 2], f"replies sent: {seen}"
    finally:
        framed.close()
        theirs.close()
