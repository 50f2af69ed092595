"""What the ``net`` command's PEER argument names: an id, ``host:port``, or a unique prefix.

An id or ``host:port`` is used as given (no network traffic). Anything else is
a prefix of a peer's id, host or ``host:port``, looked up among the peers
discovery finds: on this machine by default (``on_host``, no LAN traffic), on
the LAN only when the user asks for it (``--lan``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UnknownPeer
from ..wire import ids as identity


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    id: str | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def discover(on_host: bool = True, groups: list[str] | None = None,
             hubs_only: bool = False) -> list[dict[str, Any]]:
    """Peers found by ``net.peers`` as a list of entries, each with its ``id`` added."""
    import net
    found = net.peers(refresh=True, groups=groups, on_host=on_host, hubs_only=hubs_only)
    return entries(found)


def entries(found: Any) -> list[dict[str, Any]]:
    """Normalise what ``net.peers`` returns (``{'peers': {id: entry}, group: [ids]}``) to a list."""
    table = found.get("peers", {}) if isinstance(found, dict) else {}
    rows = []
    for peer_id, entry in table.items():
        peer_id = peer_id.decode("ascii", "replace") if isinstance(peer_id, bytes) else str(peer_id)
        rows.append({"id": peer_id, **dict(entry)})
    rows.sort(key=lambda row: (str(row.get("host")), int(row.get("port") or 0)))
    return rows


def parse_exact(text: str) -> Target | None:
    """An id or ``host:port`` (``[v6]:port``) -> Target; None if ``text`` is neither."""
    try:
        decoded = identity.decode_id(text)
        return Target(decoded["host"], decoded["port"], text)
    except ValueError:
        pass
    host, sep, port = text.rpartition(":")
    if sep and host and port.isdigit() and 0 < int(port) < 65536 and (":" not in host or host.startswith("[")):
        return Target(host.strip("[]"), int(port))
    return None


def matches(prefix: str, entry: dict[str, Any]) -> bool:
    address = f"{entry.get('host')}:{entry.get('port')}"
    return (entry.get("id", "").startswith(prefix) or str(entry.get("host", "")).startswith(prefix)
            or address.startswith(prefix))


def resolve(text: str, lan: bool = False,
            search: Callable[[bool], list[dict[str, Any]]] | None = None) -> Target:
    """Turn the user's PEER into a Target; :class:`net.UnknownPeer` if none or several match."""
    text = text.strip()
    if not text:
        raise UnknownPeer("PEER is empty: give a peer id, host:port or a prefix of one")
    exact = parse_exact(text)
    if exact is not None:
        return exact
    search = search or (lambda on_host: discover(on_host=on_host))
    where = "on the network" if lan else "on this machine"
    found = [entry for entry in search(not lan) if matches(text, entry)]
    addresses = {(entry["host"], int(entry["port"])): entry for entry in found}
    if not addresses:
        hint = "" if lan else " (pass host:port, or --lan to search the network)"
        raise UnknownPeer(f"no peer {where} matches {text!r}{hint}")
    if len(addresses) > 1:
        names = [f"{entry['host']}:{entry['port']} ({entry['id']})" for entry in addresses.values()]
        raise UnknownPeer(f"{text!r} matches {len(names)} peers {where}: {', '.join(names)}; "
                          f"give more of the id, or host:port", candidates=names)
    entry = next(iter(addresses.values()))
    return Target(str(entry["host"]), int(entry["port"]), entry["id"])
