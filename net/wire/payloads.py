"""The payload of every frame kind, built and parsed here: the schema lives in this one place.

A frame (:mod:`net.wire.frames`) carries one msgpack value. Builders return
that value, ready for :func:`~net.wire.frames.pack`; parsers take what
:func:`~net.wire.frames.unpack` gave and return it checked, or raise
:class:`~net.errors.ProtocolError` saying what was expected. No I/O::

    kind         payload                                             builder / parser
    -----------  --------------------------------------------------  ------------------------------
    HELLO        reserved (nothing sends it yet)                     -
    CALL         [key: bin, args: array, kwargs: map, options: map]  call / parse_call
    NOTIFY       as CALL; the callee sends no reply                  call / parse_call
    RESULT       the return value (a flag extension for net's own   (the value itself)
                 answers: NULL, INVALID_CONNECTION)
    ERROR        {"type": str, "message": str, "traceback": str}     error, error_from, unsendable /
                                                                     parse_error
    STREAM_ITEM  [item, ...]: one or more items, each packed once    frames.encode_items /
                                                                     parse_stream_items
    STREAM_END   nil                                                 -
    CANCEL       nil                                                 -
    CREDIT       int > 0: this many more stream items may be sent    credit / parse_credit
    PING, PONG   nil (the PONG echoes the PING's request id)         -
    AUTH         handshake maps (net.wire.handshake builds them)     -
    GOODBYE      {"reason": str, "last_request": int}                goodbye / parse_goodbye

CALL ``key`` may also arrive as text (its ASCII bytes are the key); ``options``
that is not a map means no options. ``{"stream": window}`` (int > 0) asks for
a streamed result (:func:`stream_options`). An ERROR's ``type`` is the
exception's qualified name (``ValueError`` for a builtin, ``module.Class``
otherwise), or net's own: :data:`MESSAGE_TOO_LARGE` (the receiver refused a
message over its NET_MAX_MESSAGE), :data:`PROTOCOL_ERROR` (it could not read
the call). A GOODBYE from an older peer may lack ``last_request``.

Events are CALLs to :data:`~net.wire.ids.SUBSCRIPTION_KEY` whose first
argument names the action::

    action     args                                                   reply
    ---------  -----------------------------------------------------  ----------------------------
    subscribe  ["subscribe", {"id": bin, "host": str, "port": int,    {"instance": str,
               "instance": str, "route": str, "events": [str, ...],    "lease": str | nil,
               "lease": seconds}]                                      "expires_in": seconds}
               subscribe_args(subscribe_request(...)) /               subscribe_reply /
               parse_subscribe_request                                parse_subscribe_expiry
    deliver    ["deliver", {"publisher": bin, "instance": str,        {"handled": int, "failed": int,
               "to": str, "lease": str, "route": str, "seq": int},     "error": str | nil}
               [[name, args, kwargs], ...]]                           or {"unknown": true}
               deliver_call(deliver_meta(...), [event(...), ...]) /   delivery_receipt,
               parse_delivery, parse_event                            delivery_unknown /
                                                                      parse_delivery_receipt
    list       ["list"]                                               {event: [listed_subscriber(...)]}

Maps are packed in the key order shown. The measured paths build some of
these inline or pre-packed (the CALL on the caller, the reply and the call's
parse on the callee, the delivery head and each event on the publisher);
a comment at each such copy names the function here it copies, and
tests/test_payloads.py holds the copy to that function byte for byte.
"""
from __future__ import annotations

import traceback as _traceback
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..errors import NetError, ProtocolError
from .ids import SUBSCRIPTION_KEY

MESSAGE_TOO_LARGE = "net.MessageTooLarge"       # ERROR type: the receiver refused a message over its limit
PROTOCOL_ERROR = "net.ProtocolError"            # ERROR type: the receiver could not read the message
MALFORMED_CALL = "malformed call: expected [connection, args, kwargs, options]"
STREAM = "stream"                               # the CALL option asking for a streamed result
SUBSCRIBE, DELIVER, LIST = "subscribe", "deliver", "list"   # the subscription_handler actions
IDLE = "idle"                                   # GOODBYE reason: closed after NET_IDLE_TIMEOUT
NO_OPTIONS: dict[str, Any] = {}     # a CALL's options when it has none: shared, so never change it


