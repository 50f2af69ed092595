"""Busy polling under contention: N caller processes against one callee, polling on and off.

    python bench/busy_poll.py [--callers 1 2 4 8] [--seconds 3] [--rounds 3]

Polling pays only while a CPU is spare; with more busy processes than CPUs a
poller would take the CPU from the peer it waits for (net/busy_poll.py). This
prints total calls/s of N sequential callers (each its own process) for a
callee and callers with the default NET_BUSY_POLL and with NET_BUSY_POLL=0,
interleaved round by round, and the ratio polling / not polling (>= ~1 means
polling never costs throughput; > 1 is its gain).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import baseline

CALLER = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
from echo_peer import echo
address = ("127.0.0.1", int(sys.argv[1]))
echo(b"x", peer=address)
calls, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    echo(b"x" * 32, peer=address)
    calls += 1
print(calls)
"""


def calls_per_s(port: str, callers: int, seconds: float, env: dict[str, str]) -> float:
    """Total calls/s of ``callers`` processes, each calling as fast as it can for ``seconds``."""
    processes = [subprocess.Popen([sys.executable, "-c", CALLER, port, str(seconds), HERE],
                                  stdout=subprocess.PIPE, text=True, env=env) for _ in range(callers)]
    total = 0
    for process in processes:
        out, _ = process.communicate(timeout=seconds + 60)
        total += int(out)
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    env = dict(os.environ, NET_HOST="127.0.0.1", NET_BIND="127.0.0.1", NET_DISCOVERY="off", NET_PORT_RANGE="0")
    polling = env.get("NET_BUSY_POLL", "100")      # the default, unless this run sets another
    servers = {mode: baseline.start_server(os.path.join(HERE, "echo_peer.py"),
                                           env=dict(env, NET_PORT_START=str(port), NET_BUSY_POLL=value))
               for mode, port, value in (("polling", 29470, polling),
                                         ("sleeping", 29471, "0"))}
    caller_env = dict(env, NET_PORT_START="29480", NET_PORT_RANGE="100")
    try:
        print(f"net busy polling under contention, {date.today()}, {platform.machine()} "
              f"{os.cpu_count()} cores, Python {platform.python_version()}; median of {options.rounds} "
              f"interleaved rounds of {options.seconds:g} s")
        print(f"{'callers':>8} {'polling calls/s':>16} {'NET_BUSY_POLL=0':>16} {'ratio':>7}")
        for callers in options.callers:
            figures = baseline.interleaved({
                mode: (lambda port=port, value=("0" if mode == "sleeping" else polling):
                       calls_per_s(port, callers, options.seconds,  # noqa: B023 (run in this iteration)
                                   dict(caller_env, NET_BUSY_POLL=value)))
                for mode, (_, port) in servers.items()}, options.rounds)
            print(f"{callers:8d} {baseline.median(figures['polling']):16.0f} "
                  f"{baseline.median(figures['sleeping']):16.0f} "
                  f"{baseline.ratio_per_round(figures, 'polling', 'sleeping'):6.2f}x")
    finally:
        for process, _ in servers.values():
            baseline.stop_server(process)


if __name__ == "__main__":
    main()
