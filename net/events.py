"""Events: ``@net.event`` publishers fan out to ``@net.subscribe`` subscribers.

Publisher side (:class:`Publisher`): every subscribing peer gets its own
ordered, bounded queue (``NET_EVENT_QUEUE``). Triggering an event packs its
``(args, kwargs)`` once, appends the bytes to each subscriber's queue and
returns; it never waits on the network. At most ``NET_THREAD_LIMIT``
delivery threads drain the queues. A subscriber has at most one batch on the
wire at a time (a CALL to its ``subscription_handler``; the reply is the
acknowledgement), so its events stay in order, a slow subscriber only fills
its own queue (overflow drops its oldest events, logged), and a dead or
crashing one is noticed: an unreachable subscriber is pruned (the stale
list), a crashing handler is logged and stays subscribed.

Subscriber side (:class:`Subscriptions`): a subscription is a lease the
subscriber renews every ``NET_LEASE`` seconds by telling each publisher the
full set of events it wants; a restarted publisher is therefore back in
business within one lease, and subscriptions made through discovery filters
reach publishers that appear later. Deliveries name the subscriber process
instance and lease they were queued for, plus a sequence number, so a
restarted subscriber never receives its predecessor's events or a batch
twice.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import inspect
import logging
import secrets
import threading
import time
from typing import Any, Callable, Iterable, Mapping, TypeVar

from . import client, config, identity, registry, wire
from .errors import DiscoveryDisabled, MessageTooLarge, NetError, PeerUnreachable
from .wire import Kind

log = logging.getLogger("net")
F = TypeVar("F", bound=Callable[..., Any])

INSTANCE = secrets.token_hex(8)     # this process; a restarted process is a new instance
SUBSCRIPTION_KEY = identity.key("net.defaults.handlers.subscription_handler")
LEASES_UNTIL_EXPIRY = 3             # a publisher drops a lease not renewed for this many periods
MAX_BATCH_EVENTS = 1024             # events in one delivery message
MAX_BATCH_BYTES = 256 * 1024        # bytes of events in one delivery message (one event may exceed it)
MESSAGE_OVERHEAD = 4096             # room for the batch header inside NET_MAX_MESSAGE
SUBSCRIBE_TIMEOUT = 5.0             # seconds for one subscribe/renew call to a publisher
REMEMBERED_LEASES = 4096            # leases a subscriber remembers sequence numbers for
MAX_SUBSCRIBERS = 4096              # leases one publisher holds at once (bounds its memory)
FAILURE_LOG_INTERVAL = 10.0         # seconds between reports of one subscriber's failures or drops

# A delivery is the CALL [SUBSCRIPTION_KEY, ["deliver", meta, [event, ...]], {}, {}]; the events are
# packed once when triggered and spliced in between these constant pieces.
_DELIVER_HEAD = wire.array_header(4) + wire.pack(SUBSCRIPTION_KEY) + wire.array_header(3) + wire.pack("deliver")
_DELIVER_TAIL = wire.pack({}) + wire.pack({})


def _address_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ------------------------------------------------------------------------------------------------
# Publisher side
# ------------------------------------------------------------------------------------------------
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
        return _address_text(self.host, self.port)

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

    def __init__(self, publisher: "Publisher", record: Subscriber, items: list[bytes], first: int):
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
        if not isinstance(request, Mapping):
            raise TypeError("subscribe expects a mapping")
        try:
            peer_id = request["id"]
            host, port, route = str(request["host"]), int(request["port"]), str(request["route"])
            instance = str(request["instance"])
            events = request["events"]
            period = float(request.get("lease") or config.get("LEASE"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed subscribe request: {exc!r}") from None
        if isinstance(peer_id, str):
            peer_id = peer_id.encode("ascii", "replace")
        if (not isinstance(events, list) or not all(isinstance(e, str) for e in events)
                or not 0 < port < 65536 or not period > 0 or not isinstance(peer_id, bytes)):
            raise ValueError("malformed subscribe request: needs id, host, port, route, instance, "
                             "events (list of names) and lease > 0")
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
                return {"instance": INSTANCE, "lease": None, "expires_in": 0}
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
            answer = {"instance": INSTANCE, "lease": record.lease,
                      "expires_in": LEASES_UNTIL_EXPIRY * period}
        self._ensure_janitor()
        return answer

    def table(self) -> dict[str, list[dict[str, Any]]]:
        """The subscriber table in plain values: event name -> subscribers (for ``list`` requests)."""
        with self.lock:
            return {name: [{"id": r.id, "host": r.host, "port": r.port, "queued": len(r.queue),
                            "delivered": r.delivered, "failed": r.failed, "dropped": r.dropped}
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
        table = registry.SUBSCRIPTIONS
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
            registry.STALE.append({"id": record.id, "host": record.host, "port": record.port,
                                   "events": sorted(record.events), "reason": str(reason),
                                   "time": time.time()})
        log.warning("net: subscriber %s dropped from %s: %s (%d queued event(s) discarded, "
                    "%d dropped before as it was too slow)",
                    record.name, ", ".join(sorted(record.events)), reason, lost, record.dropped)

    # -- triggering --------------------------------------------------------------------------
    def publish(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> int:
        """Queue one event for every subscriber of ``name``; returns how many it was queued for."""
        try:
            item = wire.pack([name, args, kwargs])
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
        from .workers import WorkerPool
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
        from .peer import running
        me = running()
        meta = {"publisher": me.id if me is not None else b"", "instance": INSTANCE,
                "to": record.instance, "lease": record.lease, "route": record.route, "seq": first}
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
        if frame.kind is Kind.RESULT and isinstance(payload, Mapping):
            if payload.get("unknown"):
                self._stale(record, "it no longer holds this lease (the subscriber restarted)")
                return
            failed = payload.get("failed") or 0
            record.delivered += count
            if isinstance(failed, int) and failed > 0:
                record.failed += failed
                now = time.monotonic()
                if now - record.failure_logged_at >= FAILURE_LOG_INTERVAL:     # no log flood
                    log.warning("net: subscriber %s: %d event handler call(s) raised since the last "
                                "report (%d in all), e.g. %s", record.name,
                                record.failed - record.failed_logged, record.failed, payload.get("error"))
                    record.failed_logged = record.failed
                    record.failure_logged_at = now
        elif frame.kind is Kind.RESULT and isinstance(payload, wire.Flag):
            self._stale(record, f"it does not take event deliveries (answered {payload.name})")
            return
        elif frame.kind is Kind.ERROR:
            record.failed += count
            error = payload if isinstance(payload, Mapping) else {}
            log.warning("net: subscriber %s failed to take %d event(s): %s: %s", record.name, count,
                        error.get("type"), error.get("message"))
        else:
            log.warning("net: subscriber %s answered a delivery with %s", record.name, frame.kind.name)
        self._next(record)

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
            if self._janitor is not None and self._janitor.is_alive():
                return
            self._janitor = threading.Thread(target=self._sweep, daemon=True, name="net-events-leases")
            self._janitor.start()

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


class Event:
    """A function registered with ``@net.event``: calling it publishes what it returns."""

    def __init__(self, function: Callable[..., Any], name: str):
        self.function = function
        self.name = name
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        """Run the hook, queue its ``(args, kwargs)`` for every subscriber, return their number."""
        result = self.function(*args, **kwargs)
        try:
            out_args, out_kwargs = result
            ok = (isinstance(out_kwargs, Mapping) and not isinstance(out_args, (str, bytes, Mapping))
                  and all(isinstance(k, str) for k in out_kwargs))
            if ok:
                out_args = list(out_args)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise TypeError(f"@net.event({self.name!r}) function "
                            f"{getattr(self.function, '__qualname__', self.function)} must return "
                            f"(args, kwargs) like `return args, kwargs`; it returned {result!r:.200}")
        return PUBLISHER.publish(self.name, out_args, dict(out_kwargs))

    def __repr__(self) -> str:
        return f"<net event {self.name!r}>"


def event(name: str | Callable[..., Any]) -> Callable[[F], Event]:
    """Register a function as the trigger of event ``name`` (and start this peer).

    The function must ``return args, kwargs``; calling it queues them for every
    subscribed peer's handler and returns at once (the number of subscribers).
    """
    if callable(name):              # bare @net.event: named after the function's path
        function = name
        return event(identity.function_path(function))(function)    # type: ignore[return-value]
    if not isinstance(name, str) or not name:
        raise TypeError(f"net.event needs the event's name (a non-empty str), got {name!r}")

    def register(function: F) -> Event:
        if not callable(function):
            raise TypeError(f"@net.event({name!r}) must decorate a function")
        hook = Event(function, name)
        from .peer import Peer
        Peer()
        return hook

    return register


# ------------------------------------------------------------------------------------------------
# Subscriber side
# ------------------------------------------------------------------------------------------------
def _is_address(value: Any) -> bool:
    """True if a str/bytes names a peer (an id or 'host:port') rather than a group."""
    from .api import resolve
    if isinstance(value, bytes):
        return True
    try:
        resolve(value)
        return True
    except ValueError:
        return False


def _single_peer(value: Any) -> bool:
    from .peer import _Peer
    return (isinstance(value, (str, bytes, _Peer))
            or (isinstance(value, Mapping) and "host" in value and "port" in value)
            or (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int))
            or (not isinstance(value, Mapping) and hasattr(value, "host") and hasattr(value, "port")))


def peer_addresses(value: Any) -> list[tuple[str, int]]:
    """``(host, port)`` of every peer in a ``peers=`` value: an id, 'host:port', (host, port), a
    ``net.peers()`` entry or result, or a list of those. ValueError if something is not a peer."""
    from .api import resolve
    if isinstance(value, Mapping) and isinstance(value.get("peers"), Mapping):
        found = []
        for peer_id, entry in value["peers"].items():
            found.append(resolve(entry) if isinstance(entry, Mapping) and "host" in entry
                         else resolve(peer_id))
        return found
    if _single_peer(value):
        return [resolve(value)]
    if isinstance(value, Mapping):
        raise ValueError(f"cannot subscribe to {value!r}: a mapping must be a net.peers() entry "
                         f"(host, port) or result ('peers')")
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"cannot subscribe to {value!r}: pass a peer id, 'host:port', (host, port), "
                         f"an entry or result of net.peers(), or a list of those") from None
    found = []
    for item in items:
        found.extend(peer_addresses(item))
    return found


def _looks_like_peers(value: Any) -> bool:
    """Whether the positional ``groups`` argument is really peers (the spec's examples pass them so)."""
    if isinstance(value, str):
        return _is_address(value)
    if _single_peer(value) or isinstance(value, Mapping):
        return True
    try:
        items = list(value)
    except TypeError:
        return False
    if not items:
        return True         # an empty net.peers() result: no peers (not "no group filter")
    peers = [not isinstance(item, str) or _is_address(item) for item in items]
    if all(peers):
        return True
    if any(peers):
        raise ValueError(f"{value!r} mixes group names and peers: pass groups=[...] or peers=[...]")
    return False


class Subscription:
    """A function registered with ``@net.subscribe``; still callable as a plain function."""

    def __init__(self, event: str, function: Callable[..., Any], addresses: list[tuple[str, int]] | None,
                 groups: list[str] | None, hubs_only: bool, on_host: bool):
        self.event = event
        self.function = function
        self.addresses = addresses          # explicit publishers, or None: found by discovery
        self.groups = groups
        self.hubs_only = hubs_only
        self.on_host = on_host
        self.targets: dict[str, tuple[str, int]] = {}      # route text -> (host, port)
        self.active = True
        self.is_async = inspect.iscoroutinefunction(function)
        self.failures = 0
        self.failure_logged_at = float("-inf")
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def resolve(self, refresh: bool = True) -> dict[str, tuple[str, int]]:
        """The publishers this subscription wants now (discovery runs again at every renewal)."""
        if self.addresses is not None:
            found = self.addresses
        else:
            found = _discover(self.groups, self.hubs_only, self.on_host, refresh)
        return {_address_text(host, port): (host, port) for host, port in found}

    def run(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        if self.is_async:
            from .peer import Peer
            server = Peer().server
            if server is None:
                raise RuntimeError("this peer is closed")
            asyncio.run_coroutine_threadsafe(self.function(*args, **kwargs), server.loop()).result()
        else:
            self.function(*args, **kwargs)

    def unsubscribe(self) -> None:
        """Stop receiving this event through this function (publishers are told at once)."""
        SUBSCRIPTIONS.remove(self)

    def __repr__(self) -> str:
        source = (f"peers={sorted(self.targets)}" if self.addresses is not None
                  else f"groups={self.groups} hubs_only={self.hubs_only} on_host={self.on_host}")
        return f"<net subscription {self.event!r} -> {self.function.__qualname__} {source}>"


def _discover(groups: list[str] | None, hubs_only: bool, on_host: bool,
              refresh: bool = True) -> list[tuple[str, int]]:
    """Publishers found by ``net.peers`` (imported lazily: discovery is its own module), minus us."""
    import net
    finder = getattr(net, "peers", None)
    if not callable(finder):
        raise NetError("subscribing without peers= needs net.peers() (discovery), which this "
                       "build does not have: pass peers= instead")
    found = peer_addresses(finder(refresh=refresh, groups=groups, on_host=bool(on_host),
                                  hubs_only=bool(hubs_only)))
    from .peer import running
    me = running()
    if me is None:
        return found
    mine = {me.host, "127.0.0.1", "localhost", "::1"}
    return [(host, port) for host, port in found if not (port == me.port and host in mine)]


class Subscriptions:
    """This process's subscriptions: telling publishers, renewing leases, running deliveries."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subscriptions: list[Subscription] = []
        self.by_event: dict[str, tuple[Subscription, ...]] = {}
        self.told: set[tuple[str, int, str]] = set()     # publishers holding a lease of ours
        self.last_seq: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.deliver_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def add(self, subscription: Subscription) -> None:
        from .peer import Peer
        Peer()                          # deliveries need our server running
        if subscription.addresses is None and not subscription.on_host \
                and config.get("DISCOVERY") == "off":
            raise DiscoveryDisabled(
                f"@net.subscribe({subscription.event!r}) without peers= finds publishers on the LAN, "
                f"but NET_DISCOVERY=off: pass peers=, or on_host=True, or allow discovery")
        with self.lock:
            self.subscriptions.append(subscription)
            self._rebuild_locked()
        self._resolve(subscription, first=True)
        self.sync(first=True, only=set(subscription.targets))
        self._ensure_renewer()

    def remove(self, subscription: Subscription) -> None:
        with self.lock:
            if subscription not in self.subscriptions:
                return
            subscription.active = False
            self.subscriptions.remove(subscription)
            self._rebuild_locked()
        self.sync(first=True, only=set(subscription.targets))

    def _rebuild_locked(self) -> None:
        by_event: dict[str, list[Subscription]] = {}
        for subscription in self.subscriptions:
            by_event.setdefault(subscription.event, []).append(subscription)
        self.by_event = {name: tuple(subs) for name, subs in by_event.items()}

    def _resolve(self, subscription: Subscription, first: bool, refresh: bool = True) -> None:
        try:
            subscription.targets = subscription.resolve(refresh)
        except Exception as exc:        # discovery failing must not break the subscriber
            (log.warning if first else log.info)(
                "net: finding publishers of %r failed: %s (retried every NET_LEASE)", subscription.event, exc)

    def wanted(self) -> dict[tuple[str, int, str], set[str]]:
        """Publisher (host, port, route) -> every event we want from it."""
        with self.lock:
            subscriptions = list(self.subscriptions)
        wants: dict[tuple[str, int, str], set[str]] = {}
        for subscription in subscriptions:
            for route, (host, port) in subscription.targets.items():
                wants.setdefault((host, port, route), set()).add(subscription.event)
        return wants

    def sync(self, first: bool = False, only: set[str] | None = None) -> None:
        """Tell publishers what we want (everyone, or the routes in ``only``), in parallel."""
        wants = self.wanted()
        for publisher in self.told - set(wants):
            wants[publisher] = set()            # no longer wanted there: release the lease
        if only is not None:
            wants = {publisher: names for publisher, names in wants.items() if publisher[2] in only}
        if not wants:
            return
        workers = min(len(wants), config.get("THREAD_LIMIT"))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="net-subscribe") as pool:
            for publisher, names in wants.items():
                pool.submit(self._tell, publisher, names, first)

    def _tell(self, publisher: tuple[str, int, str], names: set[str], first: bool) -> None:
        from .api import timeout
        from .peer import running
        host, port, route = publisher
        me = running()
        if me is None or me.port is None:
            return                      # our peer was closed: nothing could receive deliveries
        request = {"id": me.id, "host": me.host, "port": me.port, "instance": INSTANCE, "route": route,
                   "events": sorted(names), "lease": config.get("LEASE")}
        try:
            with timeout(SUBSCRIBE_TIMEOUT):
                client.call(host, port, SUBSCRIPTION_KEY, ["subscribe", request], {}, target=(host, port))
        except NetError as exc:
            (log.warning if first else log.debug)(
                "net: could not subscribe to %s on %s: %s (retried every NET_LEASE)",
                ", ".join(sorted(names)) or "nothing", route, exc)
            return
        if names:
            self.told.add(publisher)
        else:
            self.told.discard(publisher)

    # -- renewing ----------------------------------------------------------------------------
    def _ensure_renewer(self) -> None:
        with self.lock:
            if self._renewer is not None and self._renewer.is_alive():
                return
            self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="net-events-renew")
            self._renewer.start()

    def _renew_loop(self) -> None:
        """Every NET_LEASE: find publishers again (discovery) and renew every lease; exit when idle."""
        while True:
            time.sleep(config.get("LEASE"))
            with self.lock:
                subscriptions = list(self.subscriptions)
                if not subscriptions and not self.told:
                    self._renewer = None
                    return
            try:
                scanned: set[bool] = set()      # one fresh scan per scope (host / LAN) per round
                for subscription in subscriptions:
                    if subscription.addresses is None:
                        self._resolve(subscription, first=False,
                                      refresh=subscription.on_host not in scanned)
                        scanned.add(subscription.on_host)
                self.sync()
            except Exception:
                log.exception("net: renewing event subscriptions failed")

    # -- receiving (a publisher's delivery batch, on a server worker thread) -----------------
    def deliver(self, meta: Any, events: Any) -> dict[str, Any]:
        if not isinstance(meta, Mapping) or not isinstance(events, list):
            raise ValueError("malformed delivery: expected (meta, [event, ...])")
        if meta.get("to") != INSTANCE:
            return {"unknown": True}        # queued for an earlier process on our address
        lease, route, seq = meta.get("lease"), meta.get("route"), meta.get("seq")
        if not isinstance(lease, str) or not isinstance(seq, int) or not isinstance(route, str):
            raise ValueError("malformed delivery: lease, route and seq are required")
        publisher = meta.get("publisher")
        publisher = publisher.decode("ascii", "replace") if isinstance(publisher, bytes) else route
        with self.deliver_lock:
            last = self.last_seq.get(lease, 0)
        if last and seq > last + 1:
            log.warning("net: missed %d event(s) from %s: its queue for us overflowed",
                        seq - last - 1, publisher)
        handled = failed = 0
        first_error: str | None = None
        by_event = self.by_event
        for number, item in enumerate(events, start=seq):
            if number <= last:
                continue                    # already handled (a resent batch)
            last = number
            handled += 1
            try:
                name, args, kwargs = item
                handlers = by_event.get(name, ())
            except (TypeError, ValueError):
                failed += 1
                first_error = first_error or "malformed event"
                continue
            for subscription in handlers:
                if route not in subscription.targets:
                    continue
                try:
                    subscription.run(args, kwargs)
                except Exception as exc:
                    failed += 1
                    subscription.failures += 1
                    if first_error is None:
                        first_error = f"{type(exc).__name__}: {exc}"
                    now = time.monotonic()
                    if now - subscription.failure_logged_at >= FAILURE_LOG_INTERVAL:   # no log flood
                        subscription.failure_logged_at = now
                        log.warning("net: handler %s of event %r from %s raised (%d failure(s) so far)",
                                    subscription.__qualname__, name, publisher, subscription.failures,
                                    exc_info=True)
        with self.deliver_lock:
            self.last_seq[lease] = last
            self.last_seq.move_to_end(lease)
            while len(self.last_seq) > REMEMBERED_LEASES:
                self.last_seq.popitem(last=False)
        return {"handled": handled, "failed": failed, "error": first_error}


SUBSCRIPTIONS = Subscriptions()


def subscribe(event: str, groups: Any = None, hubs_only: bool = False, peers: Any = None,
              on_host: bool | None = None) -> Callable[[F], Subscription]:
    """Run the decorated function for every ``event`` a chosen publisher triggers.

    Choose publishers with ``peers`` (an id, 'host:port', (host, port), an entry
    or the result of ``net.peers()``, or a list of those; the spec's examples pass
    them as the second positional argument, which is accepted), or else through
    discovery: peers in ``groups``, only hubs, only this host. Discovery runs
    again at every lease renewal, so publishers that appear later are found.
    """
    if not isinstance(event, str) or not event:
        raise TypeError(f"net.subscribe needs the event's name (a non-empty str), got {event!r}"
                        + (": use @net.subscribe('event_name')" if callable(event) else ""))
    if peers is None and groups is not None and not isinstance(groups, (str, bytes)):
        groups = list(groups) if not (_single_peer(groups) or isinstance(groups, Mapping)) else groups
    if peers is None and groups is not None and _looks_like_peers(groups):
        peers, groups = groups, None
    if peers is not None and (groups is not None or hubs_only or on_host):
        raise ValueError("pass either peers= or discovery filters (groups, hubs_only, on_host), not both")
    if isinstance(groups, str):
        groups = [groups]
    addresses = peer_addresses(peers) if peers is not None else None
    if addresses == []:
        log.warning("net: subscribing to %r on an empty list of peers: it will receive nothing", event)

    def register(function: F) -> Subscription:
        if not callable(function):
            raise TypeError(f"@net.subscribe({event!r}) must decorate a function")
        subscription = Subscription(event, function, addresses, groups, bool(hubs_only), bool(on_host))
        SUBSCRIPTIONS.add(subscription)
        return subscription

    return register


def handle(action: str, *args: Any) -> Any:
    """What ``subscription_handler`` does: ``subscribe`` (publisher), ``deliver`` (subscriber),
    ``list`` (the publisher's subscriber table)."""
    if action == "deliver":
        return SUBSCRIPTIONS.deliver(*args)
    if action == "subscribe":
        return PUBLISHER.subscribe(*args)
    if action == "list":
        return PUBLISHER.table()
    raise ValueError(f"subscription_handler has no action {action!r} (subscribe, deliver, list)")
