"""A subscriber that wants NET_TEST_EVENT_COUNT events from one publisher and prints net's warnings.

NET_TEST_EVENT        prefix of the event names: <prefix>_0, <prefix>_1, ...
NET_TEST_EVENT_COUNT  how many of them
NET_TEST_PUBLISHER    "host:port" of the publisher

Prints ``LOG <message>`` for every warning on the ``net`` logger (before READY for the first
subscribe), and ``EVENT <name> <value>`` for every event it handles.
"""
import logging
import os

import net

EVENT = os.environ["NET_TEST_EVENT"]
COUNT = int(os.environ["NET_TEST_EVENT_COUNT"])


class _Print(logging.Handler):
    def emit(self, record):
        print("LOG " + record.getMessage().replace("\n", " | "), flush=True)


net.LOGGER.addHandler(_Print(logging.WARNING))


def _handler(name):
    def handle(value, **kwargs):
        print(f"EVENT {name} {value}", flush=True)
    return handle


for i in range(COUNT):
    net.subscribe(f"{EVENT}_{i}", peers=os.environ["NET_TEST_PUBLISHER"])(_handler(f"{EVENT}_{i}"))
