"""Built-in connections every peer serves: ``null``, ``connections``, ``info``, ``pass_through``,
``subscription_handler``.

They are keyed as ``net.defaults.handlers.<name>`` like any untagged connection.
"""
from __future__ import annotations

from typing import Any

from ..api import builtin
from ..events import publisher, subscriber
from ..peer import Peer
from ..serving import registry


@builtin
def null(*args: Any, **kwargs: Any) -> Any:
    """Do nothing; the caller receives the NULL flag, whose handler returns None."""
    return Peer().get_flag("NULL")


@builtin
def connections(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every connection this peer offers: name, key, signature, first docstring line."""
    return [registry.describe(key) for key in list(registry.CONNECTIONS)]


@builtin
def info(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """This peer's friendly id: group, host, port, hub, executable, user, pid."""
    return Peer().friendly_id


@builtin
def pass_through(*args: Any, **kwargs: Any) -> list[Any]:
    """Return ``[args, kwargs]`` exactly as received (for checking what survives the trip)."""
    return [list(args), kwargs]


@builtin
def subscription_handler(action: str, *args: Any) -> Any:
    """Event traffic: ``subscribe`` leases (publisher side), ``deliver`` batches (subscriber side),
    ``list`` (the publisher's subscriber table)."""
    if action == "deliver":
        return subscriber.LEASES.deliver(*args)
    if action == "subscribe":
        return publisher.PUBLISHER.subscribe(*args)
    if action == "list":
        return publisher.PUBLISHER.table()
    raise ValueError(f"subscription_handler has no action {action!r} (subscribe, deliver, list)")
