"""Where a ``peer=`` value points: ``(host, port)``. Plain parsing, no I/O.

A peer may be named by its id (bytes or str), ``"host:port"``, a
``(host, port)`` tuple or list, a mapping with ``host`` and ``port`` (an entry
of ``net.peers()``), or any object with ``host`` and ``port`` attributes (a
peer object).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import ids


def resolve(target: Any) -> tuple[str, int]:
    """``(host, port)`` of a ``peer=`` value; ValueError if it points nowhere."""
    if isinstance(target, (bytes, str)):
        text = target.decode("ascii", "replace") if isinstance(target, bytes) else target
        try:
            decoded = ids.decode_id(target)
            return decoded["host"], decoded["port"]
        except ValueError:
            pass
        host, sep, port = text.rpartition(":")
        if sep and port.isdigit():
            return host.strip("[]"), int(port)
        raise ValueError(f"peer {target!r} is neither a peer id nor 'host:port'")
    if isinstance(target, (tuple, list)) and len(target) == 2 and str(target[1]).isdigit():
        return str(target[0]), int(target[1])
    if isinstance(target, Mapping) and "host" in target and "port" in target:
        return str(target["host"]), int(target["port"])
    host_attr, port_attr = getattr(target, "host", None), getattr(target, "port", None)
    if host_attr is not None and port_attr is not None:
        return str(host_attr), int(port_attr)
    raise ValueError(f"cannot call peer {target!r}: pass a peer id, 'host:port', (host, port) "
                     f"or an entry of net.peers()")
