"""A subscriber for the event tests, configured by environment variables.

NET_TEST_EVENT      event name to subscribe to
NET_TEST_PUBLISHER  "host:port" of the publisher, or "on_host" to find publishers by discovery
NET_TEST_MODE       good (default) | crash (raises after printing) | slow (sleeps NET_TEST_SLOW s)

Prints ``EVENT <name> <first arg>`` for every event it handles, in the order handled.
"""
import os
import time

import net

EVENT = os.environ["NET_TEST_EVENT"]
PUBLISHER = os.environ["NET_TEST_PUBLISHER"]
MODE = os.environ.get("NET_TEST_MODE", "good")
SLOW = float(os.environ.get("NET_TEST_SLOW", "0.2"))

if PUBLISHER == "on_host":
    subscribe = net.subscribe(EVENT, on_host=True)
else:
    subscribe = net.subscribe(EVENT, peers=PUBLISHER)


@subscribe
def handle(value, **kwargs):
    print(f"EVENT {EVENT} {value}", flush=True)
    if MODE == "crash":
        raise ValueError(f"handler crashed on {value}")
    if MODE == "slow":
        time.sleep(SLOW)
