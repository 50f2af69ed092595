"""A subscriber that says when each event arrived: ``EVENT <name> <value> <time.monotonic()>``.

NET_TEST_EVENT      event name to subscribe to
NET_TEST_PUBLISHER  "host:port" of the publisher

CLOCK_MONOTONIC is one clock for every process of the machine (Linux), so the test compares the
arrival time with the time it fired the event.
"""
import os
import time

import net

EVENT = os.environ["NET_TEST_EVENT"]


@net.subscribe(EVENT, peers=os.environ["NET_TEST_PUBLISHER"])
def handle(value, **kwargs):
    print(f"EVENT {EVENT} {value!r} {time.monotonic()!r}", flush=True)
