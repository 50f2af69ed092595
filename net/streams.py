"""Streamed results: a connection written as a generator sends its items as they are produced.

Wire (see docs/protocol.md): the caller sends CALL with ``options["stream"] = window``;
the callee answers with STREAM_ITEM frames (each a list of one or more items),
then STREAM_END, or ERROR if the generator raised. The callee may send at most
``window`` items ahead of what the caller has consumed; the caller hands
back credit with CREDIT frames as its user consumes items (back-pressure).
CANCEL from the caller (``break``, ``close()``, garbage collection, timeout,
task cancellation) closes the remote generator, so its ``finally`` runs.

Caller side: :class:`RemoteStream` (``for x in f(peer=P)``) and
:class:`AsyncRemoteStream` (``async for x in f.acall(peer=P)``), both fed by a
:class:`StreamReceiver` registered as the request's pending reply.

Callee side: :class:`SyncStreamRunner` runs a plain generator on the peer's
bounded worker pool *in slices*: it gives its thread back whenever it runs
out of credit, so streams waiting on slow consumers hold no thread.
:class:`AsyncStreamRunner` runs an async generator as a task on the peer's
event loop. Both coalesce items produced back to back into one frame
(at most ``BATCH_ITEMS`` items / ``BATCH_BYTES`` bytes, held at most
``FLUSH_DELAY`` seconds), which is what makes small items cheap.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import queue
import threading
import time
from typing import Any, Callable

from . import client, config, context, registry, wire
from .errors import MessageTooLarge, NetError, PeerUnreachable, Timeout
from .wire import Kind

log = logging.getLogger("net")

BATCH_ITEMS = 128           # items coalesced into one STREAM_ITEM frame at most
BATCH_BYTES = 64 * 1024     # ... or this many packed bytes
FLUSH_DELAY = 0.001         # seconds a produced item may wait for company before it is sent
WINDOW_BYTES = 16 * 1024 * 1024     # packed bytes a producer may have sent ahead of the consumer


def is_streaming(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` remotely yields a stream (it is a generator function)."""
    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)


# ================================================================================================
# Caller side
# ================================================================================================

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
        self._future: asyncio.Future | None = None
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
        future = self._future
        if future is not None:
            self._future = None
            try:
                self._loop.call_soon_threadsafe(_resolve, future)
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


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


# Streams dropped without close() are cancelled from here: a __del__ may run inside any code
# (even code holding a connection's send lock), so it only queues the request.
_orphans: queue.SimpleQueue[tuple[client.OutboundConnection, int]] = queue.SimpleQueue()
_reaper_lock = threading.Lock()
_reaper: threading.Thread | None = None


def _reap() -> None:
    while True:
        connection, request_id = _orphans.get()
        try:
            connection.abandon(request_id)
        except Exception:       # a dead connection already forgot the request
            log.debug("net: could not cancel orphaned stream %s", request_id, exc_info=True)


