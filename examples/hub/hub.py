"""A hub peer that publishes headlines to whoever subscribes.

    python3 examples/hub/hub.py --subscribers 2      # terminal 1: waits for 2 subscribers
    python3 examples/hub/subscriber.py               # terminals 2 and 3
"""
import argparse
import base64
import time

import net

net.IS_HUB = True                   # same as NET_IS_HUB=1: subscribers can ask for hubs only


@net.event("headline")
def headline(text, number):
    """Runs before delivery: shape what subscribers receive (must return args, kwargs)."""
    return [text.strip()], {"number": number}


def subscriber_count():
    table = net.Peer().SUBSCRIPTIONS.get(base64.b64encode(b"headline"), {})
    return len(table)


def main():
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--subscribers", type=int, default=1, help="wait for this many subscribers")
    options.add_argument("--count", type=int, default=5, help="headlines to publish")
    options.add_argument("--interval", type=float, default=0.5, help="seconds between headlines")
    args = options.parse_args()

    peer = net.Peer()
    print(f"hub {peer.id.decode()} on {peer.host}:{peer.port}: waiting for {args.subscribers} "
          f"subscriber(s)", flush=True)
    deadline = time.monotonic() + 60
    while subscriber_count() < args.subscribers and time.monotonic() < deadline:
        time.sleep(0.05)
    for number in range(1, args.count + 1):
        headline(f"  headline {number}: peers found each other  ", number)   # returns at once
        print(f"published headline {number} to {subscriber_count()} subscriber(s)", flush=True)
        time.sleep(args.interval)
    time.sleep(1)                   # let the last deliveries leave before the process ends
    peer.close()


if __name__ == "__main__":
    main()