def _what(value: Any) -> str:
    """How a parser's error names the value it got (msgpack's words, not Python's)."""
    names = {dict: "a map", list: "an array", str: "text", bytes: "bytes", bool: "a boolean",
             int: "an integer", float: "a float", type(None): "nil"}
    return names.get(type(value), type(value).__name__)


# -- calls -------------------------------------------------------------------------------------
def call(key: bytes, args: list[Any], kwargs: dict[str, Any],
         options: dict[str, Any] | None = None) -> list[Any]:
    """A CALL (or NOTIFY) payload."""
    return [key, args, kwargs, options or NO_OPTIONS]


def stream_options(window: int) -> dict[str, Any]:
    """CALL options asking for a streamed result, ``window`` items ahead at most."""
    return {STREAM: window}


class Call(NamedTuple):
    """A parsed CALL: what to run, with what (``options`` is always a map)."""

    key: bytes
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]


def parse_call(payload: Any) -> Call:
    """Check a CALL/NOTIFY payload; ProtocolError (:data:`MALFORMED_CALL`) if it is not one."""
    try:
        key, args, kwargs, options = payload
    except (TypeError, ValueError):
        raise ProtocolError(MALFORMED_CALL) from None
    if type(key) is str:
        key = key.encode("ascii", "replace")
    if type(key) is not bytes or type(args) is not list or type(kwargs) is not dict:
        raise ProtocolError(MALFORMED_CALL)
    return Call(key, args, kwargs, options if type(options) is dict else NO_OPTIONS)


# -- errors ------------------------------------------------------------------------------------
def error(type_name: str, message: str, traceback: str = "") -> dict[str, str]:
    """An ERROR payload."""
    return {"type": type_name, "message": message, "traceback": traceback}


def short_type_name(exc: BaseException) -> str:
    """``net.Name`` for net's errors, else the bare class name (errors net raises while replying)."""
    return f"net.{type(exc).__name__}" if isinstance(exc, NetError) else type(exc).__name__


def error_from(exc: BaseException) -> dict[str, str]:
    """The ERROR payload for an exception a handler raised, with its traceback."""
    kind = type(exc)
    return error(_raised_name(exc), str(exc),
                 "".join(_traceback.format_exception(kind, exc, exc.__traceback__)))


def unsendable(exc: BaseException) -> dict[str, str]:
    """The ERROR payload for a result that cannot travel (too large, or a type msgpack refuses)."""
    return error(short_type_name(exc), f"the result cannot be sent: {exc}")


def _raised_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


class Failure(NamedTuple):
    """A parsed ERROR: the remote exception's type name, message and traceback ("" if none)."""

    type: str
    message: str
    traceback: str


def parse_error(payload: Any) -> Failure:
    """Check an ERROR payload (``traceback`` may be missing; other keys are ignored)."""
    if not isinstance(payload, dict):
        raise ProtocolError(f"malformed ERROR: expected a map of type, message and traceback, "
                            f"got {_what(payload)}")
    kind, message, trace = payload.get("type"), payload.get("message"), payload.get("traceback", "")
    if not isinstance(kind, str) or not isinstance(message, str) or not isinstance(trace, str):
        raise ProtocolError("malformed ERROR: expected type, message and traceback as text")
    return Failure(kind, message, trace)


# -- streams -----------------------------------------------------------------------------------
def credit(amount: int) -> int:
    """A CREDIT payload: ``amount`` more stream items may be sent."""
    if type(amount) is not int or amount <= 0:
        raise ValueError(f"credit must be an integer > 0, not {amount!r}")
    return amount


def parse_credit(payload: Any) -> int:
    """Check a CREDIT payload: an integer > 0."""
    if type(payload) is not int or payload <= 0:
        raise ProtocolError(f"malformed CREDIT: expected an integer > 0, got {_what(payload)} {payload!r}")
    return payload


