"""The decorators and helpers users write: ``@net.connect``, ``@net.flag``, ``net.timeout``.

A connected function stays a plain local function; given ``peer=`` it runs on
that peer instead. ``peer`` may be a peer id (bytes or str), ``"host:port"``,
a ``(host, port)`` tuple, an entry from ``net.peers()`` (anything with
``host`` and ``port``), or a peer object.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from typing import Any, Callable, Iterator, Mapping, TypeVar

from . import client, context, registry, streams
from .peer import Peer, _Peer

F = TypeVar("F", bound=Callable[..., Any])


def resolve(target: Any) -> tuple[str, int]:
    """Where a ``peer=`` value points: ``(host, port)``. ValueError if it points nowhere."""
    if isinstance(target, _Peer):
        return target.host, int(target.port or 0)
    if isinstance(target, (bytes, str)):
        text = target.decode("ascii", "replace") if isinstance(target, bytes) else target
        try:
            decoded = _Peer.decode_id(target)
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
    host, port = getattr(target, "host", None), getattr(target, "port", None)
    if host is not None and port is not None:
        return str(host), int(port)
    raise ValueError(f"cannot call peer {target!r}: pass a peer id, 'host:port', (host, port) "
                     f"or an entry of net.peers()")


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


class Connection:
    """A function registered with ``@net.connect``: call it locally, or on a peer with ``peer=``."""

    def __init__(self, function: Callable[..., Any], tag: str | None = None):
        self.function = function
        self.tag = tag
        self.key = registry.add_connection(function, tag)
        self.name = registry.name_of(self.key)
        self.streaming = streams.is_streaming(function)
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, peer: Any = None, **kwargs: Any) -> Any:
        """Run locally, or on ``peer``; a generator connection returns a :class:`~net.streams.RemoteStream`."""
        if peer is None:
            return self.function(*args, **kwargs)
        if self.streaming:
            return self.stream(*args, peer=peer, **kwargs)
        host, port = resolve_cached(peer)
        return client.call(host, port, self.key, args, kwargs, target=peer)

    def submit(self, *args: Any, peer: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Start the call on ``peer`` and return a Future at once."""
        if self.streaming:
            raise TypeError(f"{self.name} is a generator: iterate it with for x in f(peer=P) "
                            f"or async for x in f.acall(peer=P); it has no single result for a Future")
        host, port = resolve_cached(peer)
        return client.submit(host, port, self.key, list(args), kwargs, target=peer)

    def acall(self, *args: Any, peer: Any, **kwargs: Any) -> Any:
        """``await f.acall(..., peer=P)`` without blocking the running event loop.

        For a generator connection it returns an :class:`~net.streams.AsyncRemoteStream`
        instead: ``async for x in f.acall(peer=P)`` (awaiting it also gives the stream).
        """
        if self.streaming:
            return self.astream(*args, peer=peer, **kwargs)
        host, port = resolve_cached(peer)
        return client.acall(host, port, self.key, list(args), kwargs, target=peer)

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


def connect(tag: str | Callable[..., Any] | None = None) -> Callable[[F], Connection]:
    """Register a function as a connection other peers can call (and start this peer).

    ``@net.connect()`` keys it by ``module.function``; ``@net.connect("Tag")``
    by the tag, so renamed functions in different code bases still match.
    """
    if callable(tag):               # bare @net.connect
        return connect()(tag)       # type: ignore[return-value]

    def register(function: F) -> Connection:
        connection = Connection(function, tag)
        Peer()
        return connection

    return register


def builtin_connection(function: F) -> Connection:
    """Register one of net's own handlers without starting the peer at import."""
    return Connection(function)


def flag(name: str) -> Callable[[F], F]:
    """Register ``handler(connection, peer)`` to run when a call returns ``Peer().get_flag(name)``."""
    def register(handler: F) -> F:
        registry.add_flag(name, handler)
        return handler

    return register


@contextlib.contextmanager
def timeout(seconds: float | None) -> Iterator[None]:
    """Deadline for remote calls made in this block (this thread/task only); None: no deadline."""
    if seconds is not None and seconds <= 0:
        raise ValueError("timeout must be > 0 seconds, or None")
    token = context.call_timeout.set(seconds)
    try:
        yield
    finally:
        context.call_timeout.reset(token)


cancelled = context.cancelled
