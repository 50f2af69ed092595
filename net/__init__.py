"""net: Python processes that find each other on a LAN and call each other's functions.

    @net.connect()
    def render(frame): ...

    render(12, peer=some_peer_id)     # runs on that peer, returns its result
"""
from __future__ import annotations

import logging as _logging
import os as _os
import sys as _sys

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
from .errors import AuthError, Cancelled, ConfigError, DiscoveryDisabled, FrameTooLarge, InvalidConnection, MessageTooLarge, NetError, PeerUnreachable, PortsExhausted, ProtocolError, RemoteError, Timeout, UnknownPeer, UserCodeError, VersionMismatch
from .api import cancelled, connect, event, flag, subscribe, timeout
from .peer import Peer
from .discovery.peers import Peers, peers
from . import peer
from .defaults.handlers import connections, info, null, pass_through, subscription_handler
from . import defaults as _defaults  # noqa: F401  (registers the built-in flags)

__version__ = "0.1.0"

# Settings as package attributes: net.PORT_START, net.GROUP, ... (see net.config).
globals().update(_config.VALUES)

_log = _logging.getLogger("net")
_log.addHandler(_logging.NullHandler())
if _config.VALUES["DEV"]:
    _log.setLevel(_logging.DEBUG)
    if not any(isinstance(h, _logging.StreamHandler) for h in _log.handlers):
        _handler = _logging.StreamHandler()
        _handler.setFormatter(_logging.Formatter("%(asctime)s net %(levelname)s %(message)s"))
        _log.addHandler(_handler)

__all__ = [
    # decorators and functions
    "connect", "flag", "timeout", "cancelled", "Peer", "peer", "peers", "Peers", "event", "subscribe",
    # defaults
    "info", "pass_through", "null", "connections", "subscription_handler",
    # errors
    "NetError", "ConfigError", "ProtocolError", "VersionMismatch", "FrameTooLarge", "MessageTooLarge", "PortsExhausted",
    "AuthError", "PeerUnreachable", "Timeout", "Cancelled", "RemoteError", "InvalidConnection",
    "UnknownPeer", "UserCodeError", "DiscoveryDisabled",
    # settings
    *[_s.name for _s in _config.SETTINGS],
]
