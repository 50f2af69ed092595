"""``net.peers()``: find the peers on this machine or on the LAN, cached until refreshed.

Where candidates come from:

* ``on_host=True``: this machine's own port range (``NET_PORT_START`` ..
  ``+NET_PORT_RANGE``) on 127.0.0.1 (and on ``NET_HOST`` if it is one of
  this machine's addresses). Loopback only: nothing leaves the machine.
* otherwise, in addition: a multicast query that running peers answer at
  once (see :mod:`net.lan`), and the hosts of the ARP table, whose port range
  is checked with one parallel sweep of non-blocking connects.

Every candidate is then *probed* through the normal client path (the
built-in ``info`` connection over ``net.client``), spread over
``NET_THREAD_LIMIT`` threads: a peer that does not complete the handshake
(wrong version, wrong key, not net at all) simply does not appear.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from .. import config
from ..calls import client, deadlines
from ..errors import DiscoveryDisabled, NetError
from ..wire import ids as identity
from . import lan

log = logging.getLogger("net")
_T = TypeVar("_T")

ENTRY_KEYS = ("group", "host", "port", "hub", "executable", "user", "pid")
HOST_SCOPE = "host"
NETWORK_SCOPE = "network"


class Peers(dict[str, Any]):
    """The spec's result: ``{'peers': {id: entry}, '<group>': [ids]}``, plus list-like access.

    ``result[0]`` (any int or slice) indexes the peer ids in a stable order
    (by address), so ``net.peers()[0]`` is "a peer" as the spec uses it; every
    string key behaves as in a plain dict. ``bool(result)`` is False when no
    peer was found.
    """

    @property
    def ids(self) -> list[bytes]:
        """Peer ids ordered by (host, port)."""
        entries = self.get("peers", {})
        return sorted(entries, key=lambda peer_id: _order(entries[peer_id]))

    def entries(self) -> list[dict[str, Any]]:
        """The peer entries in the order of :attr:`ids`."""
        return [self["peers"][peer_id] for peer_id in self.ids]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, slice)) and not isinstance(key, bool):
            try:
                return self.ids[key]
            except IndexError:
                raise IndexError(f"peer index {key} out of range: {len(self.ids)} peer(s) found") from None
        return super().__getitem__(key)

    def __bool__(self) -> bool:
        return bool(self.get("peers"))

    def __repr__(self) -> str:
        return f"Peers({dict.__repr__(self)})"


def _order(entry: dict[str, Any]) -> tuple[Any, ...]:
    host = str(entry.get("host", ""))
    parts = host.split(".")
    key = tuple(int(p) for p in parts) if len(parts) == 4 and all(p.isdigit() for p in parts) else (host,)
    return (key, int(entry.get("port") or 0))


# -- the public call ------------------------------------------------------------------------
_cache: dict[str, dict[bytes, dict[str, Any]]] = {}
_locks = {HOST_SCOPE: threading.Lock(), NETWORK_SCOPE: threading.Lock()}


def peers(*args: Any, refresh: bool = False, groups: str | Iterable[str] | None = None,
          on_host: bool = False, hubs_only: bool = False) -> Peers:
    """Every reachable peer, as ``{'peers': {id: entry}, '<group>': [ids]}``.

    ``net.peers(refresh=False, groups=None, on_host=False, hubs_only=False)``
    as the spec lists it. The first positional may also be the groups (the
    spec's ``net.peers("group1", refresh=True)`` and
    ``net.peers(["group1", "group2"], refresh=True)``); a bool there is
    ``refresh``, followed by ``groups, on_host, hubs_only``.

    Results are cached per scope (this host / the LAN) until ``refresh=True``;
    filters apply to the cached set, so filtering never rescans. A LAN scan
    raises :class:`net.DiscoveryDisabled` when ``NET_DISCOVERY=off``.
    """
    refresh, groups, on_host, hubs_only = _arguments(args, refresh, groups, on_host, hubs_only)
    wanted = _groups(groups)
    scope = HOST_SCOPE if on_host else NETWORK_SCOPE
    if scope == NETWORK_SCOPE:
        _check_allowed()
    with _locks[scope]:
        found = _cache.get(scope)
        if refresh or found is None:
            found = scan(on_host=on_host)
            _cache[scope] = found
    return build(found, wanted, hubs_only)


def _check_allowed() -> None:
    if config.get("DISCOVERY") == "off":
        raise DiscoveryDisabled("net.peers() would scan the LAN but NET_DISCOVERY=off; "
                                "use net.peers(on_host=True) or set NET_DISCOVERY=query")


def clear_cache() -> None:
    """Forget every cached result (the next ``net.peers()`` scans again)."""
    for scope, lock in _locks.items():
        with lock:
            _cache.pop(scope, None)


def _arguments(args: tuple[Any, ...], refresh: Any, groups: Any, on_host: Any,
               hubs_only: Any) -> tuple[bool, Any, bool, bool]:
    if not args:
        return bool(refresh), groups, bool(on_host), bool(hubs_only)
    if isinstance(args[0], bool):           # the spec's positional order
        names = ("refresh", "groups", "on_host", "hubs_only")
        if len(args) > len(names):
            raise TypeError(f"net.peers() takes at most {len(names)} positional arguments")
        given = dict(zip(names, args))
        defaults = {"refresh": False, "groups": None, "on_host": False, "hubs_only": False}
        current = {"refresh": refresh, "groups": groups, "on_host": on_host, "hubs_only": hubs_only}
        for name, value in given.items():
            if current[name] != defaults[name]:
                raise TypeError(f"net.peers() got multiple values for argument {name!r}")
            current[name] = value
        return bool(current["refresh"]), current["groups"], bool(current["on_host"]), bool(current["hubs_only"])
    if len(args) > 1:
        raise TypeError("net.peers(groups, ...) takes the groups as its only positional argument; "
                        "pass refresh=, on_host=, hubs_only= by keyword")
    if groups is not None:
        raise TypeError("net.peers() got the groups both positionally and as groups=")
    return bool(refresh), args[0], bool(on_host), bool(hubs_only)


def _groups(groups: Any) -> set[str] | None:
    """None (every group) or the set of group names; an unset group is the name 'None'."""
    if groups is None:
        return None
    if isinstance(groups, (str, bytes)):
        groups = [groups]
    try:
        names = list(groups)
    except TypeError:
        raise TypeError(f"groups must be a group name or a list of names, not {groups!r}") from None
    wanted = set()
    for name in names:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"a group name must be a str, not {name!r}")
        wanted.add(str(name))
    return wanted


def build(found: dict[bytes, dict[str, Any]], wanted: set[str] | None, hubs_only: bool) -> Peers:
    """Filter ``found`` and shape it as the spec's result (requested groups always present)."""
    result = Peers(peers={})
    for name in sorted(wanted or ()):
        result[name] = []
    for peer_id, entry in sorted(found.items(), key=lambda item: _order(item[1])):
        group = str(entry.get("group"))
        if wanted is not None and group not in wanted:
            continue
        if hubs_only and not entry.get("hub"):
            continue
        result["peers"][peer_id] = dict(entry)
        result.setdefault(group, []).append(peer_id)
    return result


