"""Built-in flags: ``NULL`` (the call returns None) and ``INVALID_CONNECTION``."""
from __future__ import annotations

from typing import Any

from .. import api
from ..api import flag
from ..errors import InvalidConnection, NetError
from .handlers import connections

OFFERED_LOOKUP_TIMEOUT = 2.0     # seconds to ask the peer what it offers, for the error message


@flag("NULL")
def null_response(connection: str, peer: Any) -> None:
    """The remote connection returned NULL: the call's result is None."""
    return None


@flag("INVALID_CONNECTION")
def invalid_connection(connection: str, peer: Any) -> None:
    """The peer has no such connection: raise InvalidConnection listing what it does offer."""
    offered: list[str] | None = None
    try:
        host, port = api.resolve(peer)
        with api.timeout(OFFERED_LOOKUP_TIMEOUT):
            offered = [entry["name"] for entry in connections(peer=(host, port))]
    except (NetError, ValueError, TypeError, KeyError):
        pass
    raise InvalidConnection(connection, peer=_readable(peer), offered=offered)


def _readable(peer: Any) -> str:
    try:
        host, port = api.resolve(peer)
        return f"{host}:{port}"
    except ValueError:
        return repr(peer)
