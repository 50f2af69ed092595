"""Load and soak: many client threads in several processes call one serving peer for a while.

    python bench/soak.py --minutes 10                     # the recorded run (docs/security.md)
    python bench/soak.py --seconds 20 --security tls      # shorter, over mutual TLS
    python bench/soak.py --seconds 3 --json               # the CI variant (tests/test_soak.py)

Everything runs on 127.0.0.1. Reports calls done, errors (target 0), latency
p50/p99/max, calls/s, and the serving peer's RSS after warm-up and at the end
(target: flat after warm-up), and events: the serving peer publishes
EVENT_RATE numbered events a second that every client process subscribes
to; losses and reordering are counted (target 0). Latency is measured per call in the callers;
RSS is sampled from /proc every second. ``--security key|tls`` runs the same
load with NET_SECRET or mutual TLS (certificates made in a temporary
directory with net.cli.certs). ``SOAK_TRACEMALLOC=15`` makes the serving peer
print, at the end, what its Python heap grew by since second 15 (leak hunting).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

KEY = "soak-test shared key, not a secret"
EVENT_RATE = 200        # events a second from the serving peer to every client process
PAYLOADS = [b"x" * 64, {"frame": 12, "path": "/shots/a/b/c.exr", "tags": ["a", "b"]}, b"y" * 16384]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


# -- the serving peer ---------------------------------------------------------------------------
def serve() -> None:
    import net

    @net.connect("soak.echo")
    def echo(value):
        return value

    @net.connect("soak.work")
    def work(n):
        return sum(range(int(n)))

    @net.event("soak.tick")
    def tick(*args, **kwargs):
        return args, kwargs

    def publish() -> None:
        """Events alongside the calls: EVENT_RATE a second, numbered so subscribers can count losses."""
        i = 0
        while True:
            tick(i)
            i += 1
            time.sleep(1 / EVENT_RATE)

    peer = net.Peer()
    threading.Thread(target=publish, daemon=True).start()
    print(f"READY {peer.port}", flush=True)
    if os.environ.get("SOAK_TRACEMALLOC"):
        trace_growth(float(os.environ["SOAK_TRACEMALLOC"]))
    else:
        threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    threading.Event().wait(float(os.environ.get("SOAK_LIFETIME", "3600")))
    os._exit(0)


def trace_growth(warmup: float) -> None:
    """SOAK_TRACEMALLOC=<seconds>: on exit, print to stderr what grew since warm-up (finding leaks)."""
    import tracemalloc
    tracemalloc.start(12)
    marks: list = []
    threading.Timer(warmup, lambda: marks.append(tracemalloc.take_snapshot())).start()

    def report() -> None:
        sys.stdin.read()
        if marks:
            growth = tracemalloc.take_snapshot().compare_to(marks[0], "traceback")
            for stat in growth[:8]:
                print(f"{stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+d} blocks", file=sys.stderr)
                for line in stat.traceback.format()[-12:]:
                    print("   " + line, file=sys.stderr)
        sys.stderr.flush()
        os._exit(0)

    threading.Thread(target=report, daemon=True).start()


# -- one client process -------------------------------------------------------------------------
def clients(port: int, threads: int, seconds: float) -> None:
    import net

    @net.connect("soak.echo")
    def echo(value):
        return value

    @net.connect("soak.work")
    def work(n):
        return n

    address = ("127.0.0.1", port)
    seen: list[int] = []

    @net.subscribe("soak.tick", peers=address)
    def on_tick(i):
        seen.append(i)

    stop_at = time.monotonic() + seconds
    results: list[tuple[int, int, list[float], list[str]]] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        latencies: list[float] = []
        errors: list[str] = []
        calls = 0
        i = index
        while time.monotonic() < stop_at:
            i += 1
            payload = PAYLOADS[i % len(PAYLOADS)]
            began = time.perf_counter()
            try:
                with net.timeout(10):
                    if i % 10 == 0:
                        assert work(1000, peer=address) == 499500
                    else:
                        assert echo(payload, peer=address) == payload
                latencies.append(time.perf_counter() - began)
                calls += 1
            except Exception as exc:        # counted and reported, never fatal to the soak
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
        with lock:
            results.append((calls, len(errors), latencies, errors[:5]))

    workers = [threading.Thread(target=run, args=(n * 1000,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    net.Peer()      # keep receiving a moment: events fired before stop_at are still in flight
    time.sleep(0.5)
    events = list(seen)
    latencies = sorted(x for r in results for x in r[2])
    print(json.dumps({"events_received": len(events),
                      "events_expected": (events[-1] - events[0] + 1) if events else 0,
                      "events_out_of_order": sum(1 for a, b in zip(events, events[1:]) if b <= a),
                      "calls": sum(r[0] for r in results), "errors": sum(r[1] for r in results),
                      "error_samples": [e for r in results for e in r[3]][:5],
                      # a sample keeps the pipe small; percentiles are merged from samples
                      "latency_sample": latencies[:: max(1, len(latencies) // 20000)]}), flush=True)


# -- the orchestrator ---------------------------------------------------------------------------
def security_env(mode: str, workdir: str) -> dict[str, str]:
    if mode == "key":
        return {"NET_SECRET": KEY}
    if mode == "tls":
        from pathlib import Path

        from net.cli import certs
        directory = Path(workdir)
        certs.create_ca(directory)
        certs.create_peer(directory, "soak")
        return {"NET_TLS_CERT": str(directory / "soak.pem"), "NET_TLS_KEY": str(directory / "soak.key"),
                "NET_TLS_CA": str(directory / "ca.pem")}
    return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="client threads per process")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--security", choices=["plain", "key", "tls"], default="plain")
    parser.add_argument("--port", type=int, default=29400, help="first port the serving peer tries")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    options = parser.parse_args()
    seconds = options.minutes * 60 if options.minutes is not None else options.seconds

    workdir = tempfile.mkdtemp(prefix="net-soak-")
    env = dict(os.environ, NET_HOST="127.0.0.1", NET_BIND="127.0.0.1", NET_PORT_START=str(options.port),
               NET_PORT_RANGE="40", PYTHONPATH=ROOT, SOAK_LIFETIME=str(seconds + 120),
               **security_env(options.security, workdir))
    server = subprocess.Popen([sys.executable, __file__, "serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True)
    try:
        line = server.stdout.readline()
        if not line.startswith("READY"):
            print(f"serving peer failed to start: {line!r}", file=sys.stderr)
            return 1
        port = int(line.split()[1])
        rss: list[tuple[float, int]] = []
        began = time.monotonic()
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                rss.append((time.monotonic() - began, rss_kib(server.pid)))
                stop_sampling.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        callers = [subprocess.Popen([sys.executable, __file__, "clients", str(port), str(options.threads),
                                     str(seconds)], stdout=subprocess.PIPE, env=env, text=True)
                   for _ in range(options.processes)]
        reports = []
        for caller in callers:
            out, _ = caller.communicate(timeout=seconds + 120)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        elapsed = time.monotonic() - began
        stop_sampling.set()
        sampler.join()
    finally:
        server.stdin.close()
        server.wait(timeout=10)

    latencies = sorted(x for r in reports for x in r["latency_sample"])
    warm = [kib for t, kib in rss if t >= min(10.0, seconds * 0.2)] or [kib for _, kib in rss]
    summary = {
        "security": options.security, "processes": options.processes, "threads": options.threads,
        "seconds": round(elapsed, 1), "calls": sum(r["calls"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "error_samples": [e for r in reports for e in r["error_samples"]][:5],
        "calls_per_s": round(sum(r["calls"] for r in reports) / elapsed),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "events_received": sum(r["events_received"] for r in reports),
        "events_lost": sum(r["events_expected"] - r["events_received"] for r in reports),
        "events_out_of_order": sum(r["events_out_of_order"] for r in reports),
        "rss_start_kib": rss[0][1] if rss else None,
        "rss_after_warmup_kib": warm[0] if warm else None,
        "rss_end_kib": rss[-1][1] if rss else None,
        "rss_max_after_warmup_kib": max(warm) if warm else None,
    }
    step = max(1, len(rss) // 10)
    summary["rss_timeline_kib"] = [f"{t:.0f}s:{kib}" for t, kib in rss[::step]] + \
        ([f"{rss[-1][0]:.0f}s:{rss[-1][1]}"] if rss else [])
    summary["rss_growth_after_warmup_kib"] = (summary["rss_end_kib"] - summary["rss_after_warmup_kib"]
                                             if warm else None)
    if options.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:28} {value}")
    return 0 if summary["errors"] == 0 and summary["events_lost"] == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve()
    elif len(sys.argv) > 1 and sys.argv[1] == "clients":
        clients(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(main())
