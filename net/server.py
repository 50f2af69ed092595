"""The serving side of a peer: accept loop, one reader thread per connection, dispatch.

Reader threads only parse frames and hand calls off, so a slow handler never
delays other calls on the same connection: synchronous handlers run in the
peer's bounded :class:`~net.workers.WorkerPool`, ``async def`` handlers on
the peer's event loop. Anything a connection sends that breaks the protocol
drops that connection only (logged with its address); the peer keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import threading
import time
import traceback
from typing import Any, Callable

from . import config, context, registry, streams, transport, wire
from .errors import MessageTooLarge, NetError, PeerUnreachable, ProtocolError, Timeout
from .wire import Kind

log = logging.getLogger("net")
ACCEPT_ERROR_PAUSE = 0.05       # after EMFILE and the like, so a full fd table cannot spin a core


def error_payload(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    return {"type": name, "message": str(exc),
            "traceback": "".join(traceback.format_exception(kind, exc, exc.__traceback__))}


class Server:
    """Listens on the first free port of the range and serves every connection."""

    def __init__(self, peer: Any):
        self.peer = peer
        self.listener, self.port = transport.listen(
            config.get("BIND"), config.get("PORT_START"), config.get("PORT_RANGE"))
        from .workers import WorkerPool
        self.workers = WorkerPool(config.get("WORKERS"), name=f"net-handler-{self.port}")
        self.max_connections = config.get("MAX_CONNECTIONS")
        self.handshake_timeout = config.get("HANDSHAKE_TIMEOUT")
        self.idle_timeout = config.get("IDLE_TIMEOUT")
        self.max_message = config.get("MAX_MESSAGE")
        self.connections: set[InboundConnection] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name=f"net-accept-{self.port}")
        self._accept_thread.start()

    # -- accepting ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                sock, address = self.listener.accept()
            except OSError as exc:
                if self._closed.is_set():
                    return
                log.warning("net: accept failed on port %s: %s", self.port, exc)
                time.sleep(ACCEPT_ERROR_PAUSE)
                continue
            where = f"{address[0]}:{address[1]}"
            with self._lock:
                full = len(self.connections) >= self.max_connections
                if not full:
                    connection = InboundConnection(self, sock, where)
                    self.connections.add(connection)
            if full:
                log.warning("net: refusing %s: %d connections open (NET_MAX_CONNECTIONS)",
                            where, self.max_connections)
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            threading.Thread(target=connection.serve, daemon=True, name=f"net-conn-{where}").start()

    def forget(self, connection: "InboundConnection") -> None:
        with self._lock:
            self.connections.discard(connection)

    # -- async handlers ----------------------------------------------------------------------
    def loop(self) -> asyncio.AbstractEventLoop:
        """The peer's own event loop for ``async def`` handlers, started on first need."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=run, daemon=True, name=f"net-loop-{self.port}").start()
                ready.wait()
                self._loop = loop
            return self._loop

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)     # wakes the blocked accept() on Linux
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            connections = list(self.connections)
        for connection in connections:
            connection.close()
        self._accept_thread.join(timeout=2)
        self.workers.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


