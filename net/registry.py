"""Name -> function tables for connections, flags and subscriptions. No I/O.

Keys are what the spec shows: ``base64(tag)`` for tagged connections,
``base64("module.function")`` for untagged ones, ``base64(name)`` for flags.
The tables are process-wide (class attributes of ``net.peer._Peer``), so
every peer in a process serves the same functions.
"""
from __future__ import annotations

import collections
import inspect
from typing import Any, Callable

from . import identity

CONNECTIONS: dict[bytes, Callable[..., Any]] = {}
FLAGS: dict[bytes, Callable[..., Any]] = {}
SUBSCRIPTIONS: dict[bytes, dict[bytes, Any]] = {}     # base64(event) -> {subscriber id: its record}
STALE: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)  # subscribers pruned lately

_NAMES: dict[bytes, str] = {}       # key -> readable name, for errors and listings


def connection_name(function: Callable[..., Any], tag: str | None = None) -> str:
    return tag if tag is not None else identity.function_path(function)


def add_connection(function: Callable[..., Any], tag: str | None = None) -> bytes:
    name = connection_name(function, tag)
    key = identity.key(name)
    CONNECTIONS[key] = function
    _NAMES[key] = name
    return key


def add_flag(name: str, handler: Callable[..., Any]) -> bytes:
    key = identity.key(name)
    FLAGS[key] = handler
    return key


def name_of(key: bytes | str) -> str:
    """Readable name of a registry key, also for keys this process does not know."""
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    known = _NAMES.get(key)
    if known is not None:
        return known
    try:
        return identity.decode_text(key)
    except Exception:
        return repr(key)


def describe(key: bytes) -> dict[str, Any]:
    """What a caller may want to know about a connection: name, signature, first doc line."""
    function = CONNECTIONS[key]
    try:
        signature = str(inspect.signature(function))
    except (TypeError, ValueError):
        signature = "(...)"
    doc = inspect.getdoc(function) or ""
    return {
        "name": name_of(key),
        "key": key.decode("ascii"),
        "signature": signature,
        "doc": doc.splitlines()[0] if doc else "",
        "async": inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function),
        "stream": inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function),
    }
