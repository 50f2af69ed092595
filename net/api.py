"""The decorators and helpers users write: ``@net.connect``, ``@net.flag``, ``@net.event``,
``@net.subscribe``, ``net.timeout``.

A connected function stays a plain local function; given ``peer=`` it runs on
that peer instead. ``peer`` may be a peer id (bytes or str), ``"host:port"``,
a ``(host, port)`` tuple, an entry from ``net.peers()`` (anything with
``host`` and ``port``), or a peer object.
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
import sys
from collections.abc import Awaitable, Mapping
from typing import Any, Callable, Generic, TypeVar, cast, overload

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:                               # Python 3.9
    from typing_extensions import ParamSpec

from .calls import client, deadlines, flags, streams
from .events import publisher, subscriber
from .events.peer_lists import looks_like_peers, peer_addresses, single_peer
from .peer import Peer
from .serving import registry, request as context
from .wire import addresses, ids

log = logging.getLogger("net")
F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


def resolve(target: Any) -> tuple[str, int]:
    """Where a ``peer=`` value points: ``(host, port)``. ValueError if it points nowhere."""
    if isinstance(target, Peer):
        return target.host, int(target.port or 0)
    return addresses.resolve(target)


_resolved: dict[Any, tuple[str, int]] = {}
_RESOLVED_MAX = 4096
_CACHEABLE = (bytes, str, tuple)


def resolve_cached(target: Any) -> tuple[str, int]:
    """:func:`resolve`, remembered for ids, strings and tuples: calls repeat them."""
    if type(target) not in _CACHEABLE:
        return resolve(target)
    try:
        return _resolved[target]
    except KeyError:
        address = _resolved[target] = resolve(target)
        if len(_resolved) > _RESOLVED_MAX:
            _resolved.clear()
        return address
    except TypeError:           # a tuple holding something unhashable
        return resolve(target)


class Connection(Generic[P, R]):
    """A function registered with ``@net.connect``: call it locally, or on a peer with ``peer=``.

    It keeps the function's signature for type checkers: for ``def render(frame: int) -> str``,
    ``render(1)`` and ``render(1, peer=p)`` are ``str``, ``render.submit(1, peer=p)`` a
    ``Future[str]``, ``await render.acall(1, peer=p)`` a ``str``.
    """

    def __init__(self, function: Callable[P, R], tag: str | None = None):
        self.function = function
        self.tag = tag
        self.key = registry.add_connection(function, tag)
        self.name = ids.name_of(self.key)
        self.streaming = registry.is_streaming(function)
        functools.update_wrapper(self, function)

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    def __call__(self, *args: Any, peer: Any, **kwargs: Any) -> R: ...

    def __call__(self, *args: Any, peer: Any = None, **kwargs: Any) -> Any:
        """Run locally, or on ``peer``; a generator connection returns a :class:`~net.calls.streams.RemoteStream`."""
        if peer is None:
            return self.function(*args, **kwargs)
        if self.streaming:
            return self.stream(*args, peer=peer, **kwargs)
        try:
            host, port = _resolved[peer]        # resolve_cached's hit, without the call
        except (KeyError, TypeError):
            host, port = resolve_cached(peer)
        return client.call(host, port, self.key, args, kwargs, peer)

    def submit(self, *args: Any, peer: Any, **kwargs: Any) -> concurrent.futures.Future[R]:
        """Start the call on ``peer`` and return a Future at once."""
        if self.streaming:
            raise TypeError(f"{self.name} is a generator: iterate it with for x in f(peer=P) "
                            f"or async for x in f.acall(peer=P); it has no single result for a Future")
        host, port = resolve_cached(peer)
        future: concurrent.futures.Future[R] = client.submit(host, port, self.key, list(args), kwargs,
                                                             target=peer)
        return future

    def acall(self, *args: Any, peer: Any, **kwargs: Any) -> Awaitable[R]:
        """``await f.acall(..., peer=P)`` without blocking the running event loop.

        For a generator connection it returns an :class:`~net.calls.streams.AsyncRemoteStream`
        instead: ``async for x in f.acall(peer=P)`` (awaiting it also gives the stream).
        """
        if self.streaming:
            stream: Any = self.astream(*args, peer=peer, **kwargs)
            return cast("Awaitable[R]", stream)
        host, port = resolve_cached(peer)
        return cast("Awaitable[R]", client.acall(host, port, self.key, list(args), kwargs, target=peer))

    def stream(self, *args: Any, peer: Any, **kwargs: Any) -> streams.RemoteStream:
        """Iterate the remote generator's items (also for a local stub that is not a generator)."""
        host, port = resolve_cached(peer)
        return streams.RemoteStream(host, port, self.key, list(args), kwargs, target=peer)

    def astream(self, *args: Any, peer: Any, **kwargs: Any) -> streams.AsyncRemoteStream:
        """``async for`` over the remote generator's items, from a running event loop."""
        host, port = resolve_cached(peer)
        return streams.AsyncRemoteStream(host, port, self.key, list(args), kwargs, target=peer)

    def __repr__(self) -> str:
        return f"<net connection {self.name}>"


