"""Make calls on request inside a lab host: one JSON line in, one ``RESULT`` line out.

Input: ``{"host": h, "port": p, "fn": "add", "args": [...], "timeout": s or null}``
(``fn`` names a connection of tests/peers/basic.py, trusty.py or events_pub.py). Output:
``RESULT {"value": ..., "error": type name or null, "message": str, "elapsed": s}``.
Starts no peer of its own. Stops on stdin EOF or after NET_TEST_LIFETIME seconds.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import basic
import events_pub
import lifetime
import trusty

import net

print("READY caller 0", flush=True)
lifetime.exit_after_lifetime()

for line in sys.stdin:
    request = json.loads(line)
    function = next(getattr(module, request["fn"]) for module in (basic, trusty, events_pub)
                    if hasattr(module, request["fn"]))
    began = time.monotonic()
    value, error, message = None, None, ""
    try:
        with net.timeout(request.get("timeout")):
            value = function(*request.get("args", []), peer=(request["host"], request["port"]))
    except net.NetError as exc:
        error, message = type(exc).__name__, str(exc)
    print("RESULT " + json.dumps({"value": value, "error": error, "message": message,
                                  "elapsed": time.monotonic() - began}), flush=True)
