"""Run net.peers() on request inside a lab host: one JSON line in, one ``RESULT`` line out.

Input lines are the keyword arguments of ``net.peers`` as JSON, optionally
with ``"args": [...]`` for positionals. Output: ``RESULT {"elapsed": s,
"peers": {id: entry}, "groups": {name: [ids]}, "first": id}`` or ``ERROR
{"type": ..., "message": ...}``. Starts no peer of its own. Stops on stdin
EOF or after NET_TEST_LIFETIME seconds.
"""
import json
import sys
import time

import lifetime

import net

print("READY discoverer 0", flush=True)
lifetime.exit_after_lifetime()

for line in sys.stdin:
    request = json.loads(line)
    args = request.pop("args", [])
    began = time.monotonic()
    try:
        found = net.peers(*args, **request)
    except Exception as exc:
        print("ERROR " + json.dumps({"type": type(exc).__name__, "message": str(exc)}), flush=True)
        continue
    elapsed = time.monotonic() - began
    print("RESULT " + json.dumps({
        "elapsed": elapsed,
        "peers": {peer_id.decode(): entry for peer_id, entry in found["peers"].items()},
        "groups": {name: [i.decode() for i in ids] for name, ids in found.items() if name != "peers"},
        "first": found[0].decode() if found else None,
    }), flush=True)