# -- scanning -------------------------------------------------------------------------------
def port_range() -> list[int]:
    start = config.get("PORT_START")
    return list(range(start, min(start + config.get("PORT_RANGE"), 65535) + 1))


def host_addresses() -> list[str]:
    """Where this machine's peers can be reached without leaving it."""
    addresses = ["127.0.0.1"]
    host = config.get("HOST")
    if host and not lan.is_loopback(host) and host in lan.local_addresses():
        addresses.append(host)
    return addresses


def scan(on_host: bool = False) -> dict[bytes, dict[str, Any]]:
    """Probe every candidate once and return ``{id: entry}`` of the peers that answered."""
    if not on_host:
        _check_allowed()
    timeout = config.get("DISCOVERY_TIMEOUT")
    prober = _Prober(timeout, config.get("THREAD_LIMIT"))
    try:
        for host in host_addresses():
            for port in port_range():
                prober.submit(host, port)
        if not on_host:
            _scan_network(prober, timeout)
        return prober.results()
    finally:
        prober.close()


def _scan_network(prober: _Prober, timeout: float) -> None:
    """Multicast query and ARP sweep side by side; every hit goes straight to the prober.

    After the query window the ARP table is read again: hosts that answered
    are in it now, and their other ports may hold peers that do not answer
    queries (``NET_DISCOVERY=query``/``off``), so they are swept too.
    """
    interface = config.get("HOST")
    swept: set[str] = set(lan.local_addresses())
    answered: list[str] = []

    def sweep(hosts: Iterable[str]) -> None:
        fresh = [host for host in dict.fromkeys(hosts) if host not in swept]
        swept.update(fresh)
        targets = [(host, port) for host in fresh for port in port_range()]
        for host, port in lan.open_ports(targets, timeout):
            prober.submit(host, port)

    def on_answer(source: str, answer: dict[str, Any]) -> None:
        answered.append(source)
        _on_answer(prober, source, answer)

    first = threading.Thread(target=sweep, args=(lan.neighbours(),), daemon=True, name="net-discovery-sweep")
    first.start()
    lan.query(timeout, on_answer, interface)
    first.join()
    sweep(answered + lan.neighbours())