def parse_stream_items(payload: Any) -> list[Any]:
    """Check a STREAM_ITEM payload: an array of items (built by ``frames.encode_items``)."""
    if type(payload) is not list:
        raise ProtocolError(f"malformed STREAM_ITEM: expected an array of items, got {_what(payload)}")
    return payload


# -- closing -----------------------------------------------------------------------------------
def goodbye(reason: str, last_request: int) -> dict[str, Any]:
    """A GOODBYE payload: calls with ids above ``last_request`` were never read."""
    return {"reason": reason, "last_request": last_request}


class Goodbye(NamedTuple):
    """A parsed GOODBYE; ``last_request`` is None from a peer that predates it."""

    reason: str
    last_request: int | None


def parse_goodbye(payload: Any) -> Goodbye:
    """Check a GOODBYE payload."""
    if not isinstance(payload, dict):
        raise ProtocolError(f"malformed GOODBYE: expected a map of reason and last_request, "
                            f"got {_what(payload)}")
    reason, last = payload.get("reason"), payload.get("last_request")
    if not isinstance(reason, str):
        raise ProtocolError(f"malformed GOODBYE: expected the reason as text, got {_what(reason)}")
    if last is not None and (type(last) is not int or last < 0):
        raise ProtocolError(f"malformed GOODBYE: expected last_request as an integer >= 0, "
                            f"got {_what(last)}")
    return Goodbye(reason, last)


# -- events: subscribing -----------------------------------------------------------------------
def subscribe_request(peer_id: bytes, host: str, port: int, instance: str, route: str,
                      events: list[str], lease: float) -> dict[str, Any]:
    """What a subscriber tells a publisher: all it wants from it (an empty ``events`` releases it)."""
    return {"id": peer_id, "host": host, "port": port, "instance": instance, "route": route,
            "events": events, "lease": lease}


def subscribe_args(request: dict[str, Any]) -> list[Any]:
    """The subscription_handler args of a subscribe call."""
    return [SUBSCRIBE, request]


def subscribe_reply(instance: str, lease: str | None, expires_in: float) -> dict[str, Any]:
    """A publisher's answer to a subscribe: its instance, the lease (None: released), its expiry."""
    return {"instance": instance, "lease": lease, "expires_in": expires_in}


def parse_subscribe_expiry(reply: Any) -> float | None:
    """The seconds a publisher's answer to a subscribe says the lease lasts; None if it says nothing
    usable (an older or odd publisher: the subscriber keeps its own schedule)."""
    expires_in = reply.get("expires_in") if isinstance(reply, Mapping) else None
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
        return float(expires_in)
    return None


class SubscribeRequest(NamedTuple):
    """A parsed subscribe request; ``lease`` None: the publisher's own NET_LEASE."""

    peer_id: bytes
    host: str
    port: int
    instance: str
    route: str
    events: list[str]
    lease: float | None


_SUBSCRIBE_NEEDS = ("malformed subscribe request: needs id, host, port, route, instance, "
                    "events (list of names) and lease > 0")


def parse_subscribe_request(request: Any) -> SubscribeRequest:
    """Check a subscribe request (text and numbers are converted as a lenient peer would)."""
    if not isinstance(request, Mapping):
        raise ProtocolError(f"malformed subscribe request: expected a map of id, host, port, route, "
                            f"instance, events and lease, got {_what(request)}")
    try:
        peer_id = request["id"]
        host, port, route = str(request["host"]), int(request["port"]), str(request["route"])
        instance = str(request["instance"])
        events = request["events"]
        lease = request.get("lease")
        lease = float(lease) if lease else None
    except KeyError as exc:
        raise ProtocolError(f"malformed subscribe request: no {exc}") from None
    except (TypeError, ValueError):
        raise ProtocolError(_SUBSCRIBE_NEEDS) from None
    if isinstance(peer_id, str):
        peer_id = peer_id.encode("ascii", "replace")
    if (not isinstance(events, list) or not all(isinstance(e, str) for e in events)
            or not 0 < port < 65536 or (lease is not None and not lease > 0)
            or not isinstance(peer_id, bytes)):
        raise ProtocolError(_SUBSCRIBE_NEEDS)
    return SubscribeRequest(peer_id, host, port, instance, route, events, lease)