def _orphan(connection: client.OutboundConnection, request_id: int) -> None:
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
        self._connection: client.OutboundConnection | None = None
        self._request_id = 0
        self._receiver: StreamReceiver | None = None
        self._items: list[Any] = []
        self._index = 0
        self._consumed = 0          # items handed to the user since the last CREDIT
        self._received_any = False
        self._done = False

    @property
    def name(self) -> str:
        return registry.name_of(self._key)

    def _start(self, connection: client.OutboundConnection) -> None:
        receiver = StreamReceiver()
        args, kwargs = self._call
        self._request_id = connection.send_call(self._key, args, kwargs, receiver,
                                                options={"stream": self._window})
        self._connection = connection
        self._receiver = receiver

    def _take(self) -> Any:
        """The next buffered item (the caller checked there is one); returns credit when due."""
        item = self._items[self._index]
        self._index += 1
        self._consumed += 1
        if self._consumed >= self._window // 4 or (
                self._index == len(self._items) and not self._receiver.frames):
            self._grant()       # a quarter of the window used, or caught up with all that came
        return item

    def _grant(self) -> None:
        consumed, self._consumed = self._consumed, 0
        connection = self._connection
        if connection is not None and connection.dead is None and not self._done:
            try:
                connection.framed.send(Kind.CREDIT, self._request_id, consumed)
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
            items = entry.payload
            self._items = items if isinstance(items, list) else [items]
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
            connection = client.POOL.get(*self._address)
            reused = connection.calls_started > 0
            try:
                self._start(connection)
                return
            except PeerUnreachable:
                if reused and attempt == 1:
                    continue
                raise

    def __iter__(self) -> "RemoteStream":
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

    def __enter__(self) -> "RemoteStream":
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
            reused = connection.calls_started > 0
            try:
                self._start(connection)
                return
            except PeerUnreachable:
                if reused and attempt == 1:
                    continue
                raise

    def __await__(self):
        yield from self._open().__await__()
        return self

    def __aiter__(self) -> "AsyncRemoteStream":
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

    async def __aenter__(self) -> "AsyncRemoteStream":
        await self._open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<net async stream {self.name} from {self._address[0]}:{self._address[1]}>"


# ================================================================================================
# Callee side
# ================================================================================================

def serve(connection: Any, state: context.RequestState, handler: Callable[..., Any],
          args: list[Any], kwargs: dict[str, Any], window: Any) -> None:
    """Start streaming ``handler``'s items to the caller of ``state`` (called by the reader thread)."""
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        window = int(config.get("STREAM_WINDOW"))
    if inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler):
        runner: _Runner = AsyncStreamRunner(connection, state, handler, args, kwargs, window)
    else:
        runner = SyncStreamRunner(connection, state, handler, args, kwargs, window)
    connection.streams[state.request_id] = runner
    state.on_cancel = runner.cancel
    runner.start()


def credit(connection: Any, frame: wire.Frame) -> None:
    """A CREDIT frame arrived: let the stream's producer run further ahead."""
    runner = connection.streams.get(frame.request_id)
    amount = frame.payload
    if runner is None:
        return          # the stream ended already; late credit is normal
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        log.warning("net: %s sent a malformed CREDIT (%r); ignored", connection.where, amount)
        return
    runner.add_credit(amount)


def _not_iterable(handler: Callable[..., Any], value: Any) -> TypeError:
    name = getattr(handler, "__qualname__", repr(handler))
    return TypeError(f"{name} was called as a stream but returned {type(value).__name__}, "
                     f"not a generator or iterable")


def _iterable(value: Any) -> bool:
    return hasattr(value, "__iter__") and not isinstance(value, (str, bytes, bytearray, dict))


