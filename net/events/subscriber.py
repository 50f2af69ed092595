"""The subscriber side of events: leases on publishers, renewed, and the deliveries they bring.

A subscription is a lease the subscriber renews every ``NET_LEASE`` seconds
by telling each publisher the full set of events it wants; a restarted
publisher is therefore back in business within one lease, and subscriptions
made through discovery filters reach publishers that appear later. A
publisher may grant a shorter lease than asked (it caps the period): then the
renewals come as often as the shortest lease granted needs.
Deliveries name the subscriber process instance and lease they were queued
for, plus a sequence number, so a restarted subscriber never receives its
predecessor's events or a batch twice.

Kept apart from the publisher side (``net.publisher``): a process may be
either or both, and the two share only ``net.event_protocol``.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import inspect
import logging
import threading
import time
from typing import Any, Callable

from .. import config
from ..calls import client, deadlines
from ..discovery import peers as discovery
from ..errors import DiscoveryDisabled, NetError, ProtocolError, RemoteError
from ..serving import running
from ..threads.workers import ensure_thread
from ..wire import payloads
from .peer_lists import peer_addresses
from .shared import FAILURE_LOG_INTERVAL, INSTANCE, LEASES_UNTIL_EXPIRY, SUBSCRIPTION_KEY, address_text

log = logging.getLogger("net")

SUBSCRIBE_TIMEOUT = 5.0             # seconds for one subscribe/renew call to a publisher
REMEMBERED_LEASES = 4096            # leases a subscriber remembers sequence numbers for
MIN_RENEWAL = 0.1                   # seconds between renewals at least, whatever short lease a publisher grants


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
        return {address_text(host, port): (host, port) for host, port in found}

    def run(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        if self.is_async:
            peer = running.running()
            server = peer.server if peer is not None else None
            if server is None:
                raise RuntimeError("this peer is closed")
            asyncio.run_coroutine_threadsafe(self.function(*args, **kwargs), server.loop()).result()
        else:
            self.function(*args, **kwargs)

    def unsubscribe(self) -> None:
        """Stop receiving this event through this function (publishers are told at once)."""
        LEASES.remove(self)

    def __repr__(self) -> str:
        source = (f"peers={sorted(self.targets)}" if self.addresses is not None
                  else f"groups={self.groups} hubs_only={self.hubs_only} on_host={self.on_host}")
        return f"<net subscription {self.event!r} -> {self.function.__qualname__} {source}>"


def _discover(groups: list[str] | None, hubs_only: bool, on_host: bool,
              refresh: bool = True) -> list[tuple[str, int]]:
    """Publishers found by ``net.peers``, minus us."""
    found = peer_addresses(discovery.peers(refresh=refresh, groups=groups, on_host=bool(on_host),
                                           hubs_only=bool(hubs_only)))
    me = running.running()
    if me is None:
        return found
    mine = {me.host, "127.0.0.1", "localhost", "::1"}
    return [(host, port) for host, port in found if not (port == me.port and host in mine)]


class Leases:
    """This process's subscriptions: telling publishers, renewing leases, running deliveries."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subscriptions: list[Subscription] = []
        self.by_event: dict[str, tuple[Subscription, ...]] = {}
        self.told: set[tuple[str, int, str]] = set()     # publishers holding a lease of ours
        self.granted: dict[tuple[str, int, str], float] = {}    # publisher -> seconds its lease of ours lasts
        self.refusal_logged_at: dict[tuple[str, int, str], float] = {}
        self.last_seq: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.deliver_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def add(self, subscription: Subscription) -> None:
        """Start ``subscription`` (the caller has started this process's peer: deliveries need it)."""
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
        with self.lock:
            told = set(self.told)
        for publisher in told - set(wants):
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
        host, port, route = publisher
        me = running.running()
        if me is None or me.port is None:
            return                      # our peer was closed: nothing could receive deliveries
        request = payloads.subscribe_request(me.id, me.host, me.port, INSTANCE, route, sorted(names),
                                             config.get("LEASE"))
        try:
            with deadlines.timeout(SUBSCRIBE_TIMEOUT):
                reply = client.call(host, port, SUBSCRIPTION_KEY, payloads.subscribe_args(request), {},
                                    target=(host, port))
        except RemoteError as exc:      # the publisher refused the lease (too many events, table full...)
            now = time.monotonic()
            with self.lock:
                loud = first or now - self.refusal_logged_at.get(publisher, float("-inf")) >= FAILURE_LOG_INTERVAL
                if loud:
                    self.refusal_logged_at[publisher] = now
            (log.warning if loud else log.debug)(
                "net: could not subscribe to %s (%s events) on %s: %s: %s (retried every NET_LEASE)",
                _some(names), f"{len(names):,}", route, exc.remote_type, exc.remote_message)
            return
        except NetError as exc:
            (log.warning if first else log.debug)(
                "net: could not subscribe to %s on %s: %s (retried every NET_LEASE)", _some(names), route, exc)
            return
        expires_in = payloads.parse_subscribe_expiry(reply)
        with self.lock:
            if names:
                self.told.add(publisher)
                if expires_in is None:
                    self.granted.pop(publisher, None)
                else:
                    self.granted[publisher] = expires_in
            else:
                self.told.discard(publisher)
                self.granted.pop(publisher, None)
                self.refusal_logged_at.pop(publisher, None)

    # -- renewing ----------------------------------------------------------------------------
    def _ensure_renewer(self) -> None:
        with self.lock:
            self._renewer = ensure_thread(self._renewer, self._renew_loop, "net-events-renew")

    def _renew_loop(self) -> None:
        """Every NET_LEASE: find publishers again (discovery) and renew every lease; exit when idle."""
        while True:
            time.sleep(self.renewal_interval())
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

    def renewal_interval(self) -> float:
        """NET_LEASE, or less when a publisher granted a shorter lease than that asked for: renewed
        at least once per granted period (it expires after LEASES_UNTIL_EXPIRY of them)."""
        interval: float = config.get("LEASE")
        with self.lock:
            shortest = min(self.granted.values(), default=None)
        if shortest is not None:
            interval = min(interval, max(MIN_RENEWAL, shortest / LEASES_UNTIL_EXPIRY))
        return interval

    # -- receiving (a publisher's delivery batch, on a server worker thread) -----------------
    def deliver(self, meta: Any, events: Any) -> dict[str, Any]:
        try:
            delivery = payloads.parse_delivery(meta, events, INSTANCE)
        except ProtocolError as exc:    # the publisher's mistake: answered as a ValueError, as ever
            raise ValueError(str(exc)) from None
        if delivery is None:
            return payloads.delivery_unknown()      # queued for an earlier process on our address
        lease, route, seq = delivery.lease, delivery.route, delivery.seq
        publisher = delivery.publisher.decode("ascii", "replace") if delivery.publisher is not None else route
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
                name, args, kwargs = payloads.parse_event(item)
            except ProtocolError:
                failed += 1
                first_error = first_error or "malformed event"
                continue
            handlers = by_event.get(name, ())
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
                        handler = getattr(subscription.function, "__qualname__", subscription.function)
                        log.warning("net: handler %s of event %r from %s raised (%d failure(s) so far)",
                                    handler, name, publisher, subscription.failures,
                                    exc_info=True)
        with self.deliver_lock:
            self.last_seq[lease] = last
            self.last_seq.move_to_end(lease)
            while len(self.last_seq) > REMEMBERED_LEASES:
                self.last_seq.popitem(last=False)
        return payloads.delivery_receipt(handled, failed, first_error)


def _some(names: set[str], shown: int = 5) -> str:
    """Event names for a log line: the first few, sorted, and how many more."""
    ordered = sorted(names)
    text = ", ".join(ordered[:shown]) or "nothing"
    return f"{text} and {len(ordered) - shown:,} more" if len(ordered) > shown else text


LEASES = Leases()
