"""The publisher side of events: one ordered, bounded queue per subscriber, and the threads that drain them.

Every subscribing peer gets its own queue (``NET_EVENT_QUEUE``). Triggering
an event packs its ``(args, kwargs)`` once, appends the bytes to each
subscriber's queue and returns; it never waits on the network. At most
``NET_THREAD_LIMIT`` delivery threads drain the queues. A subscriber has at
most one batch on the wire at a time (a CALL to its ``subscription_handler``;
the reply is the acknowledgement), so its events stay in order, a slow
subscriber only fills its own queue (overflow drops its oldest events,
logged), and a dead or crashing one is noticed: an unreachable subscriber is
pruned (the stale list), a crashing handler is logged and stays subscribed.
A lease not renewed for ``LEASES_UNTIL_EXPIRY`` periods expires the same way.

Kept apart from the subscriber side (``net.subscriptions``): a process may be
either or both, and the two share only ``net.event_protocol``.
"""
from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from .. import config
from ..calls import client
from ..errors import MessageTooLarge, NetError, PeerUnreachable, ProtocolError
from ..serving import running
from ..threads.workers import WorkerPool, ensure_thread
from ..wire import frames as wire, ids as identity, payloads
from ..wire.frames import Kind
from .shared import FAILURE_LOG_INTERVAL, INSTANCE, SUBSCRIPTION_KEY, address_text

log = logging.getLogger("net")

LEASES_UNTIL_EXPIRY = 3             # a publisher drops a lease not renewed for this many periods
MAX_LEASE_PERIODS = 10              # the longest lease granted, in this publisher's NET_LEASE periods: a
                                    # lease asked for 1e12 s would hold a subscriber slot for ever
MAX_BATCH_EVENTS = 1024             # events in one delivery message
MAX_BATCH_BYTES = 256 * 1024        # bytes of events in one delivery message (one event may exceed it)
MESSAGE_OVERHEAD = 4096             # room for the batch header inside NET_MAX_MESSAGE
MAX_SUBSCRIBERS = 4096              # leases one publisher holds at once (bounds its memory)

# The publisher's subscriber table, as the spec shows it (net.peer._Peer.SUBSCRIPTIONS):
# base64(event) -> {subscriber id: its record}. Rebuilt from the leases on every change.
SUBSCRIPTIONS: dict[bytes, dict[bytes, Any]] = {}
STALE: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)   # subscribers pruned lately

# A delivery is the CALL payloads.deliver_call(meta, [event, ...]), that is [SUBSCRIPTION_KEY,
# ["deliver", meta, [event, ...]], {}, {}], pre-packed: the events are packed once when triggered
# and spliced in between these constant pieces (tests/test_payloads.py checks the bytes).
_DELIVER_HEAD = (wire.array_header(4) + wire.pack(SUBSCRIPTION_KEY) + wire.array_header(3)
                 + wire.pack(payloads.DELIVER))
_DELIVER_TAIL = wire.pack({}) + wire.pack(payloads.NO_OPTIONS)


class Subscriber:
    """One subscribing peer as a publisher sees it: its lease, its events and its queue."""

    __slots__ = ("id", "host", "port", "route", "instance", "lease", "events", "queue", "seq", "busy",
                 "gone", "period", "expires", "delivered", "failed", "dropped", "dropped_logged",
                 "failed_logged", "failure_logged_at", "drops_logged_at")

    def __init__(self, peer_id: bytes, host: str, port: int, route: str, instance: str, bound: int):
        self.id = peer_id
        self.host = host
        self.port = port
        self.route = route              # how the subscriber addressed us; echoed so it can filter
        self.instance = instance        # the subscriber process this lease belongs to
        self.lease = secrets.token_hex(8)
        self.events: frozenset[str] = frozenset()
        self.queue: collections.deque[bytes] = collections.deque(maxlen=bound)
        self.seq = 0                    # sequence number of the newest queued event
        self.busy = False               # a delivery thread owns it, or a batch awaits its ack
        self.gone = False
        self.period = 0.0
        self.expires = 0.0
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.dropped_logged = 0
        self.failed_logged = 0
        self.failure_logged_at = float("-inf")
        self.drops_logged_at = float("-inf")

    @property
    def where(self) -> str:
        return address_text(self.host, self.port)

    @property
    def name(self) -> str:
        """How log lines name it: its peer id and its address."""
        return f"{self.id.decode('ascii', 'replace')} ({self.where})"

    def __repr__(self) -> str:
        left = max(0.0, self.expires - time.monotonic())
        return (f"<subscriber {self.where} events={sorted(self.events)} queued={len(self.queue)} "
                f"delivered={self.delivered} failed={self.failed} dropped={self.dropped} "
                f"lease {left:.0f}s>")