class InboundConnection:
    """One accepted socket: reads frames, dispatches calls, writes replies."""

    def __init__(self, server: Server, sock: socket.socket, where: str):
        self.server = server
        self.sock = sock
        self.where = where
        self.framed: transport.FramedSocket | None = None
        self.active: dict[int, context.RequestState] = {}
        self.streams: dict[int, streams._Runner] = {}     # streamed calls, for their CREDIT frames

    def serve(self) -> None:
        server = self.server
        try:
            try:
                transport.accept_preamble(self.sock, server.handshake_timeout, self.where)
            except NetError as exc:
                log.info("net: dropping %s before the greeting finished: %s", self.where, exc)
                return
            self.framed = transport.FramedSocket(self.sock, self.where, server.max_message)
            self.sock.settimeout(server.idle_timeout)
            self._read_loop()
        except Exception:       # a bug here must cost one connection, never the peer
            log.exception("net: connection from %s failed", self.where)
        finally:
            self.close()
            server.forget(self)

    def _read_loop(self) -> None:
        framed = self.framed
        assert framed is not None
        while True:
            try:
                frame = framed.receive()
            except Timeout:
                if self.active:
                    continue
                log.debug("net: closing %s after %ss idle", self.where, self.server.idle_timeout)
                with contextlib.suppress(NetError):
                    framed.send(Kind.GOODBYE, 0, {"reason": "idle"})
                return
            except ProtocolError as exc:
                log.warning("net: dropping connection from %s: %s", self.where, exc)
                with contextlib.suppress(NetError):
                    framed.send(Kind.GOODBYE, 0, {"reason": f"protocol error: {exc}"})
                return
            except PeerUnreachable:
                return
            if frame is None:
                return
            if not self._handle(frame):
                return

    def _handle(self, frame: wire.Frame) -> bool:
        kind = frame.kind
        if kind is Kind.CALL or kind is Kind.NOTIFY:
            self._dispatch(frame.request_id, frame.payload, reply=kind is Kind.CALL)
        elif kind is Kind.PING:
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

    def _dispatch(self, request_id: int, payload: Any, reply: bool) -> None:
        if not (isinstance(payload, list) and len(payload) == 4 and isinstance(payload[1], list)
                and isinstance(payload[2], dict) and isinstance(payload[0], (bytes, str))):
            if reply:
                self._send(Kind.ERROR, request_id, {
                    "type": "net.ProtocolError", "traceback": "",
                    "message": "malformed call: expected [connection, args, kwargs, options]"})
            return
        key, args, kwargs, options = payload
        if isinstance(key, str):
            key = key.encode("ascii", "replace")
        handler = registry.CONNECTIONS.get(key)
        if handler is None:
            log.debug("net: %s asked for unknown connection %s", self.where, registry.name_of(key))
            if reply:
                self._send(Kind.RESULT, request_id, self.server.peer.get_flag("INVALID_CONNECTION"))
            return
        state = context.RequestState(request_id, self.where)
        if reply:
            self.active[request_id] = state
        window = options.get("stream") if isinstance(options, dict) else None
        if window and reply:
            streams.serve(self, state, handler, args, kwargs, window)
            return
        if streams.is_streaming(handler):
            self._finish(state, (Kind.ERROR, error_payload(TypeError(
                f"{registry.name_of(key)} is a generator: iterate it (for x in f(peer=P), "
                f"async for x in f.acall(peer=P), or f.stream(peer=P))"))), reply)
            return
        if inspect.iscoroutinefunction(handler):
            self._run_async(state, handler, args, kwargs, reply)
        else:
            self.server.workers.submit(self._run_sync, state, handler, args, kwargs, reply)

    def _run_sync(self, state: context.RequestState, handler: Callable[..., Any],
                  args: list[Any], kwargs: dict[str, Any], reply: bool) -> None:
        peer_token = context.serving_peer.set(self.server.peer)
        request_token = context.current_request.set(state)
        try:
            result = handler(*args, **kwargs)
            outcome = (Kind.RESULT, result)
        except BaseException as exc:        # the caller gets every failure as a RemoteError
            if not reply:
                log.warning("net: handler %s failed for %s: %s",
                            getattr(handler, "__qualname__", handler), self.where, exc)
            outcome = (Kind.ERROR, error_payload(exc))
        finally:
            context.current_request.reset(request_token)
            context.serving_peer.reset(peer_token)
        self._finish(state, outcome, reply)

    def _run_async(self, state: context.RequestState, handler: Callable[..., Any],
                   args: list[Any], kwargs: dict[str, Any], reply: bool) -> None:
        async def run() -> None:
            context.serving_peer.set(self.server.peer)
            context.current_request.set(state)
            try:
                outcome = (Kind.RESULT, await handler(*args, **kwargs))
            except BaseException as exc:
                outcome = (Kind.ERROR, error_payload(exc))
            self._finish(state, outcome, reply)

        future = asyncio.run_coroutine_threadsafe(run(), self.server.loop())
        state.on_cancel = future.cancel

    def _finish(self, state: context.RequestState, outcome: tuple[Kind, Any], reply: bool) -> None:
        self.active.pop(state.request_id, None)
        if reply:
            kind, value = outcome
            self._send(kind, state.request_id, value)

    def _send(self, kind: Kind, request_id: int, value: Any) -> None:
        framed = self.framed
        if framed is None or framed.closed:
            return
        try:
            framed.send(kind, request_id, value)
        except (MessageTooLarge, TypeError, ValueError) as exc:
            # The value cannot travel: tell the caller why instead of leaving it waiting.
            with contextlib.suppress(NetError):
                framed.send(Kind.ERROR, request_id, {
                    "type": f"net.{type(exc).__name__}" if isinstance(exc, NetError) else type(exc).__name__,
                    "message": f"the result cannot be sent: {exc}", "traceback": ""})
        except NetError as exc:
            log.debug("net: reply to %s lost: %s", self.where, exc)

    def close(self) -> None:
        for state in list(self.active.values()):
            state.cancel()
        if self.framed is not None:
            self.framed.close()
        else:
            with contextlib.suppress(OSError):
                self.sock.close()
