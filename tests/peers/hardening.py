"""Handlers for tests/test_hardening_send.py: async handlers on the peer's one event loop."""
import os

import net


@net.connect()
async def ablob(size):
    """An async handler's reply of ``size`` bytes (runs on the peer's one event loop)."""
    return b"x" * size


@net.connect()
async def aping():
    return os.getpid()

