"""The peer this process runs, as the layers below the public surface see it.

``net.peer`` creates the process's peer and records it here, so the event and
discovery code can ask for this process's address and loop without importing
the public surface (which imports them).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .request import serving_peer

if TYPE_CHECKING:
    from ..peer import Peer

lock = threading.RLock()        # held while the process's peer is created or forgotten
_instance: Peer | None = None


def process_peer() -> Peer | None:
    """The process's peer if it has been started (a ``net.peer._Peer``), else None."""
    return _instance


def set_process_peer(peer: Peer) -> None:
    global _instance
    _instance = peer


def forget_process_peer(peer: Peer) -> None:
    """Forget ``peer`` if it is the process's peer (it was closed)."""
    global _instance
    with lock:
        if _instance is peer:
            _instance = None


def running() -> Peer | None:
    """The peer serving the current call, else the process's peer if started; None otherwise."""
    return serving_peer() or _instance
