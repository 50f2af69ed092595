"""Run a peer for tests: import the handler modules named on the command line, print READY, serve.

Stops by itself when stdin closes (the test process went away) or after
NET_TEST_LIFETIME seconds, so no test can leave it behind.
"""
import importlib
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lifetime

import net

for name in sys.argv[1:]:
    importlib.import_module(name)

peer = net.Peer()
print(f"READY {peer.id.decode()} {peer.port}", flush=True)

done = threading.Event()


def watch_stdin() -> None:
    try:
        while sys.stdin.read(1):
            pass
    except (OSError, ValueError):
        pass
    done.set()


threading.Thread(target=watch_stdin, daemon=True).start()
done.wait(lifetime.limit())
peer.close()
