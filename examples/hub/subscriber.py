"""Subscribe to the hub's headlines and print them (see hub.py for how to run)."""
import argparse
import threading

import net

options = argparse.ArgumentParser(description=__doc__)
options.add_argument("--count", type=int, default=5, help="exit after this many headlines")
args = options.parse_args()
done = threading.Event()
seen = []


# No peers=: net finds the publishers itself. hubs_only keeps to hubs; on_host=True keeps the
# search on this machine (drop it to subscribe to hubs across the LAN).
@net.subscribe("headline", hubs_only=True, on_host=True)
def on_headline(text, number=None):
    seen.append(number)
    print(f"subscriber {net.Peer().port} got #{number}: {text}", flush=True)
    if len(seen) >= args.count:
        done.set()


print(f"subscriber {net.Peer().port} subscribed", flush=True)
if not done.wait(60):
    raise SystemExit(f"only {len(seen)} of {args.count} headlines arrived")
net.Peer().close()
