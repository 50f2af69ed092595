"""One accepted connection: read frames, dispatch calls, write replies.

Handlers run inline on the reader thread (no hand-off on the fast path; the
server's watchdog takes the reading role over when one drags on), in the
bounded pool when ``NET_WORKERS`` handlers already run, or on the peer's
event loop for ``async def``. Anything a connection sends that breaks the
protocol drops that connection only (logged with its address); the peer
keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import threading
import time
from time import monotonic
from typing import Any, Callable

from ..errors import AuthError, FrameTooLarge, MessageTooLarge, NetError, PeerUnreachable, ProtocolError
from ..threads import loop_calls as handoff
from ..transport import endpoints as transport
from ..transport.framed import SMALL_BODY, FramedSocket
from ..transport.tls import TLSChannel
from ..wire import frames as wire, ids as identity, payloads
from ..wire.frames import Kind
from . import registry, request as context, streams

log = logging.getLogger("net")
CALL, NOTIFY, RESULT, ERROR = Kind.CALL, Kind.NOTIFY, Kind.RESULT, Kind.ERROR
current_request = context.current_request
RequestState = context.RequestState
CONNECTIONS = registry.CONNECTIONS
HEADER = wire.HEADER
pack = wire.pack
HANDOFF_AFTER = 0.003           # a handler running longer than this gets its reading role taken over
# A connection with this many bytes of replies its caller has not taken yet is not read further until
# the caller takes them (TCP pushes back on it): a caller that stops reading costs this, plus the
# replies of the calls it already had in flight, until NET_HEARTBEAT drops it (transport/framed.py).
REPLY_BACKLOG = 8 * 1024 * 1024
# While a connection is not read, the callee PINGs it this often: its caller cannot be answered (its
# PINGs are not read), and its heartbeat, set by the caller (down to ~0.5 s), must hear this peer alive.
PAUSE_PING = 0.25


_ASYNC: dict[Callable[..., Any], bool] = {}


def _is_async(handler: Callable[..., Any]) -> bool:
    known = _ASYNC.get(handler)
    if known is None:
        known = _ASYNC[handler] = inspect.iscoroutinefunction(handler)
    return known


class _RefusalLog:
    """Refused connections are logged as warnings at most once a second (a stranger retrying in a
    loop must not flood the log); the ones in between are counted in the next warning."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0.0
        self._quiet = 0

    def report(self, exc: NetError) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < 1.0:
                self._quiet += 1
                log.debug("net: %s", exc)
                return
            self._last, quiet, self._quiet = now, self._quiet, 0
        log.warning("net: %s%s", exc, f" ({quiet} more refused in the last second)" if quiet else "")


_refusals = _RefusalLog()


