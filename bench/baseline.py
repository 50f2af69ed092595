"""Raw-socket baseline: length-prefixed echo over a persistent TCP connection, threaded server.

Every net benchmark measures this in the same run and prints its figures as
ratios to it, because this shared machine's absolute speed drifts.

    python bench/baseline.py serve PORT     # the echo server (a separate process)
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Callable

LENGTH = struct.Struct("!I")


def use_loopback(port_start: int, port_range: int | None = None) -> None:
    """Keep this benchmark's peers on 127.0.0.1 (call before importing net)."""
    os.environ.setdefault("NET_HOST", "127.0.0.1")
    os.environ.setdefault("NET_BIND", "127.0.0.1")
    os.environ.setdefault("NET_PORT_START", str(port_start))
    if port_range is not None:
        os.environ.setdefault("NET_PORT_RANGE", str(port_range))
LIFETIME = 600.0        # the server process stops by itself after this long


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if not n:
            raise ConnectionError("closed")
        got += n
    return bytes(buffer)


def _serve_connection(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            (size,) = LENGTH.unpack(recv_exactly(conn, 4))
            body = recv_exactly(conn, size)
            if size < 65536:
                conn.sendall(LENGTH.pack(size) + body)
            else:
                conn.sendall(LENGTH.pack(size))
                conn.sendall(body)
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()


def serve(port: int, serve_connection: Callable[[socket.socket], None] = _serve_connection) -> None:
    """A threaded server on 127.0.0.1: prints READY PORT, stops on stdin EOF or after LIFETIME."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    print(f"READY {listener.getsockname()[1]}", flush=True)
    threading.Timer(LIFETIME, lambda: os._exit(0)).start()
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_connection, args=(conn,), daemon=True).start()


class RawClient:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, body: bytes) -> bytes:
        if len(body) < 65536:
            self.sock.sendall(LENGTH.pack(len(body)) + body)
        else:
            self.sock.sendall(LENGTH.pack(len(body)))
            self.sock.sendall(body)
        (size,) = LENGTH.unpack(recv_exactly(self.sock, 4))
        return recv_exactly(self.sock, size)

    def close(self) -> None:
        self.sock.close()


def start_server(script: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start a benchmark server process; returns it and the rest of its READY line."""
    proc = subprocess.Popen([sys.executable, script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    line = proc.stdout.readline().strip()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"{script} did not start: {line!r}")
    return proc, line[len("READY "):]


def stop_server(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


# -- measurements shared by raw and net ----------------------------------------------------------
def sequential(call: Callable[[], object], count: int) -> dict[str, float]:
    """calls/s, p50 and p99 (microseconds) of ``count`` back-to-back calls."""
    times = []
    for _ in range(min(200, count // 10)):
        call()
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    times.sort()
    return {"calls_per_s": count / elapsed, "p50_us": times[len(times) // 2] * 1e6,
            "p99_us": times[int(len(times) * 0.99)] * 1e6}


def threaded(make_call: Callable[[], Callable[[], object]], threads: int, per_thread: int) -> float:
    """calls/s with ``threads`` threads each making ``per_thread`` calls (make_call runs per thread)."""
    calls = [make_call() for _ in range(threads)]
    for call in calls:
        call()
    barrier = threading.Barrier(threads + 1)

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        for _ in range(per_thread):
            call()

    workers = [threading.Thread(target=run, args=(c,)) for c in calls]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    return threads * per_thread / (time.perf_counter() - started)


def cpu_per_call(call: Callable[[], object], server_pid: int, count: int) -> float:
    """CPU microseconds per call, this process and the server process together (Linux /proc)."""
    def server_cpu() -> float:
        with open(f"/proc/{server_pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    call()
    mine, theirs = time.process_time(), server_cpu()
    for _ in range(count):
        call()
    return (time.process_time() - mine + server_cpu() - theirs) / count * 1e6


def best_time(action: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - t0)
    return best


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def interleaved(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every measure once per round, round after round; each measure's figures, by round.

    On a shared machine whose speed drifts by tens of percent within a minute,
    comparing figures from the same round (ratio per round, then the median of
    those) is far steadier than comparing one long run of each.
    """
    figures: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            figures[name].append(measure())
    return figures


def ratio_per_round(figures: dict[str, list[float]], name: str, baseline_name: str = "raw") -> float:
    """The median over rounds of ``name``'s figure divided by the baseline's in the same round."""
    return median([ours / theirs for ours, theirs in zip(figures[name], figures[baseline_name])])


def measure_raw_big_and_first(port: int, small: bytes, big: bytes, repeat_big: int) -> dict[str, float]:
    """Raw-socket time of a big echo and of connect + first small call."""
    client = RawClient(port)
    figures = {"big_echo_s": best_time(lambda: client.call(big), repeat_big)}

    def first_call() -> None:
        fresh = RawClient(port)
        fresh.call(small)
        fresh.close()

    figures["first_call_s"] = best_time(first_call, 20)
    client.close()
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit("usage: baseline.py serve PORT")
