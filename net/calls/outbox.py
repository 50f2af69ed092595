"""Calls made on one event loop, sent together when the loop's turn ends (``acall`` batching)."""
from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .link import OutboundLink


class LoopOutbox:
    """Calls made on one event loop for one connection, sent together when the loop's turn ends.

    A hundred ``acall``s started in one turn cost one ``sendall`` instead of a
    hundred (and as many GIL hand-offs to the reading thread). A call abandoned
    before the flush (cancelled, timed out) is simply left out.
    """

    __slots__ = ("connection", "loop", "frames", "scheduled")

    def __init__(self, connection: OutboundLink, loop: asyncio.AbstractEventLoop):
        self.connection = connection
        self.loop = loop
        self.frames: list[tuple[int, bytes]] = []
        self.scheduled = False

    def add(self, request_id: int, data: bytes) -> None:
        self.frames.append((request_id, data))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        frames, self.frames = self.frames, []
        pending = self.connection.pending
        live = [(request_id, data) for request_id, data in frames if request_id in pending]
        if live:
            self.connection.send_batch(b"".join(data for _, data in live),
                                       [request_id for request_id, _ in live])


_outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[OutboundLink, LoopOutbox]] = \
    weakref.WeakKeyDictionary()


def outbox(loop: asyncio.AbstractEventLoop, connection: OutboundLink) -> LoopOutbox:
    """The one outbox of ``connection`` on ``loop`` (made on first use)."""
    boxes = _outboxes.get(loop)
    if boxes is None:
        boxes = _outboxes.setdefault(loop, {})
    box = boxes.get(connection)
    if box is None:
        if len(boxes) > 64:             # forget outboxes of dead connections
            for old in [c for c in boxes if c.dead is not None]:
                del boxes[old]
        box = boxes[connection] = LoopOutbox(connection, loop)
    return box