class _Ack(client.Pending):
    """Waits for a subscriber's reply to one delivery batch; runs on the connection's reader thread."""

    __slots__ = ("publisher", "record", "items", "first")

    def __init__(self, publisher: Publisher, record: Subscriber, items: list[bytes], first: int):
        self.publisher = publisher
        self.record = record
        self.items = items
        self.first = first              # sequence number of items[0]

    def deliver(self, frame: wire.Frame) -> None:
        try:
            self.publisher._acked(self.record, len(self.items), frame)
        except Exception:       # never let a bug here kill the shared connection's reader
            log.exception("net: handling the acknowledgement of %s failed", self.record.name)

    def fail(self, error: NetError) -> None:
        try:
            self.publisher._failed(self.record, self.items, self.first, error)
        except Exception:
            log.exception("net: handling a failed delivery to %s failed", self.record.name)


class Publisher:
    """This process's subscribers, their queues, and the threads that deliver to them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[tuple[str, int, str], Subscriber] = {}
        self.routes: dict[str, tuple[Subscriber, ...]] = {}      # event name -> its subscribers
        self._workers: Any = None
        self._janitor: threading.Thread | None = None

    # -- the subscriber table ----------------------------------------------------------------
    def subscribe(self, request: Any) -> dict[str, Any]:
        """A subscriber (re)states the events it wants from us; an empty list unsubscribes it."""
        try:
            wanted = payloads.parse_subscribe_request(request)
        except ProtocolError as exc:    # the caller's mistake: answered as a TypeError / ValueError, as ever
            raise (ValueError if isinstance(request, Mapping) else TypeError)(str(exc)) from None
        peer_id, host, port, instance, route, events = (wanted.peer_id, wanted.host, wanted.port,
                                                        wanted.instance, wanted.route, wanted.events)
        own = config.get("LEASE")
        period = min(wanted.lease or own, MAX_LEASE_PERIODS * own)
        key = (host, port, route)
        now = time.monotonic()
        with self.lock:
            record = self.records.get(key)
            if record is not None and record.instance != instance:
                # The subscriber restarted: its old lease and queue must not reach the new process.
                self._remove_locked(record)
                record = None
            if not events:
                if record is not None:
                    self._remove_locked(record)
                    self._rebuild_locked()
                return payloads.subscribe_reply(INSTANCE, None, 0)
            if record is None:
                if len(self.records) >= MAX_SUBSCRIBERS:
                    raise ValueError(f"this publisher already serves {MAX_SUBSCRIBERS} subscribers")
                record = Subscriber(peer_id, host, port, route, instance, config.get("EVENT_QUEUE"))
                self.records[key] = record
                log.debug("net: %s subscribed to %s", record.name, ", ".join(sorted(events)))
            record.id = peer_id
            record.events = frozenset(events)
            record.period = period
            record.expires = now + LEASES_UNTIL_EXPIRY * period
            self._rebuild_locked()
            answer = payloads.subscribe_reply(INSTANCE, record.lease, LEASES_UNTIL_EXPIRY * period)
        self._ensure_janitor()
        return answer

    def table(self) -> dict[str, list[dict[str, Any]]]:
        """The subscriber table in plain values: event name -> subscribers (for ``list`` requests)."""
        with self.lock:
            return {name: [payloads.listed_subscriber(r.id, r.host, r.port, len(r.queue), r.delivered,
                                                      r.failed, r.dropped)
                           for r in records]
                    for name, records in self.routes.items()}

    def _remove_locked(self, record: Subscriber) -> None:
        record.gone = True
        record.queue.clear()
        if self.records.get((record.host, record.port, record.route)) is record:
            del self.records[(record.host, record.port, record.route)]

    def _rebuild_locked(self) -> None:
        routes: dict[str, list[Subscriber]] = {}
        for record in self.records.values():
            for name in record.events:
                routes.setdefault(name, []).append(record)
        self.routes = {name: tuple(records) for name, records in routes.items()}
        table = SUBSCRIPTIONS
        fresh = {identity.key(name): {r.id: r for r in records} for name, records in routes.items()}
        for key in [k for k in table if k not in fresh]:
            del table[key]
        table.update(fresh)

    def _stale(self, record: Subscriber, reason: Any) -> None:
        """Drop an unreachable (or expired, or restarted) subscriber: stale list, log, prune."""
        with self.lock:
            if record.gone:
                return
            lost = len(record.queue)
            self._remove_locked(record)
            self._rebuild_locked()
            STALE.append({"id": record.id, "host": record.host, "port": record.port,
                          "events": sorted(record.events), "reason": str(reason),
                          "time": time.time()})
        log.warning("net: subscriber %s dropped from %s: %s (%d queued event(s) discarded, "
                    "%d dropped before as it was too slow)",
                    record.name, ", ".join(sorted(record.events)), reason, lost, record.dropped)

    # -- triggering --------------------------------------------------------------------------
    def publish(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> int:
        """Queue one event for every subscriber of ``name``; returns how many it was queued for."""
        try:
            item = wire.pack([name, args, kwargs])      # payloads.event, inline (tests/test_payloads.py)
        except TypeError as exc:
            raise TypeError(f"event {name!r}: {exc}") from None
        limit = config.get("MAX_MESSAGE") - MESSAGE_OVERHEAD
        if len(item) > limit:
            raise MessageTooLarge(f"event {name!r} packs to {len(item):,} bytes, over the "
                                  f"{limit:,} an event may use (NET_MAX_MESSAGE)")
        wake = []
        with self.lock:
            targets = self.routes.get(name)
            if not targets:
                return 0
            for record in targets:
                queue = record.queue
                if len(queue) == queue.maxlen:
                    record.dropped += 1
                queue.append(item)
                record.seq += 1
                if not record.busy:
                    record.busy = True
                    wake.append(record)
            count = len(targets)
        if wake:
            workers = self._workers or self._start_workers()
            for record in wake:
                workers.submit(self._send, record)
        return count

    def _start_workers(self) -> Any:
        with self.lock:
            if self._workers is None:
                self._workers = WorkerPool(config.get("THREAD_LIMIT"), name="net-events")
            return self._workers

    # -- delivering (on the delivery threads) ------------------------------------------------
    def _send(self, record: Subscriber) -> None:
        with self.lock:
            queue = record.queue
            if record.gone or not queue:
                record.busy = False
                return
            first = record.seq - len(queue) + 1
            items: list[bytes] = []
            size = 0
            while queue and len(items) < MAX_BATCH_EVENTS and size < MAX_BATCH_BYTES:
                item = queue.popleft()
                items.append(item)
                size += len(item)
        self._report_drops(record)
        me = running.running()
        meta = payloads.deliver_meta(me.id if me is not None else b"", INSTANCE, record.instance,
                                     record.lease, record.route, first)
        body = b"".join((_DELIVER_HEAD, wire.pack(meta), wire.array_header(len(items)), *items,
                         _DELIVER_TAIL))
        ack = _Ack(self, record, items, first)
        for attempt in (1, 2):
            try:
                connection = client.POOL.get(record.host, record.port)
                connection.send_packed_call(body, ack)
                return
            except PeerUnreachable as exc:
                if attempt == 1:        # maybe a stale pooled socket: dial once more
                    continue
                self._stale(record, exc)
            except NetError as exc:
                self._stale(record, exc)
            return

    def _acked(self, record: Subscriber, count: int, frame: wire.Frame) -> None:
        if record.gone:
            return
        payload = frame.payload
        if frame.kind is Kind.RESULT and isinstance(payload, wire.Flag):
            self._stale(record, f"it does not take event deliveries (answered {payload.name})")
            return
        if frame.kind is Kind.RESULT:
            try:
                receipt = payloads.parse_delivery_receipt(payload)
            except ProtocolError as exc:
                log.warning("net: subscriber %s answered a delivery with a %s", record.name, exc)
            else:
                if receipt.unknown:
                    self._stale(record, "it no longer holds this lease (the subscriber restarted)")
                    return
                self._count(record, count, receipt)
        elif frame.kind is Kind.ERROR:
            record.failed += count
            try:
                failure = payloads.parse_error(payload)
                reason = f"{failure.type}: {failure.message}"
            except ProtocolError as exc:
                reason = str(exc)
            log.warning("net: subscriber %s failed to take %d event(s): %s", record.name, count, reason)
        else:
            log.warning("net: subscriber %s answered a delivery with %s", record.name, frame.kind.name)
        self._next(record)

    def _count(self, record: Subscriber, count: int, receipt: payloads.Receipt) -> None:
        """A batch of ``count`` events was taken; report the handler calls that raised."""
        record.delivered += count
        if receipt.failed > 0:
            record.failed += receipt.failed
            now = time.monotonic()
            if now - record.failure_logged_at >= FAILURE_LOG_INTERVAL:     # no log flood
                log.warning("net: subscriber %s: %d event handler call(s) raised since the last "
                            "report (%d in all), e.g. %s", record.name,
                            record.failed - record.failed_logged, record.failed, receipt.error)
                record.failed_logged = record.failed
                record.failure_logged_at = now

    def _failed(self, record: Subscriber, items: list[bytes], first: int, error: NetError) -> None:
        if record.gone:
            return
        if isinstance(error, client.Retired):
            # Closed as idle before it read the batch: put the batch back and send it again,
            # unless overflow dropped events right after it (the queue must stay contiguous).
            with self.lock:
                queue = record.queue
                if record.seq - len(queue) + 1 == first + len(items):
                    room = (queue.maxlen or 0) - len(queue)
                    lost = max(0, len(items) - room)
                    queue.extendleft(reversed(items[lost:]))
                else:
                    lost = len(items)
                record.dropped += lost
            self._next(record)
            return
        self._stale(record, error)

    def _next(self, record: Subscriber) -> None:
        with self.lock:
            more = bool(record.queue) and not record.gone
            if not more:
                record.busy = False
        if more:
            self._workers.submit(self._send, record)

    def _report_drops(self, record: Subscriber) -> None:
        dropped = record.dropped
        new = dropped - record.dropped_logged
        now = time.monotonic()
        if new > 0 and now - record.drops_logged_at >= FAILURE_LOG_INTERVAL:     # no log flood
            record.dropped_logged = dropped
            record.drops_logged_at = now
            log.warning("net: subscriber %s is too slow: dropped its %d oldest queued event(s) "
                        "since the last report (%d in all; NET_EVENT_QUEUE=%d)", record.name, new, dropped,
                        record.queue.maxlen or 0)

    # -- lease expiry ------------------------------------------------------------------------
    def _ensure_janitor(self) -> None:
        with self.lock:
            self._janitor = ensure_thread(self._janitor, self._sweep, "net-events-leases")

    def _sweep(self) -> None:
        """Expire leases nobody renewed and report drops of stuck subscribers; exit when idle."""
        while True:
            with self.lock:
                records = list(self.records.values())
                if not records:
                    self._janitor = None
                    return
            pause = min(5.0, max(0.05, min(r.period for r in records) / 2))
            time.sleep(pause)
            now = time.monotonic()
            for record in records:
                if record.gone:
                    continue
                if record.expires < now:
                    self._stale(record, f"its lease expired (not renewed for "
                                        f"{LEASES_UNTIL_EXPIRY} x {record.period:g}s)")
                else:
                    self._report_drops(record)


PUBLISHER = Publisher()
