"""Events benchmark: trigger-call latency and fan-out throughput, against raw sockets in the same run.

    python bench/events.py [--quick]

* trigger median: how long ``hook(i)`` takes to return with 10 subscribers
  (target <= 50 us); for scale, the median round trip of a raw-socket echo.
* deliveries/s: one publisher (this process) to 10 subscriber processes,
  from the first trigger until every subscriber has handled every event
  (target >= 10,000/s); for scale, a raw-socket fan-out: the same number of
  small messages written to 10 echo server processes, each echo read back.
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import baseline

baseline.use_loopback(29300, 20)
import net

SUBSCRIBERS = 10
PACED_EVENTS_PER_S = 1500       # x 10 subscribers: 15,000 deliveries/s, a batch every trigger or two
PAYLOAD = {"frame": 0, "name": "render", "value": 1.5}


@net.event("bench")
def bench_event(*args, **kwargs):
    return args, kwargs


def start_subscribers(count: int) -> list[subprocess.Popen]:
    address = f"{net.Peer().host}:{net.Peer().port}"
    env = dict(os.environ, NET_PORT_START="29400", NET_PORT_RANGE="100")
    procs = []
    for _ in range(count):
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "event_subscriber.py"), address],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            proc.kill()
            raise RuntimeError(f"subscriber did not start: {line!r}")
        procs.append(proc)
    return procs


def wait_done(procs: list[subprocess.Popen]) -> list[int]:
    """Every subscriber's DONE count (each has handled everything before the 'end' marker)."""
    counts = []
    for proc in procs:
        line = proc.stdout.readline()
        if not line.startswith("DONE"):
            raise RuntimeError(f"subscriber said {line!r}")
        counts.append(int(line.split()[1]))
    return counts


def trigger_times(procs: list[subprocess.Popen], count: int) -> tuple[float, float]:
    """Median and p99 (us) of ``count`` trigger calls with every subscriber listening."""
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        bench_event(i, PAYLOAD)
        times.append(time.perf_counter() - t0)
    bench_event("end")
    counts = wait_done(procs)
    assert counts == [count] * len(procs), counts
    times.sort()
    return statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6


def deliveries_per_second(procs: list[subprocess.Popen], count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        bench_event(i, PAYLOAD)
    bench_event("end")
    counts = wait_done(procs)
    elapsed = time.perf_counter() - started
    assert counts == [count] * len(procs), f"events were dropped: {counts}"
    return count * len(procs) / elapsed


def paced(procs: list[subprocess.Popen], rate: int, seconds: float) -> tuple[float, float]:
    """Trigger ``rate`` events/s for ``seconds``; returns the deliveries/s achieved end to end and
    the lag (s) between the last trigger and the last subscriber finishing."""
    count = int(rate * seconds)
    started = time.perf_counter()
    for i in range(count):
        due = started + i / rate
        while time.perf_counter() < due:
            time.sleep(max(0.0, min(0.001, due - time.perf_counter())))
        bench_event(i, PAYLOAD)
    last = time.perf_counter()
    bench_event("end")
    counts = wait_done(procs)
    done = time.perf_counter()
    assert counts == [count] * len(procs), f"events were dropped: {counts}"
    return count * len(procs) / (done - started), done - last


def raw_fanout(ports: list[int], count: int) -> float:
    """Raw sockets: ``count`` small messages to each echo server, pipelined, every echo read back."""
    import msgpack
    body = msgpack.packb([0, PAYLOAD])
    message = baseline.LENGTH.pack(len(body)) + body
    socks = []
    for port in ports:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)

    def drain(sock: socket.socket) -> None:
        for _ in range(count):
            (size,) = baseline.LENGTH.unpack(baseline.recv_exactly(sock, 4))
            baseline.recv_exactly(sock, size)

    readers = [threading.Thread(target=drain, args=(s,)) for s in socks]
    started = time.perf_counter()
    for reader in readers:
        reader.start()
    for _ in range(count):
        for sock in socks:
            sock.sendall(message)
    for reader in readers:
        reader.join()
    elapsed = time.perf_counter() - started
    for sock in socks:
        sock.close()
    return count * len(socks) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    options = parser.parse_args()
    triggers, throughput_events, echo_calls = (1000, 1000, 2000) if options.quick else (5000, 5000, 10000)

    raw_servers = [baseline.start_server(os.path.join(HERE, "baseline.py"), "serve", "0")
                   for _ in range(SUBSCRIBERS)]
    try:
        raw_client = baseline.RawClient(int(raw_servers[0][1]))
        raw = baseline.sequential(lambda: raw_client.call(b"x" * 32), echo_calls)
        raw_client.close()
        raw["fanout_per_s"] = raw_fanout([int(port) for _, port in raw_servers], throughput_events)
    finally:
        for proc, _ in raw_servers:
            baseline.stop_server(proc)

    procs = start_subscribers(SUBSCRIBERS)
    try:
        median_us, p99_us = trigger_times(procs, triggers)
        rate = max(deliveries_per_second(procs, throughput_events) for _ in range(2))
        paced_rate, lag = paced(procs, PACED_EVENTS_PER_S, 1.0 if options.quick else 3.0)
    finally:
        for proc in procs:
            baseline.stop_server(proc)

    print(f"net events benchmark, {date.today()}, {platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}{' (quick)' if options.quick else ''}")
    print(f"{'figure':44} {'raw socket':>12} {'net':>12} {'net/raw':>9}  target")
    print(f"{'trigger call median, 10 subscribers (us)':44} {raw['p50_us']:12.1f} {median_us:12.1f} "
          f"{median_us / raw['p50_us']:8.2f}x  <= 50 us (raw: one echo round trip)")
    print(f"{'trigger call p99, 10 subscribers (us)':44} {raw['p99_us']:12.1f} {p99_us:12.1f} "
          f"{p99_us / raw['p99_us']:8.2f}x")
    print(f"{'deliveries/s, 1 publisher -> 10 processes':44} {raw['fanout_per_s']:12.0f} {rate:12.0f} "
          f"{rate / raw['fanout_per_s']:8.2f}x  >= 10,000/s (raw: pipelined echo fan-out)")
    print(f"{'paced ' + format(PACED_EVENTS_PER_S * SUBSCRIBERS, ',') + ' deliveries/s: achieved':44} "
          f"{'':12} {paced_rate:12.0f} {'':9}  (events triggered at a steady rate, small batches)")
    print(f"{'  lag after the last trigger (ms)':44} {'':12} {lag * 1e3:12.1f}")


if __name__ == "__main__":
    main()
