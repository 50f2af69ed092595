"""What a handler can ask about the call it is running in: which peer, cancelled or not."""
from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..peer import Peer

current_request: contextvars.ContextVar[RequestState | None] = contextvars.ContextVar(
    "net_current_request", default=None)


class RequestState:
    """Server-side state of one request: set to cancelled when the caller sends CANCEL."""

    __slots__ = ("request_id", "caller", "peer", "cancelled", "on_cancel")

    def __init__(self, request_id: int, caller: str, peer: Peer | None = None):
        self.request_id = request_id
        self.caller = caller
        self.peer = peer                # the peer serving this request (what net.Peer() returns)
        self.cancelled = False
        self.on_cancel: Callable[[], object] | None = None  # run once on cancel (e.g. cancel an asyncio task)

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        hook = self.on_cancel
        if hook is not None:
            hook()


def serving_peer() -> Peer | None:
    """The peer serving the current call, or None outside a handler."""
    state = current_request.get()
    return state.peer if state is not None else None


def cancelled() -> bool:
    """True inside a handler whose caller cancelled the call (or timed out); False elsewhere."""
    state = current_request.get()
    return state is not None and state.cancelled
