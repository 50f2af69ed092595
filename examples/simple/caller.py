"""Find the worker peer on this machine and call its `render` as if it were local.

    python3 -m net serve examples/simple/worker.py     # terminal 1
    python3 examples/simple/caller.py                  # terminal 2
"""
import sys

from worker import render  # the same function, so the same connection key (worker.render)

import net

# on_host=True looks only at this machine's ports; drop it to search the whole LAN.
found = net.peers(on_host=True, refresh=True)
others = [peer_id for peer_id in found.ids if peer_id != net.Peer().id]   # this process is a peer too
if not others:
    sys.exit("no worker found: start one with `python3 -m net serve examples/simple/worker.py`")
worker = others[0]

print("local call: ", render(12))                   # a plain local call
print("remote call:", render(12, peer=worker))      # runs in the worker's process
with net.timeout(2.5):
    print("worker info:", net.info(peer=worker)["pid"])
