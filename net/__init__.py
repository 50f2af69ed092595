"""net: Python processes that find each other on a LAN and call each other's functions.

    @net.connect()
    def render(frame): ...

    render(12, peer=some_peer_id)     # runs on that peer, returns its result
"""
from __future__ import annotations

import logging as _logging
import os as _os
import sys as _sys
import types as _types

from .errors import ConfigError as _ConfigError


def _started_as_command() -> bool:
    """True while ``net`` is the program (the ``net`` console script, or ``python -m net`` being located)."""
    program = _os.path.basename(_sys.argv[0]) if _sys.argv else ""
    return program == "-m" or program.split(".")[0] in ("net", "net-script")


try:
    from . import config as _config
except _ConfigError as _error:
    if not _started_as_command():
        raise                       # an application importing net gets the exception
    print(f"net: {_error}", file=_sys.stderr)      # a command-line user gets one line, no traceback
    raise SystemExit(2) from None
from . import (
    defaults as _defaults,  # noqa: F401  (registers the built-in flags)
    peer,
)
from .api import Connection, Event, cancelled, connect, event, flag, subscribe, timeout
from .defaults.handlers import connections, info, null, pass_through, subscription_handler
from .discovery.peers import Peers, peers
from .errors import (
    AuthError,
    Cancelled,
    ConfigError,
    DiscoveryDisabled,
    FrameTooLarge,
    InvalidConnection,
    MessageTooLarge,
    NetError,
    PeerUnreachable,
    PortsExhausted,
    ProtocolError,
    RemoteError,
    Timeout,
    UnknownPeer,
    UserCodeError,
    VersionMismatch,
)
from .peer import Peer

__version__ = "0.1.0"

# Settings, typed for type checkers. Their values live in net.config.VALUES: reading net.NAME
# returns the current value, and assigning net.NAME = value changes it there (see _Package).
THREAD_LIMIT: int
PORT_START: int
PORT_RANGE: int
GROUP: str | None
IS_HUB: bool
DEV: bool
HOST: str
BIND: str
TIMEOUT: float | None
CONNECT_TIMEOUT: float
HEARTBEAT: float
STREAM_WINDOW: int
MAX_MESSAGE: int
WORKERS: int
MAX_CONNECTIONS: int
HANDSHAKE_TIMEOUT: float
DISCOVERY: str
DISCOVERY_TIMEOUT: float
BUSY_POLL: int
IDLE_TIMEOUT: float | None
LEASE: float
EVENT_QUEUE: int
SECRET: str | None
TLS_CERT: str | None
TLS_KEY: str | None
TLS_CA: str | None

LOGGER = _logging.getLogger("net")     # the prototype's public logger: every net log line
LOGGER.addHandler(_logging.NullHandler())
_dev_handler = _logging.StreamHandler()
_dev_handler.setFormatter(_logging.Formatter("%(asctime)s net %(levelname)s %(message)s"))


def _apply_dev(on: bool) -> None:
    """NET_DEV: DEBUG on the 'net' logger, printed to stderr (unless the app already prints it)."""
    if on:
        LOGGER.setLevel(_logging.DEBUG)
        if not any(isinstance(h, _logging.StreamHandler) for h in LOGGER.handlers):
            LOGGER.addHandler(_dev_handler)
    else:
        LOGGER.setLevel(_logging.NOTSET)
        LOGGER.removeHandler(_dev_handler)


_config.on_change("DEV", _apply_dev)
_apply_dev(bool(_config.get("DEV")))
for _line in _config.unknown_variables():
    LOGGER.warning("net: %s", _line)


def __getattr__(name: str) -> object:
    if _config.is_setting(name):
        return _config.get(name)
    raise AttributeError(f"module 'net' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """The ``net`` module: assigning a setting (``net.TIMEOUT = 5``) changes it where it is read."""

    def __setattr__(self, name: str, value: object) -> None:
        if _config.is_setting(name):
            _config.assign(name, value)
        else:
            super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

__all__ = [
    # decorators and functions
    "connect", "flag", "timeout", "cancelled", "Peer", "peer", "peers", "Peers", "event", "subscribe",
    "Connection", "Event", "LOGGER",
    # defaults
    "info", "pass_through", "null", "connections", "subscription_handler",
    # errors
    "NetError", "ConfigError", "ProtocolError", "VersionMismatch", "FrameTooLarge", "MessageTooLarge",
    "PortsExhausted", "AuthError", "PeerUnreachable", "Timeout", "Cancelled", "RemoteError",
    "InvalidConnection", "UnknownPeer", "UserCodeError", "DiscoveryDisabled",
    # settings
    "THREAD_LIMIT", "PORT_START", "PORT_RANGE", "GROUP", "IS_HUB", "DEV", "HOST", "BIND", "TIMEOUT",
    "CONNECT_TIMEOUT", "HEARTBEAT", "STREAM_WINDOW", "MAX_MESSAGE", "WORKERS", "MAX_CONNECTIONS",
    "HANDSHAKE_TIMEOUT", "DISCOVERY", "DISCOVERY_TIMEOUT", "BUSY_POLL", "IDLE_TIMEOUT", "LEASE",
    "EVENT_QUEUE", "SECRET", "TLS_CERT", "TLS_KEY", "TLS_CA",
]

# Exported classes and functions say where users find them: net.RemoteError, not net.errors.RemoteError.
for _name in __all__:
    _exported = globals().get(_name)
    if isinstance(_exported, type) or (callable(_exported) and hasattr(_exported, "__code__")):
        _exported.__module__ = __name__
