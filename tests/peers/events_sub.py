"""A subscriber for the event tests, configured by environment variables.

NET_TEST_EVENT      event name to subscribe to
NET_TEST_PUBLISHER  "host:port" of the publisher; "on_host" (discovery on this host) or "lan"
                    (every peer on the LAN, the spec's plain form: network-namespace labs only)
NET_TEST_GROUPS     with on_host: comma-separated group filter
NET_TEST_HUBS_ONLY  with on_host: 1 to subscribe to hubs only
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

GROUPS = [g for g in os.environ.get("NET_TEST_GROUPS", "").split(",") if g] or None

if PUBLISHER == "lan":
    subscribe = net.subscribe(EVENT)
elif PUBLISHER == "on_host":
    subscribe = net.subscribe(EVENT, groups=GROUPS, on_host=True,
                              hubs_only=os.environ.get("NET_TEST_HUBS_ONLY") == "1")
else:
    subscribe = net.subscribe(EVENT, peers=PUBLISHER)


@subscribe
def handle(value, **kwargs):
    print(f"EVENT {EVENT} {value}", flush=True)
    if MODE == "crash":
        raise ValueError(f"handler crashed on {value}")
    if MODE == "slow":
        time.sleep(SLOW)