class _Runner:
    """Shared by both runners: credit, the batch of packed items, sending, finishing."""

    def __init__(self, connection: Any, state: context.RequestState, handler: Callable[..., Any],
                 args: list[Any], kwargs: dict[str, Any], window: int):
        self.connection = connection
        self.state = state
        self.handler = handler
        self.call = (args, kwargs)
        self.credit = window
        self.unacked: collections.deque[int] = collections.deque()   # sizes of items sent, not yet credited
        self.unacked_bytes = 0
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.last_flush = time.monotonic()
        self.finished = False

    def _pack(self, item: Any) -> bytes:
        packed = wire.pack(item)
        if len(packed) + 16 > self.connection.server.max_message:
            raise MessageTooLarge(f"stream item of {len(packed):,} bytes exceeds the limit of "
                                  f"{self.connection.server.max_message:,} bytes (NET_MAX_MESSAGE)")
        return packed

    def _flush(self) -> None:
        """Send the batched items as one frame (call with the runner's lock held, if it has one)."""
        if not self.batch:
            return
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        self.last_flush = time.monotonic()
        framed = self.connection.framed
        if framed is None or framed.closed:
            return
        try:
            header, body = wire.encode_items(self.state.request_id, batch, max_message=framed.max_message)
            framed.send_encoded(header, body)
        except MessageTooLarge:     # several items together are too big: send them one by one
            for packed in batch:
                header, body = wire.encode_items(self.state.request_id, [packed],
                                                 max_message=framed.max_message)
                with contextlib.suppress(NetError):
                    framed.send_encoded(header, body)
        except NetError as exc:
            log.debug("net: stream to %s lost: %s", self.connection.where, exc)

    def _end(self, kind: Kind | None, value: Any = None) -> None:
        """Forget the stream; send its last frame (None: the caller cancelled, send nothing)."""
        if self.finished:
            return
        self.finished = True
        request_id = self.state.request_id
        self.connection.streams.pop(request_id, None)
        self.connection.active.pop(request_id, None)
        if kind is not None and not self.state.cancelled:
            self.connection._send(kind, request_id, value)

    def _sent(self, size: int) -> None:
        self.credit -= 1
        self.unacked.append(size)
        self.unacked_bytes += size

    def _acknowledged(self, amount: int) -> None:
        self.credit += amount
        unacked = self.unacked
        for _ in range(min(amount, len(unacked))):
            self.unacked_bytes -= unacked.popleft()

    @property
    def blocked(self) -> bool:
        """Out of credit: ``window`` items, or WINDOW_BYTES of them, are ahead of the consumer."""
        return self.credit <= 0 or self.unacked_bytes >= WINDOW_BYTES

    def _failed(self, exc: BaseException) -> None:
        from .server import error_payload
        self._end(Kind.ERROR, error_payload(exc))

    def start(self) -> None:
        raise NotImplementedError

    def add_credit(self, amount: int) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class SyncStreamRunner(_Runner):
    """Runs a plain generator on the worker pool, one slice of credit at a time.

    A slice runs ``next()`` while credit lasts, then *parks*: the worker thread
    goes back to the pool and CREDIT from the caller schedules the next slice.
    Only one slice runs at a time (``running``), so the generator is never
    touched by two threads; cancel while parked closes it on a worker.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lock = threading.Lock()
        self.iterator: Any = None
        self.running = False        # a slice is scheduled or running
        self.timer_armed = False

    def start(self) -> None:
        self.running = True
        self.connection.server.workers.submit(self._slice)

    def add_credit(self, amount: int) -> None:
        with self.lock:
            self._acknowledged(amount)
            resume = not self.running and not self.finished
            if resume:
                self.running = True
        if resume:
            self._submit(self._slice)

    def cancel(self) -> None:
        with self.lock:
            close_now = not self.running and not self.finished
            if close_now:
                self.running = True
        if close_now:
            self._submit(self._close_generator)

    def _submit(self, task: Callable[[], None]) -> None:
        try:
            self.connection.server.workers.submit(task)
        except RuntimeError:        # the peer is closing: close the generator right here
            self._close_generator()

    def _slice(self) -> None:
        slots = self.connection.server.handler_slots     # counts with the sync handlers (NET_WORKERS)
        slots.acquire_blocking()
        request_token = context.current_request.set(self.state)     # net.Peer(), net.cancelled()
        try:
            self._produce()
        finally:
            context.current_request.reset(request_token)
            slots.release()

    def _produce(self) -> None:
        state = self.state
        if self.iterator is None:
            try:
                source = self.handler(*self.call[0], **self.call[1])
                if not _iterable(source):
                    raise _not_iterable(self.handler, source)
                self.iterator = iter(source)
            except BaseException as exc:
                self._failed(exc)
                return
        iterator = self.iterator
        lock = self.lock
        while True:
            with lock:
                if state.cancelled:
                    break
                if self.blocked:
                    self._flush()           # what is produced goes out before we park
                    self.running = False
                    return
            try:
                item = next(iterator)
                packed = self._pack(item)
            except StopIteration:
                with lock:
                    self._flush()
                    self._end(Kind.STREAM_END)
                return
            except BaseException as exc:
                with lock:
                    self._flush()
                self._close_quietly()
                self._failed(exc)
                return
            with lock:
                self._sent(len(packed))
                self.batch.append(packed)
                self.batch_bytes += len(packed)
                if (len(self.batch) >= BATCH_ITEMS or self.batch_bytes >= BATCH_BYTES
                        or time.monotonic() - self.last_flush >= FLUSH_DELAY):
                    self._flush()
                elif not self.timer_armed:
                    self.timer_armed = True
                    loop = self.connection.server.loop()
                    loop.call_soon_threadsafe(loop.call_later, FLUSH_DELAY, self._flush_stale)
        self._close_generator()

    def _flush_stale(self) -> None:
        """Timer on the peer's loop: send items that waited FLUSH_DELAY for company."""
        with self.lock:
            self.timer_armed = False
            if not self.finished:
                self._flush()

    def _close_quietly(self) -> None:
        close = getattr(self.iterator, "close", None)
        if close is not None:
            try:
                close()
            except BaseException as exc:
                log.debug("net: closing a stream's generator raised %r", exc)

    def _close_generator(self) -> None:
        """The caller went away: close the generator so its ``finally`` runs, send nothing."""
        request_token = context.current_request.set(self.state)
        try:
            self._close_quietly()
        finally:
            context.current_request.reset(request_token)
        with self.lock:
            self.batch, self.batch_bytes = [], 0
            self._end(None)


