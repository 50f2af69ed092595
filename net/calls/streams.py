"""The caller's side of a streamed call: iterate what a remote generator yields.

:class:`RemoteStream` (``for x in f(peer=P)``) and :class:`AsyncRemoteStream`
(``async for x in f.acall(peer=P)``) send the call with ``options["stream"]``
set to the window, read the items that :class:`StreamReceiver` collects as
the request's pending reply, and hand credit back with CREDIT frames as the
user consumes them. Closing, breaking out, garbage collection, a timeout or
a cancelled task send CANCEL, so the remote generator's ``finally`` runs.
The wire is in docs/protocol.md (Streams).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Generator
from typing import Any

from .. import config
from ..errors import NetError, PeerUnreachable, ProtocolError, Timeout
from ..wire import frames as wire, ids, payloads
from ..wire.frames import Kind
from . import client

log = logging.getLogger("net")


class StreamReceiver(client.Pending):
    """Collects a stream's frames from the connection's reader, in order, for one consumer.

    Wakes a sleeping consumer (a thread or an asyncio task) only when it sleeps,
    so a consumer that keeps up costs no signalling per frame.
    """

    __slots__ = ("frames", "_cv", "_sleeping", "_future", "_loop")

    def __init__(self) -> None:
        self.frames: collections.deque[wire.Frame | NetError] = collections.deque()
        self._cv = threading.Condition(threading.Lock())
        self._sleeping = False
        self._future: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def deliver(self, frame: wire.Frame) -> None:
        self.frames.append(frame)
        self._wake()

    def fail(self, error: NetError) -> None:
        self.frames.append(error)
        self._wake()

    def _wake(self) -> None:
        if self._sleeping:
            with self._cv:
                self._cv.notify()
        future, loop = self._future, self._loop
        if future is not None and loop is not None:
            self._future = None
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:        # that loop is closed: nobody awaits this stream any more
                pass

    def wait(self, timeout: float | None) -> bool:
        """Block until a frame is buffered; False on timeout."""
        if self.frames:
            return True
        with self._cv:
            self._sleeping = True       # set before looking, so a deliver() in between notifies
            try:
                if not self.frames:
                    self._cv.wait(timeout)
            finally:
                self._sleeping = False
        return bool(self.frames)

    async def await_frame(self, timeout: float | None) -> bool:
        """Wait on the running loop until a frame is buffered; False on timeout."""
        if self.frames:
            return True
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._loop = loop
        self._future = future           # published before looking, so a deliver() in between wakes it
        if self.frames:
            self._future = None
            return True
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._future = None
        return bool(self.frames)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# Streams dropped without close() are cancelled from here: a __del__ may run inside any code
# (even code holding a connection's send lock), so it only queues the request.
_orphans: queue.SimpleQueue[tuple[client.OutboundLink, int]] = queue.SimpleQueue()
_reaper_lock = threading.Lock()
_reaper: threading.Thread | None = None


def _reap() -> None:
    while True:
        connection, request_id = _orphans.get()
        try:
            connection.abandon(request_id)
        except Exception:       # a dead connection already forgot the request
            log.debug("net: could not cancel orphaned stream %s", request_id, exc_info=True)


def _orphan(connection: client.OutboundLink, request_id: int) -> None:
    global _reaper
    _orphans.put((connection, request_id))
    if _reaper is None:
        with _reaper_lock:
            if _reaper is None:
                _reaper = threading.Thread(target=_reap, daemon=True, name="net-stream-reaper")
                _reaper.start()


class _StreamBase:
    """What the sync and async iterators share: the request, the items at hand, the credit."""

    def __init__(self, host: str, port: int, key: bytes, args: list[Any], kwargs: dict[str, Any],
                 target: Any = None, timeout: float | None = None):
        self._address = (host, port)
        self._key = key
        self._call = (args, kwargs)
        self._target = target
        self._timeout = client.effective_timeout() if timeout is None else timeout
        self._window = int(config.get("STREAM_WINDOW"))
        self._connection: client.OutboundLink | None = None
        self._request_id = 0
        self._receiver: StreamReceiver | None = None
        self._items: list[Any] = []
        self._index = 0
        self._consumed = 0          # items handed to the user since the last CREDIT
        self._received_any = False
        self._done = False

    @property
    def name(self) -> str:
        return ids.name_of(self._key)

    def _started(self, connection: client.OutboundLink, attempt: int) -> bool:
        """Send the call on ``connection``; False if, on a first attempt, it was a stale pooled one."""
        reused = connection.calls_started > 0
        receiver = StreamReceiver()
        args, kwargs = self._call
        try:
            self._request_id = connection.send_call(self._key, args, kwargs, receiver,
                                                    options=payloads.stream_options(self._window))
        except PeerUnreachable:
            if reused and attempt == 1:     # the call never left: dial again
                return False
            raise
        self._connection = connection
        self._receiver = receiver
        return True

    def _take(self) -> Any:
        """The next buffered item (the caller checked there is one); returns credit when due."""
        item = self._items[self._index]
        self._index += 1
        self._consumed += 1
        if self._consumed >= self._window // 4 or (
                self._index == len(self._items) and self._receiver is not None
                and not self._receiver.frames):
            self._grant()       # a quarter of the window used, or caught up with all that came
        return item

    def _grant(self) -> None:
        consumed, self._consumed = self._consumed, 0
        connection = self._connection
        if connection is not None and connection.dead is None and not self._done:
            try:
                connection.framed.send(Kind.CREDIT, self._request_id, payloads.credit(consumed))
            except NetError:
                pass        # the reader notices the dead connection and fails the receiver

    def _open_frame(self) -> bool:
        """Consume one buffered frame: True if it brought items, False at the end.

        Raises what the stream ended with (RemoteError, PeerUnreachable, ...).
        """
        assert self._receiver is not None and self._connection is not None
        entry = self._receiver.frames.popleft()
        where = self._connection.where
        if isinstance(entry, NetError):
            self._done = True
            if isinstance(entry, (PeerUnreachable, Timeout)):
                raise type(entry)(str(entry), peer=where)
            raise entry
        if entry.kind is Kind.STREAM_ITEM:
            self._received_any = True
            try:
                self._items = payloads.parse_stream_items(entry.payload)
            except ProtocolError as exc:
                self._close()           # unreadable: stop the producer, end the stream here
                raise ProtocolError(f"{where} sent stream {self.name} a {exc}") from None
            self._index = 0
            return True
        self._done = True
        if entry.kind is Kind.STREAM_END:
            return False
        self._received_any = True
        client.finish(entry, where, self._key, self._target)    # raises ERROR as RemoteError
        raise NetError(f"{where} answered the streaming call {self.name} with a single value; "
                       f"the connection there is not a generator")

    def _retryable(self) -> bool:
        """A stale pooled connection was retired before our call was read: safe to send again."""
        receiver = self._receiver
        return (not self._received_any and receiver is not None and len(receiver.frames) == 1
                and isinstance(receiver.frames[0], client.Retired))

    def _timed_out(self) -> Timeout:
        self._close()
        where = self._connection.where if self._connection else f"{self._address[0]}:{self._address[1]}"
        return Timeout(f"stream {self.name} on {where} sent nothing for {self._timeout:g}s", peer=where)

    def _close(self) -> None:
        if not self._done:
            self._done = True
            if self._connection is not None:
                self._connection.abandon(self._request_id)

    def __del__(self) -> None:
        if not getattr(self, "_done", True) and self._connection is not None:
            self._done = True
            _orphan(self._connection, self._request_id)


class RemoteStream(_StreamBase):
    """Iterate a remote generator: ``for x in f(peer=P)``. ``close()``/``break``+GC stop it remotely.

    The call is sent when the stream is created, so the remote generator starts
    producing (up to NET_STREAM_WINDOW items) while the caller gets ready.
    ``net.timeout``/NET_TIMEOUT bound the wait for each next item, not the whole stream.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._send()

    def _send(self) -> None:
        for attempt in (1, 2):
            if self._started(client.POOL.get(*self._address), attempt):
                return

    def __iter__(self) -> RemoteStream:
        return self

    def __next__(self) -> Any:
        while True:
            if self._index < len(self._items):
                return self._take()
            if self._done:
                raise StopIteration
            receiver = self._receiver
            assert receiver is not None
            if not receiver.wait(self._timeout):
                raise self._timed_out()
            if self._retryable():
                receiver.frames.clear()
                self._send()
                continue
            if not self._open_frame():
                raise StopIteration

    def close(self) -> None:
        """Stop the stream; the remote generator is closed (its ``finally`` runs)."""
        self._items, self._index = [], 0
        self._close()

    def __enter__(self) -> RemoteStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<net stream {self.name} from {self._address[0]}:{self._address[1]}>"