def listed_subscriber(peer_id: bytes, host: str, port: int, queued: int, delivered: int,
                      failed: int, dropped: int) -> dict[str, Any]:
    """One subscriber in a publisher's answer to ``list``."""
    return {"id": peer_id, "host": host, "port": port, "queued": queued,
            "delivered": delivered, "failed": failed, "dropped": dropped}


# -- events: delivering ------------------------------------------------------------------------
def event(name: str, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
    """One event of a delivery batch."""
    return [name, args, kwargs]


def deliver_meta(publisher: bytes, instance: str, to: str, lease: str, route: str,
                 seq: int) -> dict[str, Any]:
    """Who sends a delivery batch, for whom (``to``: the subscriber instance), under which lease,
    and the sequence number of its first event."""
    return {"publisher": publisher, "instance": instance, "to": to, "lease": lease,
            "route": route, "seq": seq}


def deliver_call(meta: dict[str, Any], events: list[Any]) -> list[Any]:
    """The CALL payload of a delivery batch (the publisher sends it pre-packed)."""
    return call(SUBSCRIPTION_KEY, [DELIVER, meta, events], {})


class Delivery(NamedTuple):
    """A parsed delivery batch; ``publisher`` is None when the publisher did not say."""

    publisher: bytes | None
    lease: str
    route: str
    seq: int
    events: list[Any]


def parse_delivery(meta: Any, events: Any, instance: str) -> Delivery | None:
    """Check a delivery's meta and events; None if it was queued for another ``instance``
    (answer :func:`delivery_unknown`), looked at before the rest, as net always has."""
    if not isinstance(meta, Mapping) or not isinstance(events, list):
        raise ProtocolError("malformed delivery: expected (meta, [event, ...])")
    if meta.get("to") != instance:
        return None
    lease, route, seq = meta.get("lease"), meta.get("route"), meta.get("seq")
    if not isinstance(lease, str) or not isinstance(seq, int) or not isinstance(route, str):
        raise ProtocolError("malformed delivery: lease, route and seq are required")
    publisher = meta.get("publisher")
    return Delivery(publisher if isinstance(publisher, bytes) else None, lease, route, seq, events)


def parse_event(item: Any) -> tuple[str, list[Any], dict[str, Any]]:
    """Check one event of a delivery: ``[name, args, kwargs]``."""
    try:
        name, args, kwargs = item
    except (TypeError, ValueError):
        raise ProtocolError(f"malformed event: expected [name, args, kwargs], got {_what(item)}") from None
    if type(name) is not str or type(args) is not list or type(kwargs) is not dict:
        raise ProtocolError("malformed event: expected [name as text, args array, kwargs map]")
    return name, args, kwargs


def delivery_receipt(handled: int, failed: int, error: str | None) -> dict[str, Any]:
    """A subscriber's answer to a delivery: events handled, handler calls that raised, the first error."""
    return {"handled": handled, "failed": failed, "error": error}


def delivery_unknown() -> dict[str, Any]:
    """The answer to a delivery queued for another process instance: the lease is not ours."""
    return {"unknown": True}


class Receipt(NamedTuple):
    """A parsed answer to a delivery; ``unknown``: the subscriber does not hold that lease."""

    unknown: bool
    handled: int
    failed: int
    error: str | None


def parse_delivery_receipt(payload: Any) -> Receipt:
    """Check a subscriber's answer to a delivery (missing counts are 0)."""
    if not isinstance(payload, dict):
        raise ProtocolError(f"malformed delivery receipt: expected a map of handled, failed and error "
                            f"(or unknown), got {_what(payload)}")
    if payload.get("unknown"):
        return Receipt(True, 0, 0, None)
    handled, failed, first = payload.get("handled") or 0, payload.get("failed") or 0, payload.get("error")
    if type(handled) is not int or type(failed) is not int or handled < 0 or failed < 0 \
            or not (first is None or isinstance(first, str)):
        raise ProtocolError("malformed delivery receipt: expected handled and failed as integers >= 0, "
                            "error as text or nil")
    return Receipt(False, handled, failed, first)
