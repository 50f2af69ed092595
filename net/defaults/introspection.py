"""``summary``: everything ``net info`` shows about a peer, in one round trip.

Kept apart from the spec's own handlers so it can grow without touching them.
"""
from __future__ import annotations

import inspect
from typing import Any

from ..api import builtin
from ..calls import flags as flag_table
from ..events import publisher
from ..peer import Peer
from ..serving import registry
from ..wire import ids


def _first_doc_line(function: Any) -> str:
    doc = inspect.getdoc(function) or ""
    return doc.splitlines()[0] if doc else ""


def _subscribers(value: Any) -> list[str]:
    """Whatever the events module keeps per event, as readable subscriber names."""
    if isinstance(value, dict):
        items: Any = value.keys()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        return [repr(value)]
    names = []
    for item in items:
        names.append(item.decode("ascii", "replace") if isinstance(item, bytes) else str(item))
    return sorted(names)


@builtin
def summary(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """This peer's info, connections, subscriptions (event -> subscribers) and flags."""
    subscriptions = []
    for key, value in list(publisher.SUBSCRIPTIONS.items()):
        subscriptions.append({"event": ids.name_of(key), "subscribers": _subscribers(value)})
    flags = [{"name": ids.name_of(key), "doc": _first_doc_line(handler)}
             for key, handler in list(flag_table.FLAGS.items())]
    return {
        "info": Peer().friendly_id,
        "connections": [registry.describe(key) for key in list(registry.CONNECTIONS)],
        "subscriptions": subscriptions,
        "flags": sorted(flags, key=lambda flag: flag["name"]),
    }
