"""Core benchmark: net against a raw Python socket echo, measured in the same run.

    python bench/core.py [--quick]

Prints each figure for both and the ratio (targets from issue #2 in brackets).
Everything runs on 127.0.0.1; every server is a separate process. net runs with
its defaults; the NET_BUSY_POLL=0 rows show calls without busy polling.
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

import baseline
import minimal_rpc

baseline.use_loopback(29100)
from net.calls import client

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
    rounds, count, per_thread, repeat_big = (4, 500, 100, 2) if options.quick else (12, 2000, 600, 5)
    threads = 8

    raw_proc, raw_port = baseline.start_server(os.path.join(HERE, "baseline.py"), "serve", "0")
    floor_proc, floor_port = baseline.start_server(os.path.join(HERE, "minimal_rpc.py"), "serve", "0")
    env = dict(os.environ, NET_PORT_START="29200", NET_PORT_RANGE="50")
    net_proc, net_port = baseline.start_server(os.path.join(HERE, "echo_peer.py"), env=env)
    quiet_proc, quiet_port = baseline.start_server(os.path.join(HERE, "echo_peer.py"),
                                                   env=dict(env, NET_BUSY_POLL="0"))
    try:
        from echo_peer import echo

        import net
        address = ("127.0.0.1", int(net_port))
        quiet_address = ("127.0.0.1", int(quiet_port))
        net.BUSY_POLL, polling = 0, net.BUSY_POLL   # read when a connection opens: this one never polls
        echo(SMALL, peer=quiet_address)
        net.BUSY_POLL = polling
        floor_address = ("127.0.0.1", int(floor_port))
        raw_client = baseline.RawClient(int(raw_port))
        floor = minimal_rpc.MinimalClient(int(floor_port), echo.key)            # net's wire, no features
        floor_to_net = minimal_rpc.MinimalClient(int(net_port), echo.key)

        # Sequential calls and 8 threads: every contender once per round, ratios taken per round.
        sequential = {
            "raw": lambda: raw_client.call(SMALL),
            "net": lambda: echo(SMALL, peer=address),
            "no_polling": lambda: echo(SMALL, peer=quiet_address),     # NET_BUSY_POLL=0 on both sides
            "floor": lambda: floor.call(SMALL),
            "client_side": lambda: echo(SMALL, peer=floor_address),     # net calling the floor server
            "server_side": lambda: floor_to_net.call(SMALL),            # the floor client calling net
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in sequential}
        seq = baseline.interleaved(
            {name: (lambda name=name, call=call: _record(runs[name], baseline.sequential(call, count)))
             for name, call in sequential.items()}, rounds)
        thr = baseline.interleaved({
            "raw": lambda: baseline.threaded(lambda: (lambda c=baseline.RawClient(int(raw_port)): c.call(SMALL)),  # noqa: B008 (a client per thread)
                                             threads, per_thread),
            "net": lambda: baseline.threaded(lambda: (lambda: echo(SMALL, peer=address)), threads, per_thread),
            "no_polling": lambda: baseline.threaded(lambda: (lambda: echo(SMALL, peer=quiet_address)),
                                                    threads, per_thread),
        }, rounds)
        cpu = {}
        if os.path.exists(f"/proc/{net_proc.pid}/stat"):
            cpu = baseline.interleaved({
                "raw": lambda: baseline.cpu_per_call(lambda: raw_client.call(SMALL), raw_proc.pid, count * 2),
                "net": lambda: baseline.cpu_per_call(lambda: echo(SMALL, peer=address), net_proc.pid, count * 2),
                "no_polling": lambda: baseline.cpu_per_call(lambda: echo(SMALL, peer=quiet_address),
                                                            quiet_proc.pid, count * 2),
            }, max(2, rounds // 3))
        raw_client.close()
        floor.close()
        floor_to_net.close()

        raw = baseline.measure_raw_big_and_first(int(raw_port), SMALL, BIG, repeat_big)
        ours = {"big_echo_s": baseline.best_time(lambda: echo(BIG, peer=address), repeat_big)}

        def first_call() -> None:
            client.POOL.close_all()
            echo(SMALL, peer=address)

        ours["first_call_s"] = baseline.best_time(first_call, 20)

        # issue #8: asyncio and streams, against the same run's raw figures
        from echo_peer import chunks, echo_async, items
        ours["acall_per_s"] = acall_throughput(lambda: echo.acall(SMALL, peer=address), rounds * count)
        ours["acall_async_per_s"] = acall_throughput(lambda: echo_async.acall(SMALL, peer=address),
                                                     rounds * count)
        n_items = 20 * rounds * count
        ours["stream_items_per_s"] = stream_rate(lambda: items(n_items, 7, peer=address), 3)
        ours["stream_bytes_per_s"] = stream_rate(lambda: chunks(len(BIG), CHUNK, peer=address), repeat_big)
    finally:
        baseline.stop_server(raw_proc)
        baseline.stop_server(floor_proc)
        baseline.stop_server(net_proc)
        baseline.stop_server(quiet_proc)

    median = baseline.median
    print(f"net core benchmark, {date.today()}, {platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}{' (quick)' if options.quick else ''}; "
          f"calls and threads: median of {rounds} interleaved rounds")
    print(f"{'figure':34} {'raw socket':>12} {'net':>12} {'net/raw':>9}  target")

    def row(label: str, theirs: float, mine: float, ratio: float, target: str = "") -> None:
        print(f"{label:34} {theirs:12.6g} {mine:12.6g} {ratio:8.2f}x  {target}")

    def p(name: str, key: str) -> float:
        return median([run[key] for run in runs[name]])

    row("sequential small calls/s", median(seq["raw"]), median(seq["net"]),
        baseline.ratio_per_round(seq, "net"), ">= 0.75x")
    row("sequential p50 (us)", p("raw", "p50_us"), p("net", "p50_us"), p("net", "p50_us") / p("raw", "p50_us"))
    row("sequential p99 (us)", p("raw", "p99_us"), p("net", "p99_us"), p("net", "p99_us") / p("raw", "p99_us"))
    row("  same, NET_BUSY_POLL=0/s", median(seq["raw"]), median(seq["no_polling"]),
        baseline.ratio_per_round(seq, "no_polling"), "(no busy polling on either side)")
    row("  same, NET_BUSY_POLL=0 p50 (us)", p("raw", "p50_us"), p("no_polling", "p50_us"),
        p("no_polling", "p50_us") / p("raw", "p50_us"))
    if cpu:
        row("  CPU per call, both sides (us)", median(cpu["raw"]), median(cpu["net"]),
            baseline.ratio_per_round(cpu, "net"), "(sequential; busy polling included)")
        row("  same, NET_BUSY_POLL=0 (us)", median(cpu["raw"]), median(cpu["no_polling"]),
            baseline.ratio_per_round(cpu, "no_polling"))
    for name, label, note in (("floor", "  floor: minimal msgpack RPC/s", "(no features: bench/minimal_rpc.py)"),
                              ("client_side", "  net client -> floor server/s", "(net's calling side)"),
                              ("server_side", "  floor client -> net server/s", "(net's serving side)")):
        row(label, median(seq["raw"]), median(seq[name]), baseline.ratio_per_round(seq, name), note)
    row(f"{threads} threads calls/s", median(thr["raw"]), median(thr["net"]),
        baseline.ratio_per_round(thr, "net"), ">= 0.6x")
    row("  same, NET_BUSY_POLL=0/s", median(thr["raw"]), median(thr["no_polling"]),
        baseline.ratio_per_round(thr, "no_polling"), "(no busy polling on either side)")
    row("16 MiB bytes echo (s)", raw["big_echo_s"], ours["big_echo_s"], ours["big_echo_s"] / raw["big_echo_s"],
        "<= 3x time")
    row("first call to a new peer (s)", raw["first_call_s"], ours["first_call_s"],
        ours["first_call_s"] / raw["first_call_s"], "<= 2x time")
    raw_threads, raw_seq = median(thr["raw"]), median(seq["raw"])
    row(f"acall, {IN_FLIGHT} in flight, 1 loop/s", raw_threads, ours["acall_per_s"],
        ours["acall_per_s"] / raw_threads, ">= 0.6x raw 8 threads")
    row("  same, async handler /s", raw_threads, ours["acall_async_per_s"],
        ours["acall_async_per_s"] / raw_threads, "(vs raw 8 threads)")
    row("streamed small items/s", raw_seq, ours["stream_items_per_s"], ours["stream_items_per_s"] / raw_seq,
        ">= 100,000/s (vs raw seq calls)")
    raw_rate = len(BIG) / raw["big_echo_s"]
    row("streamed bytes B/s", raw_rate, ours["stream_bytes_per_s"], ours["stream_bytes_per_s"] / raw_rate,
        ">= 0.5x raw 16 MiB echo rate")


def _record(runs: list[dict[str, float]], figures: dict[str, float]) -> float:
    """Keep a sequential run's percentiles; its calls/s is the round's figure."""
    runs.append(figures)
    return figures["calls_per_s"]


if __name__ == "__main__":
    main()
