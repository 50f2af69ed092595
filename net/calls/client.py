"""The calling side: run a connection on another peer, blocking, as a Future, or awaited.

Every form sends one CALL on the process's pooled connection to that peer
(:mod:`net.pool`, :mod:`net.outbound`) and waits for the reply in its own way
(:mod:`net.waiters`); a call that met a stale pooled connection (closed by the
peer while idle, before it read the call) is sent again once on a fresh one.

``POOL``, the process's one :class:`~net.pool.Pool`, lives here. The other
names other modules use from here (``OutboundLink``, ``Pending``,
``Retired``, ...) are re-exported from the modules that hold them.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

from .. import config
from ..errors import MessageTooLarge, PeerUnreachable, ProtocolError, RemoteError, Timeout
from ..wire import frames as wire, ids as identity, payloads
from ..wire.frames import Kind
from .deadlines import DEADLINES, call_timeout
from .flags import FLAGS
from .link import IDLE_CHECK_AFTER, NO_OPTIONS, OutboundLink, dial_timeout
from .outbox import LoopOutbox, outbox
from .pool import Pool
from .waiters import AsyncWaiter, FutureWaiter, Pending, Retired, Waiter

__all__ = ["call", "submit", "acall", "finish", "effective_timeout", "dial_timeout", "POOL", "Pool",
           "OutboundLink", "IDLE_CHECK_AFTER", "Pending", "Waiter", "FutureWaiter", "AsyncWaiter",
           "Retired", "LoopOutbox", "outbox"]

# The process's connections. Made here rather than imported: CPython compiles ``POOL.get(...)``
# on an imported name as a module-attribute call, which costs a bound method on every call.
POOL = Pool()
# Where the settings live (net.TIMEOUT, ...: reassigning one takes effect); read directly on
# the call path, where config.get's lookups show.
_settings = config.namespace()


def finish(frame: wire.Frame, where: str, key: bytes, target: Any) -> Any:
    """Turn a reply frame into the call's result, or raise what the remote raised."""
    if frame.kind is Kind.RESULT:
        value = frame.payload
        if isinstance(value, wire.Flag):
            handler = FLAGS.get(identity.key(value.name))
            if handler is None:
                raise ProtocolError(f"{where} answered with flag {value.name!r}, which this process "
                                    f"does not know")
            return handler(identity.name_of(key), target)
        return value
    if frame.kind is Kind.ERROR:
        try:
            failure = payloads.parse_error(frame.payload)
        except ProtocolError as exc:
            raise ProtocolError(f"{where} answered a call to {identity.name_of(key)} with a {exc}") from None
        if failure.type == payloads.MESSAGE_TOO_LARGE:      # refused by the receiver's limit
            raise MessageTooLarge(failure.message)
        raise RemoteError(failure.type, failure.message, failure.traceback, peer=where,
                          connection=identity.name_of(key))
    raise ProtocolError(f"{where} answered a call with a {frame.kind.name} frame")


def effective_timeout() -> float | None:
    """This call's deadline in seconds: ``net.timeout(...)`` in effect, else NET_TIMEOUT (None: none).

    :func:`call` has the same two lines inline: it is the measured call path.
    """
    timeout = call_timeout.get()
    return timeout if timeout is not None else _settings["TIMEOUT"]


def call(host: str, port: int, key: bytes, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any],
         target: Any = None, timeout: float | None = None) -> Any:
    """Run connection ``key`` on the peer at host:port and return its result (blocking)."""
    if timeout is None:
        timeout = call_timeout.get()
        if timeout is None:
            timeout = _settings["TIMEOUT"]
    deadline = None if timeout is None else time.monotonic() + timeout
    payload = [key, args, kwargs, NO_OPTIONS]      # payloads.call, inline (tests/test_payloads.py checks it)
    for attempt in (1, 2):
        connection = POOL.get(host, port)
        reused = connection.calls_started > 0
        try:
            waiter, request_id, arrived = connection.call(payload, deadline)
        except PeerUnreachable:
            if reused and attempt == 1:     # a stale pooled socket: the call never left, dial again
                continue
            raise
        frame = waiter.frame
        if frame is not None and frame.kind is Kind.RESULT and type(frame.payload) is not wire.Flag:
            return frame.payload            # the usual outcome, without finish()
        if not arrived:
            connection.abandon(request_id)
            raise Timeout(f"call to {identity.name_of(key)} on {connection.where} did not finish "
                          f"within {timeout:g}s", peer=connection.where)
        if waiter.error is not None:
            if isinstance(waiter.error, Retired) and attempt == 1:
                continue
            raise type(waiter.error)(str(waiter.error), peer=connection.where) \
                if isinstance(waiter.error, (PeerUnreachable, Timeout)) else waiter.error
        assert frame is not None
        return finish(frame, connection.where, key, target)
    raise PeerUnreachable(f"could not reach {host}:{port}", peer=f"{host}:{port}")


