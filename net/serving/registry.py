"""The functions this process serves: ``@net.connect`` functions and the built-ins, by key. No I/O.

Keys are what the spec shows: ``base64(tag)`` for tagged connections,
``base64("module.function")`` for untagged ones. The table is process-wide
(``net.peer._Peer.CONNECTIONS``), so every peer in a process serves the same
functions.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from ..wire import ids

CONNECTIONS: dict[bytes, Callable[..., Any]] = {}


def connection_name(function: Callable[..., Any], tag: str | None = None) -> str:
    return tag if tag is not None else ids.function_path(function)


def add_connection(function: Callable[..., Any], tag: str | None = None) -> bytes:
    key = ids.key(connection_name(function, tag))
    CONNECTIONS[key] = function
    return key


def is_streaming(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` remotely yields a stream (it is a generator function)."""
    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)


def describe(key: bytes) -> dict[str, Any]:
    """What a caller may want to know about a connection: name, signature, first doc line."""
    function = CONNECTIONS[key]
    try:
        signature = str(inspect.signature(function))
    except (TypeError, ValueError):
        signature = "(...)"
    doc = inspect.getdoc(function) or ""
    return {
        "name": ids.name_of(key),
        "key": key.decode("ascii"),
        "signature": signature,
        "doc": doc.splitlines()[0] if doc else "",
        "async": inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function),
        "stream": is_streaming(function),
    }
