"""Core benchmark: net against a raw Python socket echo, measured in the same run.

    python bench/core.py [--quick]

Prints each figure for both and the ratio (targets from issue #2 in brackets).
Everything runs on 127.0.0.1; both servers are separate processes.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import baseline  # noqa: E402

baseline.use_loopback(29100)
from net import client  # noqa: E402

SMALL = b"x" * 32
BIG = os.urandom(16 * 1024 * 1024)
IN_FLIGHT = 100             # concurrent acalls from one event-loop thread
CHUNK = 256 * 1024          # streamed bytes arrive in chunks of this size


def acall_throughput(call, total: int, in_flight: int = IN_FLIGHT) -> float:
    """calls/s of ``await call()`` with ``in_flight`` calls outstanding, all on one loop thread."""
    async def run() -> float:
        remaining = [total]

        async def lane() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await call()

        await asyncio.gather(*(call() for _ in range(in_flight)))       # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        return total / (time.perf_counter() - started)

    return asyncio.run(run())


def stream_rate(open_stream, repeat: int) -> float:
    """Best items/s (or bytes/s, via the per-item weight) of draining ``open_stream()``."""
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        amount = sum(1 if not isinstance(item, bytes) else len(item) for item in open_stream())
        best = max(best, amount / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    options = parser.parse_args()
    count, per_thread, repeat_big = (2000, 300, 2) if options.quick else (20000, 2500, 5)
    threads = 8

    raw_proc, raw_port = baseline.start_server(os.path.join(HERE, "baseline.py"), "serve", "0")
    env = dict(os.environ, NET_PORT_START="29200", NET_PORT_RANGE="50")
    net_proc, net_port = baseline.start_server(os.path.join(HERE, "echo_peer.py"), env=env)
    try:
        raw = baseline.measure_raw(int(raw_port), SMALL, BIG, count, threads, per_thread, repeat_big)
        address = ("127.0.0.1", int(net_port))
        from echo_peer import echo
        ours = baseline.sequential(lambda: echo(SMALL, peer=address), count)
        ours["threads_calls_per_s"] = baseline.threaded(lambda: (lambda: echo(SMALL, peer=address)),
                                                        threads, per_thread)
        ours["big_echo_s"] = baseline.best_time(lambda: echo(BIG, peer=address), repeat_big)

        def first_call() -> None:
            client.POOL.close_all()
            echo(SMALL, peer=address)

        ours["first_call_s"] = baseline.best_time(first_call, 20)

        # issue #8: asyncio and streams, against the same run's raw figures
        from echo_peer import chunks, echo_async, items
        ours["acall_per_s"] = acall_throughput(lambda: echo.acall(SMALL, peer=address), count)
        ours["acall_async_per_s"] = acall_throughput(lambda: echo_async.acall(SMALL, peer=address), count)
        n_items = 20 * count
        ours["stream_items_per_s"] = stream_rate(lambda: items(n_items, 7, peer=address), 3)
        ours["stream_bytes_per_s"] = stream_rate(lambda: chunks(len(BIG), CHUNK, peer=address), repeat_big)
    finally:
        baseline.stop_server(raw_proc)
        baseline.stop_server(net_proc)

    raw["acall_per_s"] = raw["acall_async_per_s"] = raw["threads_calls_per_s"]
    raw["stream_items_per_s"] = raw["calls_per_s"]
    raw["stream_bytes_per_s"] = len(BIG) / raw["big_echo_s"]
    rows = [
        ("sequential small calls/s", "calls_per_s", True, ">= 0.75x"),
        ("sequential p50 (us)", "p50_us", False, ""),
        ("sequential p99 (us)", "p99_us", False, ""),
        (f"{threads} threads calls/s", "threads_calls_per_s", True, ">= 0.6x"),
        ("16 MiB bytes echo (s)", "big_echo_s", False, "<= 3x time"),
        ("first call to a new peer (s)", "first_call_s", False, "<= 2x time"),
        (f"acall, {IN_FLIGHT} in flight, 1 loop/s", "acall_per_s", True, ">= 0.6x raw 8 threads"),
        ("  same, async handler /s", "acall_async_per_s", True, "(vs raw 8 threads)"),
        ("streamed small items/s", "stream_items_per_s", True, ">= 100,000/s (vs raw seq calls)"),
        ("streamed bytes B/s", "stream_bytes_per_s", True, ">= 0.5x raw 16 MiB echo rate"),
    ]
    print(f"net core benchmark, {date.today()}, {platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}{' (quick)' if options.quick else ''}")
    print(f"{'figure':32} {'raw socket':>12} {'net':>12} {'net/raw':>9}  target")
    for label, key, _higher_better, target in rows:
        ratio = ours[key] / raw[key]
        print(f"{label:32} {raw[key]:12.6g} {ours[key]:12.6g} {ratio:8.2f}x  {target}")


if __name__ == "__main__":
    main()
