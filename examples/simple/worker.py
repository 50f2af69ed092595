"""A peer that offers one connection: run it with `python3 -m net serve examples/simple/worker.py`."""
import os

import net


@net.connect()
def render(frame):
    """Pretend to render a frame; say which process did the work."""
    return f"rendered frame {frame} in process {os.getpid()}"
