"""The net side of the core benchmark: a peer serving `echo`, in its own process."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import net


@net.connect("bench.echo")
def echo(value):
    return value


@net.connect("bench.echo_async")
async def echo_async(value):
    return value


@net.connect("bench.items")
def items(count, item):
    """Stream ``count`` copies of ``item`` (streamed small items per second)."""
    for _ in range(count):
        yield item


@net.connect("bench.chunks")
def chunks(total, size):
    """Stream ``total`` bytes in ``size``-byte chunks (streamed bytes throughput)."""
    chunk = os.urandom(size)
    for _ in range(total // size):
        yield chunk


if __name__ == "__main__":
    peer = net.Peer()
    print(f"READY {peer.port}", flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    threading.Event().wait(600)
