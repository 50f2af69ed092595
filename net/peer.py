"""The peer: this process's identity on the network, its server, and how to reach others.

``net.Peer()`` returns the process's peer, starting it on first use; inside a
handler it returns the peer that is serving the call. ``net.Peer`` is also the
type of every peer (``def f(p: net.Peer)``). ``_Peer(...)`` and
``net.Peer(test=True)`` build independent peers, so one process can run
several (tests, tools).
"""
from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from . import config
from .calls import flags
from .discovery import peers as discovery
from .events import publisher
from .serving import registry, request as context, running as _running
from .serving.server import Server
from .wire import frames as wire, ids as identity


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:       # no login name (containers, services)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


class _PeerType(type):
    """Calling ``Peer(...)`` gives the running peer, not a new one (the spec's ``net.Peer()``)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is not Peer or kwargs.get("test"):
            return super().__call__(*args, **kwargs)
        return _process_peer(*args, **kwargs)


class Peer(metaclass=_PeerType):
    """A net peer: serves this process's connections on one port of the range.

    ``Peer()`` returns this process's running peer (started on first use; inside
    a handler, the peer serving the call); ``Peer(test=True)`` a new, separate
    one with its own port and id.
    """

    CONNECTIONS = registry.CONNECTIONS
    SUBSCRIPTIONS = publisher.SUBSCRIPTIONS
    STALE = publisher.STALE
    FLAGS = flags.FLAGS

    generate_id = staticmethod(identity.generate_id)
    decode_id = staticmethod(identity.decode_id)
    encode = staticmethod(identity.encode)
    decode = staticmethod(identity.decode)

    def __init__(self, launch: bool = True, test: bool = False, group: str | None = None):
        self.test = test
        self._group: str | None = group if group is not None else config.get("GROUP")
        self._hub = bool(config.get("IS_HUB"))
        self._host: str = config.get("HOST")
        self._port: int | None = None
        self.server: Server | None = None
        self.responder: Any = None      # answers LAN discovery queries (net.discovery), if allowed
        self.closed = False
        if launch:
            self.launch()

    def launch(self) -> None:
        """Start serving (idempotent)."""
        if self.server is None:
            self.server = Server(self)
            self._port = self.server.port
            self.closed = False
            self.responder = discovery.start_responder(self)

    # -- identity ----------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """Host that the peer is running on (the address advertised in its id)."""
        return self._host

    @property
    def port(self) -> int | None:
        """Port that the peer is running on (None until launched)."""
        return self._port

    @property
    def group(self) -> str | None:
        return self._group

    @property
    def hub(self) -> bool:
        """True if this peer acts as a hub (NET_IS_HUB)."""
        return self._hub

    @property
    def id(self) -> bytes:
        """base64 of ``"host:port -> group"``."""
        return identity.generate_id(self._port or 0, self._host, self._group)

    @property
    def friendly_id(self) -> dict[str, Any]:
        """This peer as ``net.peers()`` lists it: group, host, port, hub, executable, user (+ pid)."""
        return {
            "group": str(self._group),
            "host": self._host,
            "port": self._port,
            "hub": self._hub,
            "executable": sys.executable,
            "user": _user(),
            "pid": os.getpid(),
        }

    def get_flag(self, flag: str) -> wire.Flag:
        """The id of flag ``flag``; returned from a connection it makes the caller run that flag."""
        return wire.Flag(flag, identity.encode_text(flag))

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self.responder is not None:
            discovery.stop_responder(self, self.responder)
            self.responder = None
        if self.server is not None:
            self.server.close()
            self.server = None
        self.closed = True
        _running.forget_process_peer(self)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"serving on {self._host}:{self._port}"
        return f"<net peer group={self._group} hub={self._hub} {state}>"


class _Peer(Peer):
    """A peer built directly (the spec's ``net.peer._Peer(launch=True, test=False, group=None)``):
    always a new one, never the process's running peer."""


def _process_peer(*args: Any, **kwargs: Any) -> Peer:
    """The running peer of this Python process (inside a handler: the peer serving the call)."""
    serving: Peer | None = context.serving_peer()
    if serving is not None:
        return serving
    instance = _running.process_peer()
    if instance is not None:
        return instance
    with _running.lock:
        instance = _running.process_peer()
        if instance is None:
            instance = _Peer(*args, **kwargs)
            _running.set_process_peer(instance)
        return instance


def running() -> Peer | None:
    """The process's peer if it has been started, without starting it."""
    return _running.running()
