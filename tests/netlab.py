"""A private LAN of Linux network namespaces for tests: hosts on one /24 behind a bridge.

    with Lab(hosts=3) as lab:
        peer = lab.spawn(1, "basic")                   # tests/peers/serve.py inside host 1
        lab.run(2, "ping", "-c1", lab.address(1))      # any command inside host 2
        lab.unplug(1)                                  # cable pulled: host 1 falls silent

Layout: one namespace holds only a bridge ``br0``; each host namespace has
``lo`` and ``eth0`` (a veth whose other end sits on the bridge), an address
``10.231.K.i/24`` and a default route to a dead-end gateway ``.254`` (without
a default route multicast sends fail). Nothing is created in the root
namespace except a guard: ``unreachable 10.231.K.0/24`` (metric = owner PID),
so a socket opened there by mistake fails instead of reaching the real LAN.

Namespaces are named ``netlab-<owner pid>-<n>-...``; a new lab first removes
leftovers of owners that died (never touching a namespace that still has
processes: those stop by themselves, see tests/peers/serve.py). Teardown
always runs: stop the processes this lab started, delete its namespaces and
its guard route.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from support import PeerProcess, peer_env

PREFIX = "netlab"
SUBNET_BASE = "10.231"
GATEWAY = 254                   # dead-end default gateway: exists only so routes (and multicast) resolve
ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
_numbers = itertools.count(1)
_swept = False


def skip_reason() -> str | None:
    """Why a lab cannot be built here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "network-namespace labs need Linux"
    if os.geteuid() != 0:
        return "network-namespace labs need root (ip netns add)"
    if shutil.which("ip") is None:
        return "network-namespace labs need iproute2 (the ip command)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespace_pids(name: str) -> list[int]:
    result = ip("netns", "pids", name, check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def ask(discoverer: PeerProcess, *args: Any, timeout: float = 20.0, **kwargs: Any) -> dict[str, Any]:
    """Run ``net.peers(*args, **kwargs)`` in a :meth:`Lab.discoverer` process.

    Returns ``{"elapsed": s, "peers": {id: entry}, "groups": {name: [ids]}, "first": id}``
    (ids as str); raises AssertionError with the remote error if it raised.
    """
    request = dict(kwargs)
    if args:
        request["args"] = list(args)
    discoverer.proc.stdin.write(json.dumps(request) + "\n")
    discoverer.proc.stdin.flush()
    line = discoverer.wait_for("", timeout)
    kind, _, body = line.partition(" ")
    if kind != "RESULT":
        raise AssertionError(f"net.peers({request}) failed in the lab: {line}")
    return json.loads(body)


def sweep_leftovers() -> None:
    """Delete namespaces and guard routes of labs whose owner process is gone."""
    listing = ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(rf"{PREFIX}-(\d+)-", name)
        if match and not _alive(int(match.group(1))) and not _namespace_pids(name):
            ip("netns", "del", name, check=False)
    routes = ip("route", "show", "type", "unreachable", check=False).stdout
    for line in routes.splitlines():
        match = re.match(rf"unreachable ({re.escape(SUBNET_BASE)}\.\d+\.0/24) .*metric (\d+)", line)
        if match and not _alive(int(match.group(2))):
            ip("route", "del", "unreachable", match.group(1), "metric", match.group(2), check=False)


class Lab:
    """``hosts`` namespaces on a private /24; numbered 1..hosts, addresses ``10.231.K.<n>``."""

    def __init__(self, hosts: int = 2):
        global _swept
        reason = skip_reason()
        if reason:
            raise RuntimeError(reason)
        if not _swept:
            sweep_leftovers()
            _swept = True
        self.owner = os.getpid()
        self.name = f"{PREFIX}-{self.owner}-{next(_numbers)}"
        self.bridge = f"{self.name}-br"
        self.hosts = hosts
        self.subnet: str | None = None
        self.namespaces: list[str] = []
        self.processes: list[PeerProcess] = []
        try:
            self._guard_root()
            self._build()
        except BaseException:
            self.close()
            raise

    # -- building -------------------------------------------------------------------------
    def _guard_root(self) -> None:
        """Claim a /24 nobody routes yet and make it unreachable from the root namespace."""
        for offset in range(250):
            third = (self.owner + offset) % 250
            subnet = f"{SUBNET_BASE}.{third}.0/24"
            if ip("route", "show", "table", "all", "to", "exact", subnet, check=False).stdout.strip():
                continue
            if ip("route", "add", "unreachable", subnet, "metric", str(self.owner), check=False).returncode == 0:
                self.subnet = subnet
                self.prefix = f"{SUBNET_BASE}.{third}"
                return
        raise RuntimeError(f"no free /24 under {SUBNET_BASE}.0.0/16 for a lab")

    def _build(self) -> None:
        self._add_namespace(self.bridge)
        ip("-n", self.bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", self.bridge, "link", "set", "br0", "up")
        for number in range(1, self.hosts + 1):
            host = self.namespace(number)
            self._add_namespace(host)
            ip("-n", self.bridge, "link", "add", f"v{number}", "type", "veth", "peer", "name", "eth0",
               "netns", host)
            ip("-n", self.bridge, "link", "set", f"v{number}", "master", "br0", "up")
            ip("-n", host, "addr", "add", f"{self.address(number)}/24", "dev", "eth0")
            ip("-n", host, "link", "set", "eth0", "up")
            ip("-n", host, "route", "add", "default", "via", f"{self.prefix}.{GATEWAY}")

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    # -- using ----------------------------------------------------------------------------
    def namespace(self, number: int) -> str:
        return f"{self.name}-h{number}"

    def address(self, number: int) -> str:
        return f"{self.prefix}.{number}"

    def wrap(self, number: int) -> list[str]:
        """Command prefix that runs a program inside host ``number``."""
        return ["ip", "netns", "exec", self.namespace(number)]

    def run(self, number: int, *command: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
        """Run a short command inside host ``number`` and wait for it."""
        return subprocess.run([*self.wrap(number), *command], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def env(self, number: int, **extra: str | None) -> dict[str, str]:
        """A peer's environment inside host ``number``: its lab address, spec default ports, answering.

        Pass ``NAME=None`` to leave a variable unset (e.g. ``NET_HOST=None``).
        """
        address = self.address(number)
        env: dict[str, str | None] = dict(peer_env(port_start=3010))
        env.update(NET_HOST=address, NET_BIND=address, NET_DISCOVERY="answer", NET_PORT_RANGE="5")
        env.update(extra)
        return {key: value for key, value in env.items() if value is not None}

    def spawn(self, number: int, *modules: str, env: dict[str, str] | None = None,
              script: Path | None = None, args: list[str] | None = None, **extra: str) -> PeerProcess:
        """Start ``tests/peers/serve.py MODULES`` (or ``script``) inside host ``number``; wait for READY."""
        process = PeerProcess(*modules, env=env or self.env(number, **extra), wrap=self.wrap(number),
                              script=script, args=args)
        process.host = self.address(number)
        process.address = (process.host, process.port)
        self.processes.append(process)
        return process

    def discoverer(self, number: int, **extra: str | None) -> PeerProcess:
        """A process inside host ``number`` that runs ``net.peers()`` on request (see :func:`ask`)."""
        return self.spawn(number, script=PEERS / "discover.py", env=self.env(number, **extra))

    def unplug(self, number: int) -> None:
        """Pull host ``number``'s cable: its bridge port goes down; packets to and from it vanish."""
        ip("-n", self.bridge, "link", "set", f"v{number}", "down")

    def plug(self, number: int) -> None:
        ip("-n", self.bridge, "link", "set", f"v{number}", "up")

    def add_silent_neighbour(self, number: int, last_octet: int) -> str:
        """Put a host that drops everything into host ``number``'s ARP table: a firewalled machine."""
        address = f"{self.prefix}.{last_octet}"
        mac = f"02:00:00:00:{last_octet // 256:02x}:{last_octet % 256:02x}"
        ip("-n", self.namespace(number), "neigh", "replace", address, "lladdr", mac, "dev", "eth0",
           "nud", "permanent")
        return address

    def can_connect(self, number: int, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from inside host ``number`` to ``address:port`` succeeds."""
        code = ("import socket,sys\n"
                f"try: socket.create_connection(({address!r}, {port}), {timeout}).close()\n"
                "except OSError: sys.exit(1)")
        return self.run(number, sys.executable, "-c", code, check=False).returncode == 0

    def arp_table(self, number: int) -> str:
        return self.run(number, "cat", "/proc/net/arp").stdout

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything this lab started and delete it; safe to call twice, never raises."""
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.stop(timeout=2)
        self.processes.clear()
        for name in reversed(self.namespaces):
            for pid in _namespace_pids(name):     # anything still running in our namespace was started by us
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            ip("netns", "del", name, check=False)
        self.namespaces.clear()
        if self.subnet is not None:
            ip("route", "del", "unreachable", self.subnet, "metric", str(self.owner), check=False)
            self.subnet = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
