"""Streamed results between real processes: order, back-pressure, early stop, errors, bounded pool."""
import asyncio
import gc
import itertools
import time

import calls
import pytest
from support import peer_env

import net

_tokens = itertools.count()


def token(name):
    return f"{name}-{next(_tokens)}-{time.monotonic_ns()}"


def test_hundred_thousand_items_arrive_in_order(spawn):
    p = spawn("calls")
    expected = 0
    for item in calls.count(100_000, peer=p.id):
        assert item == expected
        expected += 1
    assert expected == 100_000


def test_async_generator_streams_with_async_for(spawn):
    p = spawn("calls")

    async def consume():
        seen = [x async for x in calls.acount.acall(20_000, peer=p.id)]
        awaited = await calls.count.acall(3, peer=p.id)        # await gives the stream too
        return seen, [x async for x in awaited]

    seen, small = asyncio.run(consume())
    assert seen == list(range(20_000))
    assert small == [0, 1, 2]


def test_empty_stream_and_local_call_unchanged(spawn):
    p = spawn("calls")
    assert list(calls.count(0, peer=p.id)) == []
    assert list(calls.count(3)) == [0, 1, 2]            # no peer=: the local generator


def test_break_runs_the_remote_finally(spawn):
    p = spawn("calls")
    tag = token("break")
    for item in calls.guarded(tag, peer=p.id):
        if item == 5:
            break
    gc.collect()            # the loop's stream is garbage now; dropping it cancels the remote
    assert "finally" in calls.observed(tag, "finally", peer=p.id)
    tag = token("close")
    stream = calls.guarded(tag, peer=p.id)
    assert next(stream) == 0
    stream.close()
    assert "finally" in calls.observed(tag, "finally", peer=p.id)
    assert calls.add(1, 2, peer=p.id) == 3              # the connection is still fine


def test_async_break_and_task_cancel_stop_the_remote_async_generator(spawn):
    p = spawn("calls")
    broke, cancelled = token("abreak"), token("acancel")

    async def consume():
        async with calls.aguarded.acall(broke, peer=p.id) as stream:
            async for item in stream:
                if item == 3:
                    break

        async def endless():
            async for _ in calls.aguarded.acall(cancelled, peer=p.id):
                await asyncio.sleep(0.001)

        task = asyncio.ensure_future(endless())
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: calls.observed(cancelled, "item", peer=p.id))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(consume())
    assert {"cancelled", "finally"} <= set(calls.observed(broke, "finally", peer=p.id))
    assert "finally" in calls.observed(cancelled, "finally", peer=p.id)


def test_producer_never_runs_more_than_the_window_ahead(spawn, monkeypatch):
    p = spawn("calls")
    monkeypatch.setattr(net, "STREAM_WINDOW", 16)
    tag = token("window")
    stream = calls.guarded(tag, peer=p.id)
    assert next(stream) == 0
    deadline = time.monotonic() + 10
    while calls.produced(tag, peer=p.id) < 16 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)         # give an unbounded producer the chance to run on
    assert 16 <= calls.produced(tag, peer=p.id) <= 1 + 16      # consumed + window
    for expected in range(1, 40):                       # consuming hands credit back
        assert next(stream) == expected
    assert 40 <= calls.produced(tag, peer=p.id) <= 40 + 16
    stream.close()
    assert "finally" in calls.observed(tag, "finally", peer=p.id)


def test_big_items_are_bounded_by_bytes_too(spawn):
    """512 items of 1 MiB would be 512 MiB ahead: the producer stops at 16 MiB (streams.WINDOW_BYTES)."""
    from net.serving import streams
    p = spawn("calls")
    tag = token("big")
    size = 1024 * 1024
    stream = calls.big_guarded(tag, size, 60, peer=p.id)
    assert next(stream) == b"\x00" * size
    limit = streams.WINDOW_BYTES // size + 1
    deadline = time.monotonic() + 10
    while calls.produced(tag, peer=p.id) < limit - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)         # give an unbounded producer the chance to run on
    assert limit - 1 <= calls.produced(tag, peer=p.id) <= limit
    rest = list(stream)                                  # credit flows back: no stall
    assert len(rest) == 59 and rest[-1][:1] == bytes([59])


def test_items_arrive_as_they_are_produced(spawn):
    p = spawn("calls")
    tag = token("slow")
    with calls.slow_items(tag, 0.4, peer=p.id) as stream:
        for expected in range(3):
            index, sent_at = next(stream)
            assert index == expected
            assert time.time() - sent_at < 0.3, "an item waited for the next one to be produced"


def test_stalled_streams_hold_no_worker_thread(spawn, monkeypatch):
    """Six streams nobody reads, on a peer with two workers, leave its pool free for calls."""
    p = spawn("calls", env=peer_env(NET_WORKERS="2"))
    monkeypatch.setattr(net, "STREAM_WINDOW", 4)
    tags = [token("stall") for _ in range(6)]
    stalled = [calls.guarded(tag, peer=p.id) for tag in tags]
    for tag in tags:
        assert "started" in calls.observed(tag, "started", peer=p.id)
    with net.timeout(10):
        assert calls.add(2, 3, peer=p.id) == 5
    for stream in stalled:
        stream.close()
    for tag in tags:
        assert "finally" in calls.observed(tag, "finally", peer=p.id)


