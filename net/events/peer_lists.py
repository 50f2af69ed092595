"""What a ``peers=`` value names: one peer or many, as ``(host, port)`` addresses.

``@net.subscribe`` takes publishers in every form a user has at hand (an id,
``'host:port'``, ``(host, port)``, a peer object, a ``net.peers()`` entry or
result, or a list of those), and the spec's examples pass them where the
``groups`` argument stands. Telling the two apart and flattening the value
is plain parsing with no I/O, so it lives here, testable on its own.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..wire.addresses import resolve


def _is_address(value: Any) -> bool:
    """True if a str/bytes names a peer (an id or 'host:port') rather than a group."""
    if isinstance(value, bytes):
        return True
    try:
        resolve(value)
        return True
    except ValueError:
        return False


def single_peer(value: Any) -> bool:
    """Whether ``value`` is one peer rather than a list of them (a peer object has host and port)."""
    return (isinstance(value, (str, bytes))
            or (isinstance(value, Mapping) and "host" in value and "port" in value)
            or (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int))
            or (not isinstance(value, Mapping) and hasattr(value, "host") and hasattr(value, "port")))


def peer_addresses(value: Any) -> list[tuple[str, int]]:
    """``(host, port)`` of every peer in a ``peers=`` value: an id, 'host:port', (host, port), a
    ``net.peers()`` entry or result, or a list of those. ValueError if something is not a peer."""
    if isinstance(value, Mapping) and isinstance(value.get("peers"), Mapping):
        found = []
        for peer_id, entry in value["peers"].items():
            found.append(resolve(entry) if isinstance(entry, Mapping) and "host" in entry
                         else resolve(peer_id))
        return found
    if single_peer(value):
        return [resolve(value)]
    if isinstance(value, Mapping):
        raise ValueError(f"cannot subscribe to {value!r}: a mapping must be a net.peers() entry "
                         f"(host, port) or result ('peers')")
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"cannot subscribe to {value!r}: pass a peer id, 'host:port', (host, port), "
                         f"an entry or result of net.peers(), or a list of those") from None
    found = []
    for item in items:
        found.extend(peer_addresses(item))
    return found


def looks_like_peers(value: Any) -> bool:
    """Whether the positional ``groups`` argument is really peers (the spec's examples pass them so)."""
    if isinstance(value, str):
        return _is_address(value)
    if single_peer(value) or isinstance(value, Mapping):
        return True
    try:
        items = list(value)
    except TypeError:
        return False
    if not items:
        return True         # an empty net.peers() result: no peers (not "no group filter")
    peers = [not isinstance(item, str) or _is_address(item) for item in items]
    if all(peers):
        return True
    if any(peers):
        raise ValueError(f"{value!r} mixes group names and peers: pass groups=[...] or peers=[...]")
    return False