class AsyncStreamRunner(_Runner):
    """Runs an async generator (or an ``async def`` returning an iterable) as a task on the peer's loop.

    Items produced without the generator awaiting anything are coalesced; the
    batch is sent as soon as the generator waits (a ``call_soon`` flush), when
    it is full, or when credit runs out, so the task then waits for CREDIT.
    Cancel cancels the task: the generator sees ``CancelledError`` and its
    ``finally`` runs.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.loop = self.connection.server.loop()
        self.task: asyncio.Task | None = None
        self.wakeup: asyncio.Future | None = None
        self.flush_scheduled = False

    def start(self) -> None:
        self.loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        context.current_request.set(self.state)
        if self.state.cancelled:
            self._end(None)
            return
        self.task = self.loop.create_task(self._run())

    def add_credit(self, amount: int) -> None:
        self.loop.call_soon_threadsafe(self._add_credit, amount)

    def _add_credit(self, amount: int) -> None:
        self._acknowledged(amount)
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def cancel(self) -> None:
        self.loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _scheduled_flush(self) -> None:
        self.flush_scheduled = False
        self._flush()

    async def _run(self) -> None:
        source: Any = None
        try:
            source = self.handler(*self.call[0], **self.call[1])
            if inspect.isawaitable(source) and not hasattr(source, "__anext__"):
                source = await source
            if hasattr(source, "__anext__"):
                iterator = source
            elif _iterable(source):
                iterator = _as_async(iter(source))
            else:
                raise _not_iterable(self.handler, source)
            async for item in iterator:
                packed = self._pack(item)
                self.batch.append(packed)
                self._sent(len(packed))
                if len(self.batch) >= BATCH_ITEMS or self.blocked:
                    self._flush()
                elif not self.flush_scheduled:
                    self.flush_scheduled = True
                    self.loop.call_soon(self._scheduled_flush)
                while self.blocked:
                    self.wakeup = self.loop.create_future()
                    await self.wakeup
                    self.wakeup = None
            self._flush()
            self._end(Kind.STREAM_END)
        except asyncio.CancelledError:
            self.batch = []
            self._end(None)
        except BaseException as exc:
            self._flush()
            self._failed(exc)
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await aclose()


async def _as_async(iterator: Any) -> Any:
    for item in iterator:
        yield item
