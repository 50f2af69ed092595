"""A publisher that triggers NET_TEST_EVENT by itself: 0, 1, 2, ... every NET_TEST_TICK seconds.

Bounded: at most 2000 events, and the process stops by itself (tests/peers/serve.py).
"""
import os
import threading
import time

import net

EVENT = os.environ["NET_TEST_EVENT"]
TICK = float(os.environ.get("NET_TEST_TICK", "0.05"))


@net.event(EVENT)
def tick(*args, **kwargs):
    return args, kwargs


def run():
    for i in range(2000):
        tick(i)
        time.sleep(TICK)


threading.Thread(target=run, daemon=True).start()
