"""Events as users write them: ``@net.event`` triggers, ``@net.subscribe`` handlers.

The decorators check what the user passed and hand the work to the two
sides, which run without each other: ``net.publisher`` queues and delivers
what a trigger returns to every subscriber, ``net.subscriptions`` holds this
process's leases on publishers and runs the deliveries they send.
:func:`handle` is the built-in ``subscription_handler``: it routes the
traffic between the two sides of different processes to the right one.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Mapping, TypeVar

from . import identity
from .event_protocol import INSTANCE, SUBSCRIPTION_KEY
from .peer_lists import looks_like_peers, peer_addresses, single_peer
from .publisher import PUBLISHER, Publisher, Subscriber
from .subscriptions import SUBSCRIPTIONS, Subscription, Subscriptions

__all__ = ["event", "subscribe", "handle", "Event",
           # the two sides, as earlier code and tests import them from here
           "INSTANCE", "SUBSCRIPTION_KEY", "PUBLISHER", "Publisher", "Subscriber",
           "SUBSCRIPTIONS", "Subscription", "Subscriptions", "peer_addresses"]

log = logging.getLogger("net")
F = TypeVar("F", bound=Callable[..., Any])


class Event:
    """A function registered with ``@net.event``: calling it publishes what it returns."""

    def __init__(self, function: Callable[..., Any], name: str):
        self.function = function
        self.name = name
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        """Run the hook, queue its ``(args, kwargs)`` for every subscriber, return their number."""
        result = self.function(*args, **kwargs)
        try:
            out_args, out_kwargs = result
            ok = (isinstance(out_kwargs, Mapping) and not isinstance(out_args, (str, bytes, Mapping))
                  and all(isinstance(k, str) for k in out_kwargs))
            if ok:
                out_args = list(out_args)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise TypeError(f"@net.event({self.name!r}) function "
                            f"{getattr(self.function, '__qualname__', self.function)} must return "
                            f"(args, kwargs) like `return args, kwargs`; it returned {result!r:.200}")
        return PUBLISHER.publish(self.name, out_args, dict(out_kwargs))

    def __repr__(self) -> str:
        return f"<net event {self.name!r}>"


def event(name: str | Callable[..., Any]) -> Callable[[F], Event]:
    """Register a function as the trigger of event ``name`` (and start this peer).

    The function must ``return args, kwargs``; calling it queues them for every
    subscribed peer's handler and returns at once (the number of subscribers).
    """
    if callable(name):              # bare @net.event: named after the function's path
        function = name
        return event(identity.function_path(function))(function)    # type: ignore[return-value]
    if not isinstance(name, str) or not name:
        raise TypeError(f"net.event needs the event's name (a non-empty str), got {name!r}")

    def register(function: F) -> Event:
        if not callable(function):
            raise TypeError(f"@net.event({name!r}) must decorate a function")
        hook = Event(function, name)
        from .peer import Peer
        Peer()
        return hook

    return register


def subscribe(event: str, groups: Any = None, hubs_only: bool = False, peers: Any = None,
              on_host: bool | None = None) -> Callable[[F], Subscription]:
    """Run the decorated function for every ``event`` a chosen publisher triggers.

    Choose publishers with ``peers`` (an id, 'host:port', (host, port), an entry
    or the result of ``net.peers()``, or a list of those; the spec's examples pass
    them as the second positional argument, which is accepted), or else through
    discovery: peers in ``groups``, only hubs, only this host. Discovery runs
    again at every lease renewal, so publishers that appear later are found.
    """
    if not isinstance(event, str) or not event:
        raise TypeError(f"net.subscribe needs the event's name (a non-empty str), got {event!r}"
                        + (": use @net.subscribe('event_name')" if callable(event) else ""))
    if peers is None and groups is not None and not isinstance(groups, (str, bytes)):
        groups = list(groups) if not (single_peer(groups) or isinstance(groups, Mapping)) else groups
    if peers is None and groups is not None and looks_like_peers(groups):
        peers, groups = groups, None
    if peers is not None and (groups is not None or hubs_only or on_host):
        raise ValueError("pass either peers= or discovery filters (groups, hubs_only, on_host), not both")
    if isinstance(groups, str):
        groups = [groups]
    addresses = peer_addresses(peers) if peers is not None else None
    if addresses == []:
        log.warning("net: subscribing to %r on an empty list of peers: it will receive nothing", event)

    def register(function: F) -> Subscription:
        if not callable(function):
            raise TypeError(f"@net.subscribe({event!r}) must decorate a function")
        subscription = Subscription(event, function, addresses, groups, bool(hubs_only), bool(on_host))
        SUBSCRIPTIONS.add(subscription)
        return subscription

    return register


def handle(action: str, *args: Any) -> Any:
    """What ``subscription_handler`` does: ``subscribe`` (publisher), ``deliver`` (subscriber),
    ``list`` (the publisher's subscriber table)."""
    if action == "deliver":
        return SUBSCRIPTIONS.deliver(*args)
    if action == "subscribe":
        return PUBLISHER.subscribe(*args)
    if action == "list":
        return PUBLISHER.table()
    raise ValueError(f"subscription_handler has no action {action!r} (subscribe, deliver, list)")
