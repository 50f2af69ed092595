"""Process-wide outbound connections, one per remote ``(host, port)``, and their heartbeat.

The heartbeat monitor is why a frozen or vanished peer never hangs a caller
that set no deadline: it pings connections with calls in flight and fails
them with ``PeerUnreachable`` after ``NET_HEARTBEAT`` seconds of silence.
"""
from __future__ import annotations

import threading
import time
from time import monotonic

from .. import config
from ..errors import PeerUnreachable, Timeout
from .link import IDLE_CHECK_AFTER, OutboundLink


class Pool:
    """Process-wide connections, one per remote (host, port), plus their heartbeat monitor."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, int], OutboundLink] = {}
        self._lock = threading.Lock()
        self._dialing: dict[tuple[str, int], threading.Lock] = {}
        self._monitor: threading.Thread | None = None

    def get(self, host: str, port: int) -> OutboundLink:
        address = (host, port)
        connection = self._connections.get(address)
        if connection is not None:
            if connection.dead is None and (connection.pending or
                                            monotonic() - connection.last_heard <= IDLE_CHECK_AFTER):
                return connection       # in use just now: no need to look (usable() says why)
            if connection.usable():
                return connection
        with self._lock:
            dial_lock = self._dialing.setdefault(address, threading.Lock())
        with dial_lock:             # one dial per address at a time; others reuse its result
            connection = self._connections.get(address)
            if connection is not None and connection.dead is None:
                return connection
            connection = OutboundLink(self, host, port)
            with self._lock:
                self._connections[address] = connection
                if self._monitor is None or not self._monitor.is_alive():
                    self._monitor = threading.Thread(target=self._watch, daemon=True, name="net-heartbeat")
                    self._monitor.start()
            return connection

    def discard(self, connection: OutboundLink) -> None:
        with self._lock:
            address = (connection.host, connection.port)
            if self._connections.get(address) is connection:
                del self._connections[address]

    def connections(self) -> list[OutboundLink]:
        with self._lock:
            return list(self._connections.values())

    def close_all(self) -> None:
        for connection in self.connections():
            connection.close()

    def _watch(self) -> None:
        """Ping connections that have callers waiting; kill those silent for NET_HEARTBEAT.

        Checks every ``limit/8`` (at most 1 s). Pings go out after ``limit/4`` of
        silence with calls waiting; a connection is declared dead once it has been
        silent for ``limit`` minus one check interval *and* a ping sent in that
        silence has gone unanswered for half the limit, so a dead or frozen peer
        under steady calls is detected within NET_HEARTBEAT of the last thing it
        sent, and a PONG always has half the limit to come back on a busy machine.
        """
        while True:
            limit = config.get("HEARTBEAT")
            interval = min(1.0, limit / 8)
            time.sleep(interval)
            connections = self.connections()
            if not connections:
                with self._lock:
                    if not self._connections:
                        self._monitor = None
                        return
                continue
            now = time.monotonic()
            for connection in connections:
                if not connection.pending:
                    continue
                if connection.framed.decoder.expect_preamble is not None \
                        and now - connection.opened > connection.dial_timeout:
                    connection._die(Timeout(
                        f"{connection.where} accepted the connection but did not greet within "
                        f"{connection.dial_timeout:g}s: not a net peer?", peer=connection.where))
                    continue
                silent = now - connection.last_heard
                # Dead only if a ping sent during this silence went unanswered for half the
                # limit: silence can also build up over calls that each gave up early (see
                # OutboundLink._start_silence_clock), on a peer that would still answer.
                pinged = connection.last_ping > connection.last_heard and now - connection.last_ping >= limit / 2
                if silent > limit - interval and pinged:
                    connection._die(PeerUnreachable(
                        f"{connection.where} stopped answering: nothing heard for {silent:.1f}s "
                        f"with calls in flight (NET_HEARTBEAT={limit:g})", peer=connection.where))
                elif silent > limit / 4 and connection.last_ping <= connection.last_heard:
                    connection.ping()       # one per silence: TCP delivers it, or the link is gone
