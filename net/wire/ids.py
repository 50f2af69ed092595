"""Peer ids, connection tags and flag ids: the base64 names the spec shows.

A peer id is ``base64("host:port -> group")`` as bytes, e.g.
``b'MTkyLjE2OC4yLjI0OjMwMTAgLT4gTm9uZQ=='`` for ``192.168.2.24:3010 -> None``.
An untagged connection is keyed by ``base64("module.function")``, a tagged
one by ``base64(tag)``, a flag by ``base64(name)``.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable

SEPARATOR = " -> "


def encode_text(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_text(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("ascii")
    return base64.b64decode(data, validate=True).decode("utf-8")


def key(text: str) -> bytes:
    """Registry key for a name: its base64 as bytes (the spec's CONNECTIONS/FLAGS keys)."""
    return base64.b64encode(text.encode("utf-8"))


def builtin_key(name: str) -> bytes:
    """Key of a built-in handler: its module path is on the wire (the spec lists these keys)."""
    return key(f"net.defaults.handlers.{name}")


def name_of(key: bytes | str) -> str:
    """Readable name of a registry key (the name it is the base64 of), also for keys nobody here knows."""
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    try:
        return decode_text(key)
    except (ValueError, binascii.Error, UnicodeError):
        return repr(key)


def function_path(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__name__}"


def generate_id(port: int, host: str, group: str | None = None) -> bytes:
    return key(f"{host}:{int(port)}{SEPARATOR}{group}")


def decode_id(peer_id: bytes | str) -> dict[str, Any]:
    """``{'group': str, 'host': str, 'port': int}``; ValueError if it is not a peer id."""
    try:
        text = decode_text(peer_id)
        address, group = text.split(SEPARATOR, 1)
        host, port = address.rsplit(":", 1)
        host = host.strip("[]")
        return {"group": group, "host": host, "port": int(port)}
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError(f"{peer_id!r} is not a net peer id") from exc


def encode(obj: Any) -> str:
    """JSON-compatible value -> base64 text (for ids and hand-made payloads)."""
    return encode_text(json.dumps(obj))


def decode(data: bytes | str) -> Any:
    """Inverse of :func:`encode`."""
    return json.loads(decode_text(data))


INFO_KEY = builtin_key("info")                              # net.info: who a peer is
SUBSCRIPTION_KEY = builtin_key("subscription_handler")      # event leases and deliveries
