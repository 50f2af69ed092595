"""Every ``NET_*`` setting, declared once with its type, default and meaning.

Values are read from the environment when ``net`` is imported; a malformed
value raises :class:`net.ConfigError` naming the variable and the value, and
a ``NET_*`` variable that names no setting is reported (:func:`unknown_variables`).
They live in :data:`VALUES` only: the ``net`` package shows them as typed
attributes (``net.PORT_START``), and assigning one (``net.GROUP = "x"``)
changes :data:`VALUES`; each setting's ``applies`` says when the new value
takes effect. Code reads them with :func:`get`.
"""
from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import ifaddr

from .errors import ConfigError
from .wire.handshake import MIN_SECRET

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError("expected a TCP port 1-65535")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _busy_poll_microseconds(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 10_000:
        raise ValueError("expected microseconds 0-10000 (0: no busy polling)")
    return value


def _seconds_or_none(text: str) -> float | None:
    if text.strip().lower() in ("", "none", "0", "off"):
        return None
    value = float(text)
    if value <= 0:
        raise ValueError("expected seconds > 0, or 'none'")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("expected seconds > 0")
    return value


def _text_or_none(text: str) -> str | None:
    return text if text != "" else None


def _secret(text: str) -> str | None:
    if text == "":
        return None
    if len(text) < MIN_SECRET:
        raise ValueError(f"a shared key needs at least {MIN_SECRET} characters (try: python -c "
                         f"'import secrets; print(secrets.token_urlsafe(32))')")
    return text


def _path_or_none(text: str) -> str | None:
    text = text.strip()
    return os.path.expanduser(text) if text else None


DISCOVERY_MODES = ("off", "query", "answer", "announce")


def _discovery_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in DISCOVERY_MODES:
        raise ValueError("expected one of " + ", ".join(DISCOVERY_MODES))
    return mode


def _host(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("expected an address or host name")
    return text


@dataclass(frozen=True)
class Setting:
    name: str                       # attribute name on the net package; env var is NET_<name>
    parse: Callable[[str], Any]
    default: Any
    doc: str
    secret: bool = False            # never shown by dump()
    annotation: str = "object"      # its type as net/__init__.py declares it for type checkers
    applies: str = ""               # when an assignment ``net.NAME = value`` takes effect

    @property
    def env(self) -> str:
        return "NET_" + self.name


def detect_lan_address() -> str:
    """This machine's LAN address, never loopback merely because the hostname maps there.

    1. the source address the kernel would use for an outward route (a UDP
       ``connect`` only consults the routing table; it sends no packet);
    2. else the first non-loopback IPv4 address of any interface;
    3. else ``127.0.0.1``.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.255", 9))   # TEST-NET-1: routing lookup only, nothing is sent
        address: str = probe.getsockname()[0]
        if address and not address.startswith("127.") and address != "0.0.0.0":
            return address
    except OSError:
        pass
    finally:
        probe.close()
    try:
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                if ip.is_IPv4 and not str(ip.ip).startswith("127."):
                    return str(ip.ip)
    except Exception:   # the OS refused: fall through to loopback
        pass
    return "127.0.0.1"


SETTINGS: tuple[Setting, ...] = (
    Setting("THREAD_LIMIT", _positive_int, 5,
            "threads that share a network scan; also the number of event deliveries in flight",
            annotation="int",
            applies="at the next scan or subscription sync; the event delivery pool keeps the size it started with"),
    Setting("PORT_START", _port, 3010, "first port a peer tries to bind",
            annotation="int",
            applies="at the next peer start (and the next on_host scan)"),
    Setting("PORT_RANGE", _non_negative_int, 5,
            "ports tried after PORT_START: the peer binds the first free of START..START+RANGE",
            annotation="int",
            applies="at the next peer start (and the next on_host scan)"),
    Setting("GROUP", _text_or_none, None, "the group this peer belongs to (shown as 'None' in ids when unset)",
            annotation="str | None",
            applies="at the next peer start"),
    Setting("IS_HUB", _bool, False, "mark this peer as a hub",
            annotation="bool",
            applies="at the next peer start"),
    Setting("DEV", _bool, False, "log at DEBUG level on the 'net' logger",
            annotation="bool",
            applies="at once (the 'net' logger's level and handler)"),
    Setting("HOST", _host, None, "address advertised in this peer's id (default: the LAN address)",
            annotation="str",
            applies="at the next peer start"),
    Setting("BIND", _host, "0.0.0.0", "address the server listens on (0.0.0.0: this machine and the LAN)",
            annotation="str",
            applies="at the next peer start"),
    Setting("TIMEOUT", _seconds_or_none, None,
            "default deadline of a remote call in seconds ('none': no deadline, liveness by heartbeat)",
            annotation="float | None",
            applies="at the next call"),
    Setting("CONNECT_TIMEOUT", _seconds, 3.0, "seconds to open a TCP connection to a peer",
            annotation="float",
            applies="at the next link dialled"),
    Setting("HEARTBEAT", _seconds, 10.0,
            "a connection with calls in flight that hears nothing for this long is declared dead; so is "
            "one whose other side takes none of the bytes queued for it and sends nothing for this long",
            annotation="float",
            applies="at the heartbeat's next check (within a second)"),
    Setting("STREAM_WINDOW", _positive_int, 512,
            "items a streaming (generator) connection may produce ahead of its consumer (back-pressure)",
            annotation="int",
            applies="at the next streamed call"),
    Setting("MAX_MESSAGE", _positive_int, 256 * 1024 * 1024, "largest message in bytes, either direction",
            annotation="int",
            applies="at the next link dialled (caller), the next peer start (callee) or delivery batch (publisher)"),
    Setting("WORKERS", _positive_int, 64, "threads that run synchronous handlers (bounded pool)",
            annotation="int",
            applies="at the next peer start"),
    Setting("MAX_CONNECTIONS", _positive_int, 1024, "inbound connections a peer accepts at once",
            annotation="int",
            applies="at the next peer start"),
    Setting("HANDSHAKE_TIMEOUT", _seconds, 5.0,
            "seconds a new inbound connection has to introduce itself: its greeting and the start of its first call",
            annotation="float",
            applies="at the next peer start"),
    Setting("DISCOVERY", _discovery_mode, "answer",
            "what LAN discovery traffic this process may send: off, query (net.peers() may scan), "
            "answer (also answer others' queries), announce (also say hello/goodbye); see README",
            annotation="str",
            applies="at the next net.peers() call; the responder at the next peer start"),
    Setting("DISCOVERY_TIMEOUT", _seconds, 0.3,
            "seconds net.peers() waits for multicast answers, and for one probe to connect or answer",
            annotation="float",
            applies="at the next scan"),
    Setting("BUSY_POLL", _busy_poll_microseconds, 100,
            "microseconds a thread about to wait for a reply (or for a connection's next call) keeps "
            "polling the socket first, while that connection answers that fast; 0: never",
            annotation="int",
            applies="at the next link opened (either side)"),
    Setting("IDLE_TIMEOUT", _seconds_or_none, 600.0,
            "inbound connections with nothing in flight are closed after this many idle seconds",
            annotation="float | None",
            applies="at the next peer start"),
    Setting("LEASE", _seconds, 30.0,
            "subscribers renew their event subscriptions this often (seconds); a publisher drops a "
            "subscription that was not renewed for 3 leases",
            annotation="float",
            applies="at the next lease renewal (subscriber) or lease granted (publisher)"),
    Setting("EVENT_QUEUE", _positive_int, 10_000,
            "events a publisher queues per subscriber; when full, that subscriber's oldest are dropped",
            annotation="int",
            applies="at the next subscriber lease a publisher registers"),
    Setting("SECRET", _secret, None,
            "shared key: every connection must prove both sides know it (HMAC challenge-response)",
            secret=True,
            annotation="str | None",
            applies="at the next link opened (either side); open links keep theirs"),
    Setting("TLS_CERT", _path_or_none, None, "this peer's certificate (PEM) for mutual TLS",
            annotation="str | None",
            applies="at the next link opened (either side); open links keep theirs"),
    Setting("TLS_KEY", _path_or_none, None, "this peer's private key (PEM) for mutual TLS",
            annotation="str | None",
            applies="at the next link opened (either side); open links keep theirs"),
    Setting("TLS_CA", _path_or_none, None, "the team CA (PEM) both sides verify each other against",
            annotation="str | None",
            applies="at the next link opened (either side); open links keep theirs"),
)

TLS_SETTINGS = ("TLS_CERT", "TLS_KEY", "TLS_CA")


def check_tls(values: Mapping[str, Any]) -> bool:
    """True when mutual TLS is configured; ConfigError when only part of it is."""
    given = [name for name in TLS_SETTINGS if values.get(name)]
    if given and len(given) != len(TLS_SETTINGS):
        missing = [f"NET_{name}" for name in TLS_SETTINGS if name not in given]
        raise ConfigError(f"mutual TLS needs NET_TLS_CERT, NET_TLS_KEY and NET_TLS_CA together; "
                          f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set")
    return bool(given)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse every setting from ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None:
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            shown = "(hidden)" if setting.secret else repr(raw)
            raise ConfigError(f"{setting.env}={shown} is not valid: {exc}") from None
    check_tls(values)
    if values["HOST"] is None:
        values["HOST"] = detect_lan_address()
    return values


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``NET_*`` variable that names no setting, with the closest known name."""
    environ = os.environ if environ is None else environ
    known = [setting.env for setting in SETTINGS]
    lines = []
    for variable in sorted(name for name in environ if name.startswith("NET_") and name not in known):
        close = difflib.get_close_matches(variable, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"{variable}: no such setting{hint}")
    return lines


VALUES = load()
"""The one place settings live: read with :func:`get` (or this dict, on the call path), changed by
assigning ``net.NAME = value`` (which :func:`assign` carries out)."""

_on_change: dict[str, Callable[[Any], None]] = {}


def on_change(name: str, apply: Callable[[Any], None]) -> None:
    """Run ``apply(value)`` whenever setting ``name`` is assigned (for settings that act at once)."""
    _on_change[name] = apply


def is_setting(name: str) -> bool:
    return name in _BY_NAME


def assign(name: str, value: Any) -> None:
    """``net.NAME = value``: the new value is what :func:`get` returns from now on."""
    VALUES[name] = value
    apply = _on_change.get(name)
    if apply is not None:
        apply(value)


def namespace() -> dict[str, Any]:
    """The mapping :func:`get` reads, for a hot path that looks a setting up per call."""
    return VALUES


def get(name: str) -> Any:
    """The current value of a setting."""
    return VALUES[name]


def dump() -> dict[str, Any]:
    """Every setting's current value, keyed by its environment variable."""
    return {setting.env: ("(set)" if setting.secret and get(setting.name) else get(setting.name))
            for setting in SETTINGS}