@overload
def connect(tag: Callable[P, R]) -> Connection[P, R]: ...


@overload
def connect(tag: str | None = None) -> Callable[[Callable[P, R]], Connection[P, R]]: ...


def connect(tag: str | Callable[..., Any] | None = None) -> Any:
    """Register a function as a connection other peers can call (and start this peer).

    ``@net.connect()`` keys it by ``module.function``; ``@net.connect("Tag")``
    by the tag, so renamed functions in different code bases still match.
    """
    if callable(tag):               # bare @net.connect
        return connect()(tag)

    def register(function: Callable[P, R]) -> Connection[P, R]:
        connection = Connection(function, tag)
        Peer()
        return connection

    return register


def builtin(function: Callable[P, R]) -> Connection[P, R]:
    """Register one of net's own handlers without starting the peer at import."""
    return Connection(function)


def flag(name: str) -> Callable[[F], F]:
    """Register ``handler(connection, peer)`` to run when a call returns ``Peer().get_flag(name)``."""
    def register(handler: F) -> F:
        flags.add_flag(name, handler)
        return handler

    return register


timeout = deadlines.timeout
cancelled = context.cancelled


class Event(Generic[P]):
    """A function registered with ``@net.event``: calling it publishes what it returns."""

    def __init__(self, function: Callable[P, Any], name: str):
        self.function = function
        self.name = name
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> int:
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
        return publisher.PUBLISHER.publish(self.name, out_args, dict(out_kwargs))

    def __repr__(self) -> str:
        return f"<net event {self.name!r}>"


@overload
def event(name: Callable[P, Any]) -> Event[P]: ...


@overload
def event(name: str) -> Callable[[Callable[P, Any]], Event[P]]: ...


def event(name: str | Callable[..., Any]) -> Any:
    """Register a function as the trigger of event ``name`` (and start this peer).

    The function must ``return args, kwargs``; calling it queues them for every
    subscribed peer's handler and returns at once (the number of subscribers).
    """
    if callable(name):              # bare @net.event: named after the function's path
        function = name
        return event(ids.function_path(function))(function)
    if not isinstance(name, str) or not name:
        raise TypeError(f"net.event needs the event's name (a non-empty str), got {name!r}")

    def register(function: Callable[P, Any]) -> Event[P]:
        if not callable(function):
            raise TypeError(f"@net.event({name!r}) must decorate a function")
        hook = Event(function, name)
        Peer()
        return hook

    return register


def subscribe(event: str, groups: Any = None, hubs_only: bool = False, peers: Any = None,
              on_host: bool | None = None) -> Callable[[F], subscriber.Subscription]:
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
    publishers = peer_addresses(peers) if peers is not None else None
    if publishers == []:
        log.warning("net: subscribing to %r on an empty list of peers: it will receive nothing", event)

    def register(function: F) -> subscriber.Subscription:
        if not callable(function):
            raise TypeError(f"@net.subscribe({event!r}) must decorate a function")
        subscription = subscriber.Subscription(event, function, publishers, groups, bool(hubs_only),
                                               bool(on_host))
        Peer()                          # deliveries need this process's server running
        subscriber.LEASES.add(subscription)
        return subscription

    return register
