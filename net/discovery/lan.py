"""Discovery's sockets: the ARP table, a parallel TCP port check, and the multicast query.

``net/transport.py`` owns the peer-to-peer TCP connections; this module owns
the few datagrams and half-open connects that discovery needs, so that every
socket net opens lives in one of those two modules. Nothing here decides
*whether* to send: :mod:`net.discovery` checks ``NET_DISCOVERY`` first.

The multicast protocol (documented in docs/discovery.md) is two JSON datagrams:

    query   {"net": "query", "v": 1, "nonce": "<hex>"}        -> 239.255.30.10:3010
    answer  {"net": "here",  "v": 1, "nonce": "<hex>", "port": 3011,
             "host": "10.0.0.5", "group": "None", "hub": false}  -> unicast to the asker

and, only from peers with ``NET_DISCOVERY=announce``, an unsolicited ``here``
(no nonce) when a peer starts and a ``bye`` when it stops.
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import os
import re
import secrets
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable, cast

import ifaddr

log = logging.getLogger("net")

MULTICAST_GROUP = "239.255.30.10"       # organisation-local scope (RFC 2365): never routed off-site
MULTICAST_PORT = 3010
MULTICAST_TTL = 1                       # never leaves the local link
PROTOCOL_VERSION = 1
MAX_DATAGRAM = 1024                     # larger datagrams are not ours: ignored unread
MAX_SWEEP_SOCKETS = 256                 # half-open connects in flight at once during a sweep
ANSWERS_PER_SECOND = 200                # a responder never answers faster than this...
ANSWERS_PER_SOURCE = 20                 # ...nor one asker address more often (a scan sends 2 queries)


# -- addresses ------------------------------------------------------------------------------
def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def local_addresses() -> set[str]:
    """Every IPv4 address of this machine's interfaces (loopback included)."""
    addresses = {"127.0.0.1"}
    try:
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                if ip.is_IPv4:
                    addresses.add(str(ip.ip))
    except Exception:       # the OS refused: loopback is still ours
        pass
    return addresses


_PROC_ARP = "/proc/net/arp"
_ARP_LINE = re.compile(r"\((\d+\.\d+\.\d+\.\d+)\)\s+at\s+([0-9a-fA-F:]{11,17})")           # Linux, BSD, macOS
_ARP_LINE_WINDOWS = re.compile(r"^\s*(\d+\.\d+\.\d+\.\d+)\s+((?:[0-9a-fA-F]{2}-){5}[0-9a-fA-F]{2})\s",
                               re.MULTILINE)


def neighbours() -> list[str]:
    """IPv4 addresses in this host's ARP table with a known hardware address.

    Reads the kernel's table (``/proc/net/arp``) where the OS has one, else
    parses ``arp -an``. Reading sends nothing.
    """
    if os.path.exists(_PROC_ARP):
        return _parse_proc_arp(_read(_PROC_ARP))
    arp = shutil.which("arp")
    if arp is None:
        return []
    command = [arp, "-a"] if sys.platform == "win32" else [arp, "-an"]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return _parse_arp_command(output)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _parse_proc_arp(text: str) -> list[str]:
    """``IP address  HW type  Flags  HW address  Mask  Device``; flags 0x0 = incomplete."""
    found: list[str] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        address, flags, hardware = fields[0], fields[2], fields[3]
        try:
            complete = int(flags, 16) & 0x2
        except ValueError:
            continue
        if complete and hardware != "00:00:00:00:00:00" and address not in found:
            found.append(address)
    return found


def _parse_arp_command(text: str) -> list[str]:
    """``? (192.168.1.1) at aa:bb:cc:dd:ee:ff [ether] on eth0`` (``arp -an``), or Windows' ``arp -a``
    table (``  192.168.1.1    aa-bb-cc-dd-ee-ff     dynamic``); broadcast/multicast rows are skipped."""
    found: list[str] = []
    matches = [*_ARP_LINE.finditer(text), *_ARP_LINE_WINDOWS.finditer(text)]
    for match in sorted(matches, key=lambda m: m.start()):
        address, hardware = match.group(1), match.group(2).lower()
        if hardware.replace("-", ":") in ("ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"):
            continue
        if hardware.startswith("01-00-5e") or address.endswith(".255"):
            continue
        if address not in found:
            found.append(address)
    return found


# -- TCP port sweep ---------------------------------------------------------------------------
def open_ports(targets: Iterable[tuple[str, int]], timeout: float) -> list[tuple[str, int]]:
    """Which ``(host, port)`` accept a TCP connection, checked all at once with non-blocking connects.

    Each connect gets ``timeout`` seconds; up to MAX_SWEEP_SOCKETS are in
    flight together, so a silent (filtered) host costs one timeout in total,
    not one per port. Connections are closed at once without sending a byte.
    """
    pending = list(dict.fromkeys(targets))
    pending.reverse()
    found: list[tuple[str, int]] = []
    selector = selectors.DefaultSelector()
    started: dict[socket.socket, float] = {}
    try:
        while pending or started:
            while pending and len(started) < MAX_SWEEP_SOCKETS:
                host, port = pending.pop()
                sock = _start_connect(host, port)
                if sock is None:
                    continue
                started[sock] = time.monotonic()
                selector.register(sock, selectors.EVENT_WRITE, (host, port))
            if not started:         # everything refused at once
                continue
            oldest = min(started.values())
            wait = max(0.0, oldest + timeout - time.monotonic())
            for key, _ in selector.select(timeout=wait):
                ready = cast(socket.socket, key.fileobj)   # only sockets are registered
                if ready.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    found.append(key.data)
                _drop(selector, started, ready)
            now = time.monotonic()
            for sock, began in list(started.items()):
                if now - began >= timeout:
                    _drop(selector, started, sock)
    finally:
        for sock in list(started):
            _drop(selector, started, sock)
        selector.close()
    return found


