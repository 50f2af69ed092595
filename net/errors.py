"""Every error net raises, in one tree.

    NetError                      anything net raises on purpose
    ├── ConfigError               a NET_* variable has a bad value (raised at import)
    ├── ProtocolError             bytes on the wire broke the protocol (the *sender's* fault)
    │   ├── VersionMismatch       the other side speaks another protocol version
    │   └── FrameTooLarge         a received frame announces more than NET_MAX_MESSAGE bytes
    ├── MessageTooLarge           a message exceeds NET_MAX_MESSAGE (refused before sending)
    ├── PortsExhausted            no free port in NET_PORT_START..NET_PORT_START+NET_PORT_RANGE
    ├── AuthError                 the other side failed (or refused) authentication
    ├── PeerUnreachable           the peer is down, refused, vanished mid-call or stopped answering
    ├── Timeout                   a call ran past its deadline (net.timeout / NET_TIMEOUT)
    ├── Cancelled                 the call was cancelled by the caller
    ├── RemoteError               the remote handler raised; carries its type, message, traceback
    ├── InvalidConnection         the peer offers no connection by that name/tag
    ├── UnknownPeer               no peer (or more than one) matches a name given by the user
    ├── UserCodeError             the user's module could not be imported (`net serve`)
    └── DiscoveryDisabled         net.peers() would scan the LAN but NET_DISCOVERY=off

Errors caused by the remote side name the peer (``peer`` attribute, ``host:port``)
so a log line says where things went wrong, not only what.
"""
from __future__ import annotations


class NetError(Exception):
    """Base class of every error raised by net."""


class ConfigError(NetError, ValueError):
    """A ``NET_*`` environment variable holds a value net cannot use."""


class ProtocolError(NetError):
    """Received bytes do not follow the net wire protocol.

    Raised by the decoder; the connection that produced them is dropped.
    """


class VersionMismatch(ProtocolError):
    """The other side speaks a different protocol version."""


class FrameTooLarge(ProtocolError):
    """A received frame announces more bytes than this side's ``NET_MAX_MESSAGE``.

    Raised by the decoder before any of the payload is buffered; ``kind`` and
    ``request_id`` let the receiver tell the sender which message it refused.
    """

    def __init__(self, message: str, kind: int = 0, request_id: int = 0, length: int = 0, limit: int = 0):
        super().__init__(message)
        self.kind = kind
        self.request_id = request_id
        self.length = length
        self.limit = limit


class MessageTooLarge(NetError, ValueError):
    """A message is larger than ``NET_MAX_MESSAGE``; nothing was sent."""


class PortsExhausted(NetError, OSError):
    """Every port in the configured range is taken by another process."""


class AuthError(NetError):
    """Authentication with the other side failed (missing/wrong key or certificate)."""


class PeerUnreachable(NetError, ConnectionError):
    """The peer could not be reached, or the connection died while waiting on it."""

    def __init__(self, message: str, peer: str | None = None):
        super().__init__(message)
        self.peer = peer


class Timeout(NetError, TimeoutError):
    """A call did not finish before its deadline."""

    def __init__(self, message: str, peer: str | None = None):
        super().__init__(message)
        self.peer = peer


class Cancelled(NetError):
    """The call was cancelled by its caller."""


class RemoteError(NetError):
    """The remote handler raised an exception.

    ``remote_type``, ``remote_message`` and ``remote_traceback`` describe the
    exception as it happened on ``peer``; ``str()`` includes the remote traceback.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = "",
                 peer: str | None = None, connection: str | None = None):
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.peer = peer
        self.connection = connection
        where = f" in {connection!s}" if connection else ""
        on = f" on peer {peer}" if peer else ""
        text = f"{remote_type}: {remote_message} (raised{where}{on})"
        if remote_traceback:
            text += "\n\nRemote traceback:\n" + remote_traceback.rstrip()
        super().__init__(text)


class InvalidConnection(NetError, LookupError):
    """The peer has no connection registered under the requested name or tag."""

    def __init__(self, connection: str, peer: str | None = None, offered: list[str] | None = None):
        self.connection = connection
        self.peer = peer
        self.offered = sorted(offered or [])
        listing = ", ".join(self.offered) if self.offered else "(none)"
        super().__init__(f"peer {peer} has no connection {connection!r}; it offers: {listing}")


class UnknownPeer(NetError, LookupError):
    """No peer matches what the user named (id, ``host:port`` or prefix), or several do."""

    def __init__(self, message: str, candidates: list[str] | None = None):
        super().__init__(message)
        self.candidates = list(candidates or [])


class UserCodeError(NetError, ImportError):
    """The user's module failed to import; the message carries the user's own error and where."""


class DiscoveryDisabled(NetError):
    """A LAN scan was asked for while ``NET_DISCOVERY=off`` (``on_host=True`` still works)."""
