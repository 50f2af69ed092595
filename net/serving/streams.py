"""The callee's side of a streamed call: run the generator and send its items within credit.

:class:`SyncStreamRunner` runs a plain generator on the peer's bounded worker
pool *in slices*: it gives its thread back whenever it runs out of credit, so
streams waiting on slow consumers hold no thread. :class:`AsyncStreamRunner`
runs an async generator as a task on the peer's event loop. Both coalesce
items produced back to back into one frame (at most ``BATCH_ITEMS`` items /
``BATCH_BYTES`` bytes, held at most ``FLUSH_DELAY`` seconds), which is what
makes small items cheap. The wire is in docs/protocol.md (Streams).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import threading
import time
from typing import Any, Callable

from .. import config
from ..errors import MessageTooLarge, NetError, ProtocolError
from ..wire import frames as wire, payloads
from ..wire.frames import Kind
from . import request as context

log = logging.getLogger("net")

BATCH_ITEMS = 128           # items coalesced into one STREAM_ITEM frame at most
BATCH_BYTES = 64 * 1024     # ... or this many packed bytes
FLUSH_DELAY = 0.001         # seconds a produced item may wait for company before it is sent
WINDOW_BYTES = 16 * 1024 * 1024     # packed bytes a producer may have sent ahead of the consumer


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
    if runner is None:
        return          # the stream ended already; late credit is normal
    try:
        amount = payloads.parse_credit(frame.payload)
    except ProtocolError as exc:
        log.warning("net: %s sent a %s; ignored", connection.where, exc)
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
        self._end(Kind.ERROR, payloads.error_from(exc))

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
        self.task: asyncio.Task[None] | None = None
        self.wakeup: asyncio.Future[None] | None = None
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
            athrow = getattr(source, "athrow", None)
            if athrow is not None:      # cancelled between items (e.g. awaiting credit): the generator
                with contextlib.suppress(BaseException):    # sees CancelledError too, as documented
                    await athrow(asyncio.CancelledError())
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
