"""App version 1 calls a peer running app version 2, by tag and (failing) by path.

    (cd examples/tagged/v2 && python3 -m net serve app.module)    # terminal 1: version 2
    (cd examples/tagged/v1 && python3 main.py)                     # terminal 2: version 1
"""
import sys

from app import module

import net

found = net.peers(on_host=True, refresh=True, groups=["app-v2"])   # drop on_host to search the LAN
if not found:
    sys.exit("no app-v2 peer: start one with `cd examples/tagged/v2 && python3 -m net serve app.module`")
v2 = found[0]

print("tagged:  ", module.function("frame 7", peer=v2))       # "MyTaggedFunction" reaches function2
try:
    module.report("frame 7", peer=v2)                         # app.module.report no longer exists there
except net.InvalidConnection as error:
    print("untagged:", type(error).__name__, "-", error)