class AsyncRemoteStream(_StreamBase):
    """``async for x in f.acall(peer=P)`` (also ``stream = await f.acall(peer=P)``); never blocks the loop.

    The call is sent on first use (``await``, ``async for``); dialing a new
    peer runs in the loop's executor. ``aclose()``, ``break`` + GC, or
    cancelling the consuming task stop the remote generator.
    """

    async def _open(self) -> None:
        if self._receiver is not None:
            return
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            connection = client.POOL._connections.get(self._address)
            if connection is None or not connection.usable():
                connection = await loop.run_in_executor(None, client.POOL.get, *self._address)
            if self._started(connection, attempt):
                return

    def __await__(self) -> Generator[Any, None, AsyncRemoteStream]:
        yield from self._open().__await__()
        return self

    def __aiter__(self) -> AsyncRemoteStream:
        return self

    async def __anext__(self) -> Any:
        if self._receiver is None:
            await self._open()
        while True:
            if self._index < len(self._items):
                return self._take()
            if self._done:
                raise StopAsyncIteration
            receiver = self._receiver
            assert receiver is not None
            try:
                arrived = await receiver.await_frame(self._timeout)
            except asyncio.CancelledError:
                self._close()           # the consuming task was cancelled: stop the producer
                raise
            if not arrived:
                raise self._timed_out()
            if self._retryable():
                receiver.frames.clear()
                self._receiver = None
                await self._open()
                continue
            head = receiver.frames[0]
            if isinstance(head, wire.Frame) and isinstance(head.payload, wire.Flag):
                # A flag (e.g. INVALID_CONNECTION) runs a handler that may call peers: off the loop.
                opened = await asyncio.get_running_loop().run_in_executor(None, self._open_frame)
            else:
                opened = self._open_frame()
            if not opened:
                raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the stream; the remote generator is closed (its ``finally`` runs)."""
        self._items, self._index = [], 0
        self._close()

    async def __aenter__(self) -> AsyncRemoteStream:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<net async stream {self.name} from {self._address[0]}:{self._address[1]}>"
