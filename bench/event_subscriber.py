"""A subscriber for bench/events.py: counts deliveries; on ("end",) prints DONE <count> and resets.

    python bench/event_subscriber.py HOST:PORT

Stops by itself when stdin closes or after 600 s.
"""
from __future__ import annotations

import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import net

count = 0


@net.subscribe("bench", peers=sys.argv[1])
def on_bench(value, *rest):
    global count
    if value == "end":
        print(f"DONE {count}", flush=True)
        count = 0
    else:
        count += 1


print(f"READY {net.Peer().port}", flush=True)
threading.Timer(600, lambda: os._exit(0)).start()
sys.stdin.read()
os._exit(0)
