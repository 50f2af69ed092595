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

What a remote party can make a publisher hold is bounded (anyone who can reach
the port may subscribe): ``MAX_LEASE_EVENTS`` names and ``MAX_LEASE_BYTES`` of
text per lease, ``MAX_SUBSCRIBERS`` leases, ``MAX_TABLE_EVENTS`` names and
``MAX_TABLE_BYTES`` of text over all leases, and a lease period of at most
``MAX_LEASE_PERIODS`` of our own ``NET_LEASE``. A lease no event has been
queued for yet ("dormant": e.g. for an event this peer never publishes) counts
too, but never keeps a subscriber out: when the table is full, the least
recently renewed dormant lease makes room (its subscriber loses nothing, and
is back at its next renewal). Only a table full of leases that have had events
refuses a newcomer, with a ValueError saying which bound.

A trigger never waits for work on the table: changes to it are serialized by
their own lock, and touch the trigger's lock only to add or remove at most
``TABLE_CHUNK`` names at a time. Nor does a delivery wait for a subscriber
that cannot be reached: the delivery threads only send on connections that
are open; opening one runs on a thread of its own (at most ``MAX_DIALS`` at
once, one per address), with its own ``NET_CONNECT_TIMEOUT``.

Kept apart from the subscriber side (``net.subscriptions``): a process may be
either or both, and the two share only ``net.event_protocol``.
"""
from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .. import config
from ..calls import client
from ..errors import MessageTooLarge, NetError, PeerUnreachable, ProtocolError
from ..serving import running
from ..threads.workers import WorkerPool, ensure_thread
from ..wire import frames as wire, ids as identity, payloads
from ..wire.frames import Kind
from .shared import FAILURE_LOG_INTERVAL, INSTANCE, LEASES_UNTIL_EXPIRY, SUBSCRIPTION_KEY, address_text

log = logging.getLogger("net")

MAX_LEASE_PERIODS = 10              # the longest lease granted, in this publisher's NET_LEASE periods: a
                                    # lease asked for 1e12 s would hold a subscriber slot for ever
MAX_BATCH_EVENTS = 1024             # events in one delivery message
MAX_BATCH_BYTES = 256 * 1024        # bytes of events in one delivery message (one event may exceed it)
MESSAGE_OVERHEAD = 4096             # room for the batch header inside NET_MAX_MESSAGE
MAX_SUBSCRIBERS = 4096              # leases one publisher holds at once (bounds its memory)
MAX_LEASE_EVENTS = 1024             # event names one lease may name: 8 leases of 50,000 names held 381 MiB
MAX_LEASE_BYTES = 64 * 1024         # UTF-8 bytes of text in one lease: its event names, id, host, route, instance
MAX_TABLE_EVENTS = 65_536           # (lease, event name) pairs all leases hold together; without it,
                                    # MAX_SUBSCRIBERS x MAX_LEASE_EVENTS would be 4 million
MAX_TABLE_BYTES = 4 * 1024 * 1024   # bytes of text all leases hold together (MAX_LEASE_BYTES x 4096 = 256 MiB)
TABLE_CHUNK = 64                    # names a table change adds or removes per hold of the trigger's lock
MAX_DIALS = 64                      # connections to subscribers opened at once, a thread each: so many
                                    # unreachable subscribers, each given up after NET_CONNECT_TIMEOUT, are
                                    # needed before a subscriber that needs a new connection waits for one

# The publisher's subscriber table, as the spec shows it (net.peer._Peer.SUBSCRIPTIONS):
# base64(event) -> {subscriber id: its record}. Kept up to date one change at a time; the map of
# an event is replaced, never changed in place, so it can be read without a lock. When leases of
# one subscriber id share an event (two routes to us), the one (re)subscribed last is shown.
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

    __slots__ = ("id", "host", "port", "route", "instance", "lease", "events", "size", "queue", "seq", "busy",
                 "gone", "link", "period", "expires", "delivered", "failed", "dropped", "dropped_logged",
                 "failed_logged", "failure_logged_at", "drops_logged_at")

    def __init__(self, peer_id: bytes, host: str, port: int, route: str, instance: str, bound: int):
        self.id = peer_id
        self.host = host
        self.port = port
        self.route = route              # how the subscriber addressed us; echoed so it can filter
        self.instance = instance        # the subscriber process this lease belongs to
        self.lease = secrets.token_hex(8)
        self.events: frozenset[str] = frozenset()
        self.size = 0                   # bytes of text the lease holds (MAX_LEASE_BYTES)
        self.queue: collections.deque[bytes] = collections.deque(maxlen=bound)
        self.seq = 0                    # sequence number of the newest queued event (0: none yet, dormant)
        self.busy = False               # a delivery or dial thread owns it, or a batch awaits its ack
        self.gone = False
        self.link: client.OutboundLink | None = None    # the connection its last batch went out on
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


def _lease_size(wanted: payloads.SubscribeRequest) -> int:
    """The bytes of text a lease holds; ValueError if it names too many events or holds too much."""
    names = wanted.events
    if len(names) > MAX_LEASE_EVENTS:
        raise ValueError(f"refused: a lease may name at most {MAX_LEASE_EVENTS:,} events, this one names "
                         f"{len(names):,} events (subscribe to fewer from this publisher)")
    texts = (wanted.host, wanted.route, wanted.instance, *names)
    size = len(wanted.peer_id) + sum(map(len, texts))       # characters: no more than its bytes
    if size <= MAX_LEASE_BYTES:
        size = len(wanted.peer_id) + sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
    if size > MAX_LEASE_BYTES:
        raise ValueError(f"refused: a lease may hold at most {MAX_LEASE_BYTES:,} bytes of text (event names, "
                         f"id, host, route, instance), this one holds {size:,} or more bytes")
    return size


class Publisher:
    """This process's subscribers, their queues, and the threads that deliver to them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()            # the trigger's: queues, sequence numbers, routes
        self.table_lock = threading.Lock()      # changes to the table, one at a time; never taken by a trigger
        self.records: dict[tuple[str, int, str], Subscriber] = {}
        self.routes: dict[str, dict[Subscriber, None]] = {}      # event name -> its subscribers
        self.dormant: collections.OrderedDict[tuple[str, int, str], Subscriber] = collections.OrderedDict()
        self.names = 0                          # (lease, event name) pairs held (MAX_TABLE_EVENTS)
        self.size = 0                           # bytes of text held (MAX_TABLE_BYTES)
        self.evicted = 0                        # dormant leases that made room, and when that was last logged
        self.evicted_logged = 0
        self.evicted_logged_at = float("-inf")
        self._workers: Any = None
        self._janitor: threading.Thread | None = None
        self._dial_lock = threading.Lock()
        self._dials: dict[tuple[str, int], list[Subscriber]] = {}      # address being dialled -> who waits
        self._dial_queue: collections.deque[tuple[str, int]] = collections.deque()   # beyond MAX_DIALS
        self._dialing = 0                       # dial threads running

    # -- the subscriber table ----------------------------------------------------------------
    def subscribe(self, request: Any) -> dict[str, Any]:
        """A subscriber (re)states the events it wants from us; an empty list unsubscribes it."""
        try:
            wanted = payloads.parse_subscribe_request(request)
        except ProtocolError as exc:    # the caller's mistake: answered as a TypeError / ValueError, as ever
            raise (ValueError if isinstance(request, Mapping) else TypeError)(str(exc)) from None
        size = _lease_size(wanted)      # bounded before anything is held or locked
        peer_id, host, port, instance, route = (wanted.peer_id, wanted.host, wanted.port, wanted.instance,
                                                wanted.route)
        events = frozenset(wanted.events)
        own = config.get("LEASE")
        period = min(wanted.lease or own, MAX_LEASE_PERIODS * own)
        key = (host, port, route)
        with self.table_lock:
            record = self.records.get(key)
            if record is not None and record.instance != instance:
                # The subscriber restarted: its old lease and queue must not reach the new process.
                self._remove_locked(record)
                record = None
            if not events:
                if record is not None:
                    self._remove_locked(record)
                return payloads.subscribe_reply(INSTANCE, None, 0)
            if record is not None and record.seq == 0 and key in self.dormant:
                self.dormant.move_to_end(key)   # renewed: the last dormant lease to make room
            self._make_room_locked(record, len(events), size)
            if record is None:
                record = Subscriber(peer_id, host, port, route, instance, config.get("EVENT_QUEUE"))
                self.records[key] = record
                self.dormant[key] = record
                log.debug("net: %s subscribed to %s", record.name, _some(events))
            old = record.events
            self.names += len(events) - len(old)
            self.size += size - record.size
            record.size = size
            if record.id != peer_id:
                self._hide_locked(record, old)
                record.id = peer_id
            self._route_locked(record, events - old, old - events)
            record.events = events
            self._hide_locked(record, old - events)
            self._show_locked(record, events)
            record.period = period
            record.expires = time.monotonic() + LEASES_UNTIL_EXPIRY * period
            answer = payloads.subscribe_reply(INSTANCE, record.lease, LEASES_UNTIL_EXPIRY * period)
        self._ensure_janitor()
        return answer

    def _make_room_locked(self, record: Subscriber | None, names: int, size: int) -> None:
        """Make the table able to hold ``record`` with ``names`` and ``size``, evicting dormant leases;
        ValueError if only leases that have had events fill it."""
        held_names, held_size = (len(record.events), record.size) if record is not None else (0, 0)
        while True:
            over = None
            if record is None and len(self.records) >= MAX_SUBSCRIBERS:
                over = f"{len(self.records):,} leases (MAX_SUBSCRIBERS = {MAX_SUBSCRIBERS:,})"
            elif self.names - held_names + names > MAX_TABLE_EVENTS:
                over = f"{self.names:,} event names over all leases (MAX_TABLE_EVENTS = {MAX_TABLE_EVENTS:,})"
            elif self.size - held_size + size > MAX_TABLE_BYTES:
                over = f"{self.size:,} bytes of leases (MAX_TABLE_BYTES = {MAX_TABLE_BYTES:,})"
            if over is None:
                return
            victim = self._oldest_dormant_locked(record)
            if victim is None:
                raise ValueError(f"refused: this publisher already holds {over}, and no lease that never had "
                                 f"an event is left to make room: try again later")
            lost = self._remove_locked(victim, dormant_only=True)
            if lost is not None:
                self._evicted(victim)

    def _oldest_dormant_locked(self, spare: Subscriber | None) -> Subscriber | None:
        """The least recently (re)subscribed lease that never had an event queued, ``spare`` aside."""
        dormant = self.dormant
        while dormant:
            key = next(iter(dormant))
            victim = dormant[key]
            if victim.gone or victim.seq != 0 or self.records.get(key) is not victim:
                del dormant[key]            # live by now (or gone): forgotten here for good
                continue
            if victim is spare:
                return None                 # the renewing lease itself, moved last: no other is dormant
            return victim
        return None

    def _evicted(self, victim: Subscriber) -> None:
        STALE.append({"id": victim.id, "host": victim.host, "port": victim.port, "events": sorted(victim.events),
                      "reason": "evicted to make room for a new lease: it never had an event queued",
                      "time": time.time()})
        self.evicted += 1
        now = time.monotonic()
        if now - self.evicted_logged_at >= FAILURE_LOG_INTERVAL:       # no log flood
            log.warning("net: the subscriber table is full: %d lease(s) that never had an event made room "
                        "for new ones since the last report (%d in all), e.g. %s for %s",
                        self.evicted - self.evicted_logged, self.evicted, victim.name, _some(victim.events))
            self.evicted_logged = self.evicted
            self.evicted_logged_at = now

    def _remove_locked(self, record: Subscriber, dormant_only: bool = False) -> int | None:
        """Take ``record`` out of the table; the number of queued events discarded, or None if it was
        already gone (or, with ``dormant_only``, had an event queued meanwhile)."""
        with self.lock:
            if record.gone or (dormant_only and record.seq != 0):
                return None
            record.gone = True
            lost = len(record.queue)
            record.queue.clear()
        key = (record.host, record.port, record.route)
        if self.records.get(key) is record:
            del self.records[key]
        if self.dormant.get(key) is record:
            del self.dormant[key]
        self.names -= len(record.events)
        self.size -= record.size
        self._route_locked(record, (), record.events)
        self._hide_locked(record, record.events)
        return lost

    def _route_locked(self, record: Subscriber, added: Iterable[str], removed: Iterable[str]) -> None:
        """Add ``record`` to the routes of ``added``, drop it from those of ``removed``: at most
        TABLE_CHUNK names per hold of the trigger's lock, so a trigger never waits for more."""
        changes = [(name, True) for name in added] + [(name, False) for name in removed]
        routes = self.routes
        for start in range(0, len(changes), TABLE_CHUNK):
            with self.lock:
                for name, add in changes[start:start + TABLE_CHUNK]:
                    targets = routes.get(name)
                    if add:
                        if targets is None:
                            routes[name] = {record: None}
                        else:
                            targets[record] = None
                    elif targets is not None:
                        targets.pop(record, None)
                        if not targets:
                            del routes[name]

    @staticmethod
    def _show_locked(record: Subscriber, names: Iterable[str]) -> None:
        """List ``record`` in SUBSCRIPTIONS under ``names`` (each event's map replaced, not changed)."""
        table, rid = SUBSCRIPTIONS, record.id
        for name in names:
            key = identity.key(name)
            shown = table.get(key)
            if shown is None:
                table[key] = {rid: record}
            elif shown.get(rid) is not record:
                table[key] = {**shown, rid: record}

    @staticmethod
    def _hide_locked(record: Subscriber, names: Iterable[str]) -> None:
        table, rid = SUBSCRIPTIONS, record.id
        for name in names:
            key = identity.key(name)
            shown = table.get(key)
            if shown is not None and shown.get(rid) is record:
                if len(shown) == 1:
                    del table[key]
                else:
                    table[key] = {i: r for i, r in shown.items() if i != rid}

    def table(self) -> dict[str, list[dict[str, Any]]]:
        """The subscriber table in plain values: event name -> subscribers (for ``list`` requests)."""
        with self.table_lock:           # not the trigger's lock: the counts are read as they are
            return {name: [payloads.listed_subscriber(r.id, r.host, r.port, len(r.queue), r.delivered,
                                                      r.failed, r.dropped)
                           for r in records]
                    for name, records in self.routes.items()}

    def _stale(self, record: Subscriber, reason: Any) -> None:
        """Drop an unreachable (or expired, or restarted) subscriber: stale list, log, prune."""
        with self.table_lock:
            lost = self._remove_locked(record)
            if lost is None:
                return
            STALE.append({"id": record.id, "host": record.host, "port": record.port,
                          "events": sorted(record.events), "reason": str(reason),
                          "time": time.time()})
        log.warning("net: subscriber %s dropped from %s: %s (%d queued event(s) discarded, "
                    "%d dropped before as it was too slow)",
                    record.name, _some(record.events), reason, lost, record.dropped)

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
        """Send ``record``'s next batch on its open connection; without one, a dial thread opens it."""
        link = record.link
        if link is None or not link.usable():
            self._dial(record)
            return
        self._transmit(record, link, redial=True)

    def _transmit(self, record: Subscriber, link: client.OutboundLink, redial: bool) -> None:
        """Send ``record``'s next batch on ``link`` (never waits: a send that the socket does not take
        at once is queued on the link). ``redial``: if ``link`` turns out dead, dial once more."""
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
        try:
            link.send_packed_call(body, _Ack(self, record, items, first))
        except MessageTooLarge as exc:
            self._stale(record, exc)
        except NetError as exc:
            if not redial:
                self._stale(record, exc)
                return
            self._requeue(record, items, first)     # maybe a stale pooled socket: dial once more
            self._dial(record)

    # -- opening connections (on dial threads: the delivery threads never wait for a dial) --------
    def _dial(self, record: Subscriber) -> None:
        """Have a dial thread open a connection to ``record`` and send its batch (``record`` is busy)."""
        address = (record.host, record.port)
        with self._dial_lock:
            waiting = self._dials.get(address)
            if waiting is not None:
                waiting.append(record)      # one dial per address: every lease behind it waits for it
                return
            self._dials[address] = [record]
            if self._dialing >= MAX_DIALS:
                self._dial_queue.append(address)
                return
            self._dialing += 1
        try:
            threading.Thread(target=self._dialer, args=(address,), name="net-events-dial", daemon=True).start()
        except RuntimeError as exc:     # no thread to be had: those waiting are dropped, not stuck
            with self._dial_lock:
                self._dialing -= 1
                waiting = self._dials.pop(address, [])
            for record in waiting:
                self._stale(record, f"no thread to connect to it: {exc}")

    def _dialer(self, address: tuple[str, int] | None) -> None:
        """Dial ``address``, deliver to everyone waiting for it; then the next queued address, if any."""
        while address is not None:
            link: client.OutboundLink | None = None
            try:
                link = client.POOL.get(*address)
                failure: Any = None
            except NetError as exc:
                failure = exc
            except Exception as exc:    # whatever a subscriber's address makes the dial raise: prune it
                failure = PeerUnreachable(f"cannot connect to {address_text(*address)}: "
                                          f"{type(exc).__name__}: {exc}", peer=address_text(*address))
            with self._dial_lock:
                waiting = self._dials.pop(address, [])
                address = self._dial_queue.popleft() if self._dial_queue else None
                if address is None:
                    self._dialing -= 1
            for record in waiting:
                if link is None:
                    self._stale(record, failure)
                else:
                    record.link = link
                    self._transmit(record, link, redial=False)

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
            # Closed as idle before it read the batch: put the batch back and send it again.
            self._requeue(record, items, first)
            self._next(record)
            return
        self._stale(record, error)

    def _requeue(self, record: Subscriber, items: list[bytes], first: int) -> None:
        """Put a batch that never reached ``record`` back in front of its queue, unless overflow
        dropped events right after it (the queue must stay contiguous): then it is counted dropped."""
        with self.lock:
            queue = record.queue
            if record.seq - len(queue) + 1 == first + len(items):
                room = (queue.maxlen or 0) - len(queue)
                lost = max(0, len(items) - room)
                queue.extendleft(reversed(items[lost:]))
            else:
                lost = len(items)
            record.dropped += lost

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
        with self.table_lock:
            self._janitor = ensure_thread(self._janitor, self._sweep, "net-events-leases")

    def _sweep(self) -> None:
        """Expire leases nobody renewed and report drops of stuck subscribers; exit when idle."""
        while True:
            with self.table_lock:
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


def _some(names: Iterable[str], shown: int = 5) -> str:
    """Event names for a log line: the first few, sorted, and how many more (a lease may hold 1,024)."""
    ordered = sorted(names)
    text = ", ".join(ordered[:shown])
    return f"{text} and {len(ordered) - shown:,} more" if len(ordered) > shown else text


PUBLISHER = Publisher()