class InboundLink:
    """One accepted socket: reads frames, dispatches calls, writes replies."""

    def __init__(self, server: Any, sock: socket.socket, where: str):
        self.server = server
        self.sock: socket.socket | TLSChannel = sock
        self.where = where
        self.peer = server.peer             # these three: read on every call
        self.slots = server.handler_slots
        self.watchdog = server.watchdog
        self.framed: FramedSocket | None = None
        self.active: dict[int, context.RequestState] = {}
        self.streams: dict[int, streams._Runner] = {}     # streamed calls, for their CREDIT frames
        self.loop_replies: list[bytes] = []     # async handlers' replies of this loop turn (loop thread only)
        self.generation = 0                 # bumped each time a new thread takes over reading
        self.inline_since: float | None = None
        self.last_activity = time.monotonic()
        self.retired = False
        self.last_request = 0               # highest call id read: GOODBYE tells the caller what never ran
        self.held = 0                       # bytes its calls hold in the server's Intake (under its lock)
        self.in_flight = 0                  # its calls on the pool or the loop, not finished (same)
        self._lock = threading.Lock()

    def serve(self) -> None:
        """First reader of the connection: greet, then read."""
        accepted = self.sock
        assert isinstance(accepted, socket.socket)      # not greeted yet: the plain accepted socket
        deadline = monotonic() + self.server.handshake_timeout
        try:
            self.sock = transport.accept(accepted, self.server.handshake_timeout, self.where)
        except AuthError as exc:
            _refusals.report(exc)
            self.close()
            self.server.forget(self)
            return
        except NetError as exc:
            log.info("net: dropping %s before the greeting finished: %s", self.where, exc)
            self.close()
            self.server.forget(self)
            return
        except Exception:
            log.exception("net: greeting %s failed", self.where)
            self.close()
            self.server.forget(self)
            return
        framed = self.framed = FramedSocket(self.sock, self.where, self.server.max_message)
        if not framed.frame_started_within(deadline - monotonic()):
            # Silent connections would keep callers out (NET_MAX_CONNECTIONS) for NET_IDLE_TIMEOUT.
            log.info("net: dropping %s: no call within NET_HANDSHAKE_TIMEOUT (%gs) of connecting",
                     self.where, self.server.handshake_timeout)
            with contextlib.suppress(NetError):
                framed.send(Kind.GOODBYE, 0, payloads.goodbye(
                    f"no call within {self.server.handshake_timeout:g}s of connecting", 0))
            self.close()
            self.server.forget(self)
            return
        self.read_as(0)

    def read_as(self, generation: int) -> None:
        """Read frames while this thread holds the reading role; close when the connection ends."""
        try:
            if self._read_loop(generation):
                return              # another thread reads now
        except Exception:       # a bug here must cost one connection, never the peer
            log.exception("net: connection from %s failed", self.where)
        self.close()
        self.server.forget(self)

    def retire_if_idle(self, now: float, idle_timeout: float) -> bool:
        """Close the connection if nothing ran or arrived for ``idle_timeout`` seconds.

        The caller is told (GOODBYE) and resends anything it sent after this point.
        """
        with self._lock:
            if self.active or self.framed is None or now - self.last_activity < idle_timeout:
                return False
            self.retired = True
            last_request = self.last_request
        log.debug("net: closing %s after %gs idle", self.where, idle_timeout)
        with contextlib.suppress(NetError):
            self.framed.send(Kind.GOODBYE, 0, payloads.goodbye(payloads.IDLE, last_request))
        self.close()
        return True

    def take_over_if_stuck(self, now: float) -> bool:
        """Watchdog: if the reader has run one handler too long, hand reading to a new generation."""
        with self._lock:
            since = self.inline_since
            if since is None or now - since < HANDOFF_AFTER:
                return False
            self.inline_since = None
            self.generation += 1
            return True

    def _read_loop(self, generation: int) -> bool:
        """Returns True when the reading role was taken over, False when the connection ended."""
        framed = self.framed
        assert framed is not None
        lock = self._lock
        shared = self.server.shared
        while True:
            if (self.in_flight or framed.backlog_bytes >= REPLY_BACKLOG) and not self._hold_back(framed):
                return False
            try:
                # Poll for the next call only when nothing of this connection runs on other threads
                # and no other connection has been calling (see busy_poll.SharedServer).
                frame = framed.receive(not self.active and shared.alone(self.last_activity))
            except FrameTooLarge as exc:
                self._refuse_oversized(framed, exc)
                return False
            except ProtocolError as exc:
                log.warning("net: dropping connection from %s: %s", self.where, exc)
                with contextlib.suppress(NetError):
                    framed.send(Kind.GOODBYE, 0, payloads.goodbye(f"protocol error: {exc}", self.last_request))
                return False
            except PeerUnreachable:
                return False
            if frame is None:
                return False
            kind, request_id, payload = frame
            is_call = kind is CALL or kind is NOTIFY
            lock.acquire()
            try:
                if self.retired:            # closed as idle: this frame is never run (caller resends)
                    return False
                self.last_activity = now = monotonic()
                if is_call and request_id > self.last_request:
                    self.last_request = request_id
            finally:
                lock.release()
            shared.called(self, now)
            if is_call:
                self._dispatch(request_id, payload, kind is CALL, generation)
            elif not self._handle(frame):
                return False
            if self.generation != generation:
                return True

    def _hold_back(self, framed: FramedSocket) -> bool:
        """Stop reading while this connection holds too much: REPLY_BACKLOG of replies its caller
        has not taken, or more calls than the server's :class:`~net.serving.server.Intake` lets one
        connection hold. TCP then pushes back on the caller: a burst waits in the caller's socket
        buffers and memory, not ours, and runs as room frees up (no call is refused). Meanwhile
        the caller is PINGed every PAUSE_PING, which it answers and counts as heard, so its
        heartbeat never declares this busy peer dead. False: the connection ended meanwhile."""
        intake = self.server.intake
        if framed.backlog_bytes < REPLY_BACKLOG and not intake.over(self):
            return True
        framed.reader_waiting = True        # replies corked from here on are flushed by their own thread
        try:
            framed.flush()
            next_ping = monotonic() + PAUSE_PING
            while not framed.closed and framed.dropped is None:
                backlog = framed.backlog_bytes >= REPLY_BACKLOG
                if not backlog and not intake.over(self):
                    return True
                now = monotonic()
                if now >= next_ping:
                    framed.send(Kind.PING, 0)
                    next_ping = now + PAUSE_PING
                elif backlog:
                    framed.wait_for_room(REPLY_BACKLOG, next_ping - now)
                else:
                    intake.wait(self, next_ping - now)
            return False
        except NetError:
            return False
        finally:
            framed.reader_waiting = False

    def _refuse_oversized(self, framed: FramedSocket, exc: FrameTooLarge) -> None:
        """Tell the caller which call was over NET_MAX_MESSAGE (a typed error), then close:
        the rest of that frame is never read, so the stream cannot be resynchronised."""
        log.warning("net: dropping connection from %s: %s (NET_MAX_MESSAGE)", self.where, exc)
        if exc.kind in (Kind.CALL, Kind.NOTIFY) and exc.request_id:
            with self._lock:
                self.last_request = max(self.last_request, exc.request_id)
            if exc.kind == Kind.CALL:
                with contextlib.suppress(NetError):
                    framed.send(Kind.ERROR, exc.request_id, payloads.error(
                        payloads.MESSAGE_TOO_LARGE,
                        f"{self.server.peer.host}:{self.server.port} accepts messages of at most "
                        f"{exc.limit:,} bytes (its NET_MAX_MESSAGE); this call was {exc.length:,} bytes"))
        with contextlib.suppress(NetError):
            framed.send(Kind.GOODBYE, 0, payloads.goodbye(f"protocol error: {exc}", self.last_request))

    def _handle(self, frame: wire.Frame) -> bool:
        """Every frame but a call (see :meth:`_dispatch`); False when the connection must end."""
        kind = frame.kind
        if kind is Kind.PING:
            self._send(Kind.PONG, frame.request_id, None)
        elif kind is Kind.CANCEL:
            state = self.active.get(frame.request_id)
            if state is not None:
                state.cancel()
        elif kind is Kind.GOODBYE:
            return False
        elif kind is Kind.CREDIT:
            streams.credit(self, frame)
        elif kind is Kind.PONG:
            pass
        else:
            log.warning("net: dropping connection from %s: a caller may not send %s frames",
                        self.where, kind.name)
            return False
        return True

    def _dispatch(self, request_id: int, payload: Any, reply: bool, generation: int) -> None:
        """Run one CALL (``reply``) or NOTIFY: checked, then streamed, on the loop, in the pool,
        or (the usual case, kept in this one method) inline on this reader thread."""
        try:
            # payloads.parse_call, inline (every call is parsed here; tests/test_payloads.py holds
            # the two to the same verdicts). ``options`` that is not a map counts as none.
            key, args, kwargs, options = payload
            if type(args) is not list or type(kwargs) is not dict or type(key) is not bytes:
                if type(key) is not str:
                    raise TypeError
                key = key.encode("ascii", "replace")
                if type(args) is not list or type(kwargs) is not dict:
                    raise TypeError
        except (TypeError, ValueError):
            if reply:
                self._send(Kind.ERROR, request_id,
                           payloads.error(payloads.PROTOCOL_ERROR, payloads.MALFORMED_CALL))
            return
        handler = CONNECTIONS.get(key)
        if handler is None:
            log.debug("net: %s asked for unknown connection %s", self.where, identity.name_of(key))
            if reply:
                self._send(Kind.RESULT, request_id, self.server.peer.get_flag("INVALID_CONNECTION"))
            return
        state = RequestState(request_id, self.where, self.peer)
        if reply:
            self.active[request_id] = state
        if options and reply and type(options) is dict and options.get("stream"):   # payloads.STREAM
            streams.serve(self, state, handler, args, kwargs, options[payloads.STREAM])
            return
        is_async = _ASYNC.get(handler)
        if is_async is None:
            is_async = _is_async(handler)
        if is_async:
            self._run_async(state, handler, args, kwargs, reply)
            return
        slots = self.slots
        if not slots.try_acquire():
            weight = self._hold()
            self.server.workers.submit(self._run_pooled, state, handler, args, kwargs, reply, weight)
            return
        # Run on the reader thread (the watchdog hands reading to another thread if it drags
        # on). The reply goes out first; the bookkeeping after it is off the caller's clock.
        self.inline_since = monotonic()
        self.watchdog.watch(self)
        token = current_request.set(state)
        try:
            try:
                outcome, value = RESULT, handler(*args, **kwargs)
            except BaseException as exc:    # the caller gets every failure as a RemoteError
                outcome, value = ERROR, self._failed(handler, exc, reply)
            finally:
                current_request.reset(token)
            if reply:       # held back with the next replies only while still the reader
                self._send(outcome, request_id, value, soon=self.generation == generation)
        finally:
            slots.release()
            self.active.pop(request_id, None)
            self._lock.acquire()
            if self.generation == generation:
                self.inline_since = None
            self._lock.release()

    def _hold(self) -> int:
        """Count the call just read as held (the server's Intake): its weight, to release later."""
        framed = self.framed
        assert framed is not None
        return int(self.server.intake.hold(self, framed.claim()))

    def _run_pooled(self, state: context.RequestState, handler: Callable[..., Any],
                    args: list[Any], kwargs: dict[str, Any], reply: bool, weight: int) -> None:
        intake = self.server.intake
        self.slots.acquire_blocking()
        intake.started(self, weight)        # running now: its bytes are no longer queued
        try:
            self._run_sync(state, handler, args, kwargs, reply)
        finally:
            self.slots.release()
            intake.finished(self, 0)

    def _run_sync(self, state: context.RequestState, handler: Callable[..., Any],
                  args: list[Any], kwargs: dict[str, Any], reply: bool) -> None:
        request_token = context.current_request.set(state)
        try:
            result = handler(*args, **kwargs)
            outcome = (Kind.RESULT, result)
        except BaseException as exc:        # the caller gets every failure as a RemoteError
            outcome = (Kind.ERROR, self._failed(handler, exc, reply))
        finally:
            context.current_request.reset(request_token)
        self._finish(state, outcome, reply)

    def _failed(self, handler: Callable[..., Any], exc: BaseException, reply: bool) -> dict[str, str]:
        """What a failed handler's caller is told; logged when there is no caller to tell."""
        if not reply:
            log.warning("net: handler %s failed for %s: %s",
                        getattr(handler, "__qualname__", handler), self.where, exc)
        return payloads.error_from(exc)

    def _run_async(self, state: context.RequestState, handler: Callable[..., Any],
                   args: list[Any], kwargs: dict[str, Any], reply: bool) -> None:
        loop = self.server.loop()
        weight = self._hold()       # until it finishes: the loop runs any number of them at once
        handoff.for_loop(loop).call(self._start_async, loop, state, handler, args, kwargs, reply, weight)

    def _start_async(self, loop: asyncio.AbstractEventLoop, state: context.RequestState,
                     handler: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                     reply: bool, weight: int) -> None:
        """On the peer's loop: run the handler as a task; CANCEL cancels the task."""
        async def run() -> None:
            context.current_request.set(state)
            try:
                outcome = (Kind.RESULT, await handler(*args, **kwargs))
            except BaseException as exc:
                outcome = (Kind.ERROR, payloads.error_from(exc))
            self._finish_on_loop(loop, state, outcome, reply)

        task = loop.create_task(run())
        task.add_done_callback(lambda done: self._async_done(done, state, weight))
        state.on_cancel = lambda: loop.call_soon_threadsafe(task.cancel)
        if state.cancelled:         # CANCEL came before the task existed
            task.cancel()

    def _async_done(self, task: asyncio.Task[None], state: context.RequestState, weight: int) -> None:
        # A task cancelled before its first step never runs ``run``: forget the request then too.
        if task.cancelled():
            self.active.pop(state.request_id, None)
        self.server.intake.finished(self, weight)

    def _finish_on_loop(self, loop: asyncio.AbstractEventLoop, state: context.RequestState,
                        outcome: tuple[Kind, Any], reply: bool) -> None:
        """:meth:`_finish` for async handlers: replies made in one loop turn go out in one send."""
        self.active.pop(state.request_id, None)
        framed = self.framed
        if not reply or framed is None or framed.closed:
            return
        kind, value = outcome
        try:
            header, body = wire.encode_frame(kind, state.request_id, value, max_message=framed.max_message)
        except (MessageTooLarge, TypeError, ValueError):
            self._send(kind, state.request_id, value)       # answers why the value cannot travel
            return
        if len(body) >= SMALL_BODY:
            with contextlib.suppress(NetError):
                framed.send_encoded(header, body)          # big: no copy into a batch
            return
        self.loop_replies.append(header + body)
        if len(self.loop_replies) == 1:
            loop.call_soon(self._flush_loop_replies)

    def _flush_loop_replies(self) -> None:
        replies, self.loop_replies = self.loop_replies, []
        framed = self.framed
        if replies and framed is not None and not framed.closed:
            try:
                framed.send_encoded(b"", b"".join(replies))
            except NetError as exc:
                log.debug("net: replies to %s lost: %s", self.where, exc)

    def _finish(self, state: context.RequestState, outcome: tuple[Kind, Any], reply: bool) -> None:
        self.active.pop(state.request_id, None)
        if reply:
            kind, value = outcome
            self._send(kind, state.request_id, value)

    def _send(self, kind: Kind, request_id: int, value: Any, soon: bool = False) -> None:
        """Send a reply; ``soon`` (the reading thread only) lets it go out with the next ones."""
        framed = self.framed
        if framed is None or framed.closed:
            return
        try:
            # framed.send (frames.encode_frame), unrolled: every reply comes through here
            # (tests/test_payloads.py checks the bytes against encode_frame).
            body = pack(value)
            if len(body) > framed.max_message:
                raise wire.too_large(len(body), framed.max_message)
            if soon and framed.decoder.ready_frames:
                framed.send_soon(HEADER.pack(len(body), kind, request_id), body)
            else:
                framed.send_encoded(HEADER.pack(len(body), kind, request_id), body)
        except (MessageTooLarge, TypeError, ValueError) as exc:
            # The value cannot travel: tell the caller why instead of leaving it waiting.
            with contextlib.suppress(NetError):
                framed.send(Kind.ERROR, request_id, payloads.unsendable(exc))
        except NetError as exc:
            log.debug("net: reply to %s lost: %s", self.where, exc)

    def close(self, linger: bool = True) -> None:
        """Close; with ``linger`` the replies already queued still go out (FramedSocket.close)."""
        for state in list(self.active.values()):
            state.cancel()
        if self.framed is not None:
            self.framed.close(linger)
        else:
            with contextlib.suppress(OSError):
                self.sock.close()