def _on_answer(prober: _Prober, source: str, answer: dict[str, Any]) -> None:
    port = answer.get("port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        prober.submit(source, port)


class _Prober:
    """Probes ``(host, port)`` candidates with ``info`` over NET_THREAD_LIMIT threads, each at most once."""

    def __init__(self, timeout: float, threads: int):
        self.timeout = timeout
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads,
                                                          thread_name_prefix="net-discovery-probe")
        self.seen: set[tuple[str, int]] = set()
        self.futures: list[concurrent.futures.Future[tuple[bytes, dict[str, Any]] | None]] = []
        self.lock = threading.Lock()

    def submit(self, host: str, port: int) -> None:
        with self.lock:
            if (host, port) in self.seen:
                return
            self.seen.add((host, port))
            self.futures.append(self.pool.submit(probe, host, port, self.timeout))

    def results(self) -> dict[bytes, dict[str, Any]]:
        found: dict[bytes, dict[str, Any]] = {}
        for future in _drain(self.futures, self.lock):
            hit = future.result()
            if hit is not None:
                peer_id, entry = hit
                found.setdefault(peer_id, entry)
        return found

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _drain(futures: list[concurrent.futures.Future[_T]],
           lock: threading.Lock) -> Iterator[concurrent.futures.Future[_T]]:
    index = 0
    while True:
        with lock:
            if index >= len(futures):
                return
            future = futures[index]
        index += 1
        concurrent.futures.wait([future])
        yield future


def probe(host: str, port: int, timeout: float) -> tuple[bytes, dict[str, Any]] | None:
    """Ask ``host:port`` for its ``info`` through the normal client path; None if it is not a peer."""
    token = deadlines.dial_timeout.set(timeout)
    began = time.monotonic()
    try:
        answer = client.call(host, port, identity.INFO_KEY, [], {}, timeout=timeout)
    except NetError as exc:
        log.debug("net: discovery: %s:%s is not a peer we can reach: %s", host, port, exc)
        return None
    except Exception:                   # a probe must never break the whole scan
        log.exception("net: discovery probe of %s:%s failed", host, port)
        return None
    finally:
        deadlines.dial_timeout.reset(token)
    entry = _entry(answer, host, port)
    if entry is None:
        log.debug("net: discovery: %s:%s answered info with %r", host, port, answer)
        return None
    log.debug("net: discovery: found %s:%s in %.0f ms", host, port, (time.monotonic() - began) * 1000)
    return identity.generate_id(entry["port"], entry["host"], entry["group"]), entry


def _entry(answer: Any, host: str, port: int) -> dict[str, Any] | None:
    """A peer entry from an ``info`` answer, or None if the answer is not one."""
    if not isinstance(answer, dict):
        return None
    advertised = answer.get("host")
    if not isinstance(advertised, str) or not advertised:
        return None
    if lan.is_loopback(advertised) and not lan.is_loopback(host):
        advertised = host          # it advertises loopback but we reached it over the LAN
    entry = {key: answer.get(key) for key in ENTRY_KEYS}
    entry["host"] = advertised
    entry["group"] = str(answer.get("group"))
    entry["hub"] = bool(answer.get("hub"))
    if answer.get("port") != port:
        return None                 # it claims another port than the one that answered
    entry["port"] = port
    return entry


# -- the answering side ---------------------------------------------------------------------
def start_responder(peer: Any) -> lan.Responder | None:
    """Start answering discovery queries for ``peer`` if NET_DISCOVERY allows and it is on a LAN.

    A peer advertising a loopback address is only reachable from this
    machine, so it never joins the multicast group (and never touches the
    machine's real interfaces).
    """
    mode = config.get("DISCOVERY")
    host = peer.host
    if mode not in ("answer", "announce") or not host or lan.is_loopback(host):
        return None

    def describe() -> dict[str, Any]:
        return {"port": peer.port, "host": peer.host, "group": str(peer.group), "hub": bool(peer.hub)}

    try:
        responder = lan.Responder(host, describe)
    except OSError as exc:
        log.warning("net: cannot answer discovery queries on %s: %s", host, exc)
        return None
    if mode == "announce":
        lan.announce({"net": "here", **describe()}, host)
    return responder


def stop_responder(peer: Any, responder: lan.Responder | None) -> None:
    if responder is None:
        return
    responder.close()
    if config.get("DISCOVERY") == "announce":
        lan.announce({"net": "bye", "port": peer.port, "host": peer.host}, peer.host)
