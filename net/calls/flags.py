"""Flags: handlers a caller runs when a remote connection returns a flag instead of a value.

A flag travels as its key, ``base64(name)`` (``NULL``, ``INVALID_CONNECTION``,
or one registered with ``@net.flag``); the table is process-wide
(``net.peer._Peer.FLAGS``).
"""
from __future__ import annotations

from typing import Any, Callable

from ..wire import ids

FLAGS: dict[bytes, Callable[..., Any]] = {}


def add_flag(name: str, handler: Callable[..., Any]) -> bytes:
    key = ids.key(name)
    FLAGS[key] = handler
    return key
