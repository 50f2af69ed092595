"""asyncio calls, Futures, cancellation and liveness between real processes on loopback."""
import asyncio
import concurrent.futures
import itertools
import signal
import threading
import time

import calls
import pytest
from support import peer_env

import net

_tokens = itertools.count()


def token(name):
    return f"{name}-{next(_tokens)}-{time.monotonic_ns()}"


def test_thousand_concurrent_acalls_cost_no_thread_each(spawn):
    p = spawn("calls")
    callee_threads_before = calls.thread_count(peer=p.id)
    peak = [threading.active_count()]

    async def run():
        async def sample():
            while True:
                peak[0] = max(peak[0], threading.active_count())
                await asyncio.sleep(0.05)

        sampler = asyncio.ensure_future(sample())
        started = time.monotonic()
        results = await asyncio.gather(*(calls.asleep.acall(1, i, peer=p.id) for i in range(1000)))
        elapsed = time.monotonic() - started
        sampler.cancel()
        return results, elapsed

    results, elapsed = asyncio.run(run())
    assert results == list(range(1000))
    assert elapsed < 20, f"1,000 one-second async calls took {elapsed:.1f}s: they did not overlap"
    assert peak[0] < 40, f"the caller grew to {peak[0]} threads"
    assert calls.thread_count(peer=p.id) < callee_threads_before + 20


def test_async_handlers_and_sync_calls_share_one_connection(spawn):
    p = spawn("calls")
    from net.calls import client

    async def run():
        return await asyncio.gather(calls.asleep.acall(0.2, "a", peer=p.id),
                                    calls.add.acall(1, 2, peer=p.id))

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        blocking = pool.submit(calls.add, 5, 5, peer=p.id)
        future = calls.add.submit(2, 2, peer=p.id)
        assert asyncio.run(run()) == ["a", 3]
        assert blocking.result(10) == 10 and future.result(10) == 4
    assert len([c for c in client.POOL.connections() if c.port == p.port]) == 1


def test_cancelled_task_is_seen_by_the_async_handler(spawn):
    p = spawn("calls")
    tag = token("task")

    async def run():
        task = asyncio.ensure_future(calls.wait_for_cancel.acall(tag, peer=p.id))
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: calls.observed(tag, "started", peer=p.id))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await calls.add.acall(1, 1, peer=p.id)      # the connection is still usable

    assert asyncio.run(run()) == 2
    assert calls.observed(tag, "cancelled", peer=p.id) == ["started", "cancelled"]


def test_cancelled_future_is_seen_by_the_sync_handler(spawn):
    p = spawn("calls")
    tag = token("future")
    future = calls.sync_wait_for_cancel.submit(tag, peer=p.id)
    assert "started" in calls.observed(tag, "started", peer=p.id)
    assert future.cancel()
    assert calls.observed(tag, "cancelled", peer=p.id) == ["started", "cancelled"]
    assert calls.add(2, 2, peer=p.id) == 4


def test_timeouts_cancel_remotely_in_every_calling_form(spawn):
    p = spawn("calls")
    blocking, submitted, awaited = token("t-call"), token("t-submit"), token("t-acall")
    with net.timeout(0.5):
        with pytest.raises(net.Timeout):
            calls.wait_for_cancel(blocking, peer=p.id)
        future = calls.sync_wait_for_cancel.submit(submitted, peer=p.id)
    with pytest.raises(net.Timeout):
        future.result(10)

    async def run():
        with net.timeout(0.5):
            await calls.wait_for_cancel.acall(awaited, peer=p.id)

    with pytest.raises(net.Timeout):
        asyncio.run(run())
    for tag in (blocking, submitted, awaited):
        assert calls.observed(tag, "cancelled", peer=p.id) == ["started", "cancelled"]
    assert calls.add(3, 3, peer=p.id) == 6


def test_long_call_survives_on_heartbeats(spawn, monkeypatch):
    """A call lasting many heartbeat periods, with no deadline, is not cut off."""
    monkeypatch.setattr(net, "HEARTBEAT", 1.5)      # not less: a loaded machine stalls for 0.5 s at times
    p = spawn("calls")
    assert calls.sleep(4, peer=p.id) == 4


def test_frozen_callee_is_detected_during_a_call_without_deadline(spawn, monkeypatch):
    """SIGSTOP the callee while a Future, an acall, a stream and an async stream wait on it."""
    monkeypatch.setattr(net, "HEARTBEAT", 1.5)
    p = spawn("calls")
    tag = token("frozen")
    future = calls.sync_wait_for_cancel.submit(tag, peer=p.id)
    assert "started" in calls.observed(tag, "started", peer=p.id)
    stream = calls.guarded(token("frozen-stream"), peer=p.id)
    assert next(stream) == 0

    async def frozen():
        waiting = asyncio.ensure_future(calls.asleep.acall(60, peer=p.id))
        astream = calls.aguarded.acall(token("frozen-astream"), peer=p.id)
        assert await astream.__anext__() == 0
        p.signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(net.PeerUnreachable, match="stopped answering"):
            async for _ in astream:
                pass
        with pytest.raises(net.PeerUnreachable, match="stopped answering"):
            await waiting
        return time.monotonic() - started

    try:
        detected = asyncio.run(frozen())
        with pytest.raises(net.PeerUnreachable, match="stopped answering"):
            future.result(timeout=30)
        with pytest.raises(net.PeerUnreachable):
            for _ in stream:
                pass
    finally:
        p.signal(signal.SIGCONT)
    assert detected < 10, f"a frozen peer took {detected:.1f}s to detect with NET_HEARTBEAT=1.5"


@pytest.mark.slow
def test_sixty_second_call_with_heartbeats_succeeds(spawn, monkeypatch):
    monkeypatch.setattr(net, "HEARTBEAT", 2.0)
    p = spawn("calls", env=peer_env(NET_TEST_LIFETIME="300"))
    assert calls.sleep(60, peer=p.id) == 60

    async def run():
        return await calls.asleep.acall(60, "done", peer=p.id)

    assert asyncio.run(run()) == "done"


def test_submitted_deadlines_share_one_thread(spawn):
    p = spawn("calls")
    before = threading.active_count()
    with net.timeout(30):
        futures = [calls.asleep.submit(0.5, i, peer=p.id) for i in range(300)]
    during = threading.active_count()
    assert [f.result(30) for f in futures] == list(range(300))
    assert during < before + 10, f"{during - before} threads appeared for 300 submitted calls"


def test_every_calling_form_survives_an_idle_connection_closed_by_the_callee(spawn):
    p = spawn("calls", env=peer_env(NET_IDLE_TIMEOUT="0.1"))
    assert calls.add(1, 1, peer=p.id) == 2

    async def run():
        return [await calls.add.acall(2, 2, peer=p.id), [x async for x in calls.count.acall(2, peer=p.id)]]

    idle = 0.35                     # longer than the callee's idle timeout: it closes our connection
    time.sleep(idle)
    assert asyncio.run(run()) == [4, [0, 1]]
    time.sleep(idle)
    assert calls.add.submit(3, 3, peer=p.id).result(10) == 6
    time.sleep(idle)
    assert list(calls.count(3, peer=p.id)) == [0, 1, 2]
    time.sleep(idle)
    assert calls.add(4, 4, peer=p.id) == 8