def test_net_workers_bounds_the_handlers_running_at_once(spawn):
    """Six slow calls at once on a peer with NET_WORKERS=2: two run at a time, all finish."""
    p = spawn("calls", env=peer_env(NET_WORKERS="2"))
    futures = [calls.overlapping_sleep.submit(0.3, peer=p.id) for _ in range(6)]
    assert [f.result(timeout=20) for f in futures] == [0.3] * 6
    assert calls.most_overlapping(peer=p.id) == 2


def test_error_mid_stream_arrives_after_the_items(spawn):
    p = spawn("calls")
    seen = []
    with pytest.raises(net.RemoteError, match="broke after 3") as caught:
        for item in calls.fails_after(3, peer=p.id):
            seen.append(item)
    assert seen == [0, 1, 2]
    assert caught.value.remote_type == "ValueError"


def test_stream_and_plain_call_mismatches_are_clear_errors(spawn):
    p = spawn("calls")
    with pytest.raises(net.RemoteError, match="not a generator or iterable"):
        list(calls.not_a_generator.stream(peer=p.id))
    with pytest.raises(TypeError, match="generator"):
        calls.count.submit(3, peer=p.id)

    @net.connect("calls.count")
    def count_stub(n):        # a plain-function stub for a remote generator
        raise AssertionError("not run locally")

    with pytest.raises(net.RemoteError, match="call it as a stream"):
        count_stub(3, peer=p.id)
    assert list(count_stub.stream(3, peer=p.id)) == [0, 1, 2]

    @net.connect("NobodyStreamsThis")
    def missing():
        yield None

    with pytest.raises(net.InvalidConnection, match="NobodyStreamsThis"):
        list(missing(peer=p.id))

    async def missing_async():
        async for _ in missing.acall(peer=p.id):
            pass

    with pytest.raises(net.InvalidConnection, match=r"calls\.count"):
        asyncio.run(missing_async())


def test_bytes_chunks_stream(spawn):
    p = spawn("calls")
    total = 0
    for chunk in calls.chunks(256 * 1024, 40, peer=p.id):
        assert chunk[:2] == b"\xab\xab" and len(chunk) == 256 * 1024
        total += len(chunk)
    assert total == 40 * 256 * 1024


def test_a_stalled_stream_times_out_per_item_and_is_cancelled(spawn):
    p = spawn("calls")
    tag = token("stalled")
    with net.timeout(0.3):
        stream = calls.slow_items(tag, 1.0, peer=p.id)
    assert next(stream)[0] == 0             # the first item comes at once
    with pytest.raises(net.Timeout, match=r"sent nothing for 0\.3s"):
        next(stream)
    assert "finally" in calls.observed(tag, "finally", peer=p.id)
    with pytest.raises(StopIteration):
        next(stream)


def test_bad_stream_frames_from_a_caller_cost_nothing(spawn):
    """Malformed CREDIT is ignored, a window that is not a number falls back to the default,
    and a caller sending stream items (callee-only frames) loses only its own connection."""
    import socket

    from net.wire import frames as wire
    from net.wire.frames import Kind
    p = spawn("calls")
    key = calls.count.key
    sock = socket.create_connection(p.address, timeout=5)
    try:
        sock.sendall(wire.preamble())
        assert sock.recv(6) == wire.preamble()
        size = 1 << 20
        for payload in ("many", -5, 0, None, [1], True):
            sock.sendall(wire.frame_bytes(Kind.CREDIT, 7, payload, max_message=size))
        sock.sendall(wire.frame_bytes(Kind.CALL, 9, [key, [3], {}, {"stream": "lots"}], max_message=size))
        decoder = wire.FrameDecoder(size)
        frames = []
        while not frames or frames[-1].kind is not Kind.STREAM_END:
            decoder.feed(sock.recv(65536))
            frames.extend(decoder.frames())
        assert [item for f in frames if f.kind is Kind.STREAM_ITEM for item in f.payload] == [0, 1, 2]
        sock.sendall(wire.frame_bytes(Kind.STREAM_ITEM, 9, [1], max_message=size))
        sock.settimeout(5)
        while sock.recv(65536):
            pass                    # the peer sends GOODBYE or nothing, then closes
    finally:
        sock.close()
    assert list(calls.count(2, peer=p.id)) == [0, 1]


def test_an_async_generator_waiting_for_credit_sees_cancelled_error_when_stopped(spawn, monkeypatch):
    """With a window of 2 the producer is parked awaiting credit when the caller stops: the generator
    must still see CancelledError (not only GeneratorExit), as for a task cancelled mid-item."""
    monkeypatch.setattr(net, "STREAM_WINDOW", 2)
    p = spawn("calls")
    tag = token("parked")

    async def consume():
        async with calls.aguarded.acall(tag, peer=p.id) as stream:
            async for _ in stream:
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: calls.produced(tag, peer=p.id))     # let the producer fill the window
                break

    asyncio.run(consume())
    assert {"cancelled", "finally"} <= set(calls.observed(tag, "finally", peer=p.id))