def _start_connect(host: str, port: int) -> socket.socket | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    code = sock.connect_ex((host, port))
    if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
        return sock
    sock.close()            # refused or unreachable at once: not a peer
    return None


def _drop(selector: selectors.BaseSelector, started: dict[socket.socket, float], sock: socket.socket) -> None:
    started.pop(sock, None)
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(sock)
    sock.close()


# -- multicast ---------------------------------------------------------------------------------
def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def decode(data: bytes) -> dict[str, Any] | None:
    """A discovery message, or None for anything that is not one (never raises)."""
    if len(data) > MAX_DATAGRAM:
        return None
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(message, dict) or message.get("v") != PROTOCOL_VERSION:
        return None
    if message.get("net") not in ("query", "here", "bye"):
        return None
    return message


def _multicast_sender(interface: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)   # peers on this host answer too
    if interface and not is_loopback(interface):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    return sock


def query(window: float, on_answer: Callable[[str, dict[str, Any]], None],
          interface: str | None = None) -> None:
    """Multicast one query, then hand every answer to ``on_answer(source_ip, message)`` for ``window`` s.

    The query is sent twice (at 0 and window/3) against a lost datagram;
    answers are matched to it by a random nonce. Announcements (``here``
    without a nonce) heard during the window count as answers.
    """
    nonce = secrets.token_hex(8)
    payload = encode({"net": "query", "v": PROTOCOL_VERSION, "nonce": nonce})
    sock = _multicast_sender(interface)
    try:
        sock.bind(("", 0))
        deadline = time.monotonic() + window
        resend_at = time.monotonic() + window / 3
        sent = _send(sock, payload)
        if not sent:
            return
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            if resend_at and now >= resend_at:
                _send(sock, payload)
                resend_at = 0.0
            sock.settimeout(max(0.001, min(deadline, resend_at or deadline) - now))
            try:
                data, (source, _) = sock.recvfrom(MAX_DATAGRAM + 1)
            except socket.timeout:
                continue
            except OSError as exc:
                log.debug("net: discovery query socket failed: %s", exc)
                return
            message = decode(data)
            if message is None or message["net"] != "here":
                continue
            if message.get("nonce") not in (nonce, None):
                continue
            on_answer(source, message)
    finally:
        sock.close()


def _send(sock: socket.socket, payload: bytes) -> bool:
    try:
        sock.sendto(payload, (MULTICAST_GROUP, MULTICAST_PORT))
        return True
    except OSError as exc:      # no route for multicast (no default route): nothing to discover that way
        log.debug("net: discovery multicast not sent: %s", exc)
        return False


def announce(message: dict[str, Any], interface: str | None) -> None:
    """Send one unsolicited message (``here`` / ``bye``) to the group."""
    sock = _multicast_sender(interface)
    try:
        _send(sock, encode({**message, "v": PROTOCOL_VERSION}))
    finally:
        sock.close()


class Responder:
    """Answers discovery queries for one peer: joins the group on ``interface`` and replies by unicast.

    It only ever sends in reply to a query (at most ANSWERS_PER_SECOND), so a
    peer in ``answer`` mode is silent on the network until someone asks.
    """

    def __init__(self, interface: str, describe: Callable[[], dict[str, Any]]):
        self.interface = interface
        self.describe = describe
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # every peer here hears it
            self.sock.bind((MULTICAST_GROUP, MULTICAST_PORT))
            membership = socket.inet_aton(MULTICAST_GROUP) + socket.inet_aton(interface)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            self.sock.settimeout(0.5)
        except OSError:
            self.sock.close()
            raise
        self._closed = threading.Event()
        self._window = time.monotonic()
        self._answered: dict[str, int] = {}
        self._thread = threading.Thread(target=self._serve, daemon=True, name="net-discovery-answer")
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                data, source = self.sock.recvfrom(MAX_DATAGRAM + 1)
            except socket.timeout:
                continue
            except OSError:
                return
            message = decode(data)
            if message is None or message["net"] != "query" or not self._spend(source[0]):
                continue
            nonce = message.get("nonce")
            if not isinstance(nonce, str) or len(nonce) > 64:
                continue
            try:
                answer = encode({"net": "here", "v": PROTOCOL_VERSION, "nonce": nonce, **self.describe()})
                self.sock.sendto(answer, source)
            except OSError as exc:
                log.debug("net: discovery answer to %s lost: %s", source, exc)
            except Exception:           # describe() must never kill the responder
                log.exception("net: discovery answer failed")

    def _spend(self, source: str) -> bool:
        """Rate limit: ANSWERS_PER_SOURCE a second to one address, ANSWERS_PER_SECOND in total."""
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._answered = now, {}
        total = sum(self._answered.values())
        if total >= ANSWERS_PER_SECOND or self._answered.get(source, 0) >= ANSWERS_PER_SOURCE:
            return False
        self._answered[source] = self._answered.get(source, 0) + 1
        return True

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.close()