def submit(host: str, port: int, key: bytes, args: list[Any], kwargs: dict[str, Any],
           target: Any = None, timeout: float | None = None) -> concurrent.futures.Future[Any]:
    """Start a call and return a Future; cancelling the Future cancels the remote call.

    A deadline is kept by the process's one deadline thread, never a thread per
    call. Like :func:`call`, a call that met a stale pooled connection is sent
    again once on a fresh one.
    """
    if timeout is None:
        timeout = effective_timeout()
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    latest: list[Any] = [None, 0, None]         # connection, request id, waiter of the latest attempt

    def send(attempt: int) -> None:
        connection = POOL.get(host, port)
        reused = connection.calls_started > 0
        where = connection.where
        waiter = FutureWaiter(future, lambda frame: finish(frame, where, key, target))
        if attempt == 1:
            waiter.retry = resend
        try:
            request_id = connection.send_call(key, args, kwargs, waiter)
        except PeerUnreachable:
            if reused and attempt == 1:     # a stale pooled socket: the call never left, dial again
                return send(2)
            raise
        latest[:] = [connection, request_id, waiter]

    def resend() -> None:
        if future.done():
            return
        try:
            send(2)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)

    send(1)

    def on_done(done: concurrent.futures.Future[Any]) -> None:
        if done.cancelled():
            latest[0].abandon(latest[1])

    future.add_done_callback(on_done)
    if timeout is not None:
        def expire() -> None:
            if not future.done():
                connection, request_id, waiter = latest
                connection.abandon(request_id)
                waiter.fail(Timeout(f"call to {identity.name_of(key)} on {connection.where} did not "
                                    f"finish within {timeout:g}s", peer=connection.where))
        deadline = DEADLINES.schedule(timeout, expire)
        future.add_done_callback(lambda _: deadline.cancel())
    return future


async def acall(host: str, port: int, key: bytes, args: list[Any], kwargs: dict[str, Any],
                target: Any = None, timeout: float | None = None) -> Any:
    """Await a call from a running event loop; no thread is parked per call in flight.

    Like :func:`call`, a call that met a stale pooled connection (closed by the
    peer while idle, before it read the call) is sent again on a fresh one.
    """
    if timeout is None:
        timeout = effective_timeout()
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    for attempt in (1, 2):
        connection = POOL._connections.get((host, port))
        if connection is None or not connection.usable():
            connection = await loop.run_in_executor(None, POOL.get, host, port)    # dialing blocks
        reused = connection.calls_started > 0
        future: asyncio.Future[wire.Frame] = loop.create_future()
        try:
            request_id, data = connection.register_call(key, args, kwargs, AsyncWaiter(loop, future))
        except PeerUnreachable:
            if reused and attempt == 1:
                continue
            raise
        outbox(loop, connection).add(request_id, data)
        try:
            frame = await asyncio.wait_for(future, None if deadline is None else deadline - loop.time())
        except asyncio.TimeoutError:
            connection.abandon(request_id)
            raise Timeout(f"call to {identity.name_of(key)} on {connection.where} did not finish "
                          f"within {timeout:g}s", peer=connection.where) from None
        except asyncio.CancelledError:
            connection.abandon(request_id)
            raise
        except Retired:
            if attempt == 1:
                continue
            raise
        except (PeerUnreachable, Timeout) as exc:
            raise type(exc)(str(exc), peer=connection.where) from None
        if frame.kind is Kind.RESULT and isinstance(frame.payload, wire.Flag):
            return await loop.run_in_executor(None, finish, frame, connection.where, key, target)
        return finish(frame, connection.where, key, target)
    raise PeerUnreachable(f"could not reach {host}:{port}", peer=f"{host}:{port}")
