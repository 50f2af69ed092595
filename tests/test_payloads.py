"""Payload schemas (net.wire.payloads): builders and parsers agree, the bytes on the wire stay put,
and every copy the measured paths keep inline produces what its canonical builder produces.

The inline copies, each held to its builder here (no peer process; where bytes must go
through a connection, one end of a socket pair stands in for the peer):

- ``client.call``'s CALL payload and ``OutboundLink.call``        -> payloads.call, frames.encode_frame
- ``OutboundLink.send_call`` / ``register_call``                  -> payloads.call
- ``OutboundLink._frame``                                         -> frames.encode_frame / packed_frame
- ``InboundLink._dispatch``'s parse of a call                     -> payloads.parse_call
- ``InboundLink._send`` (framed.send, unrolled)                   -> frames.encode_frame, payloads.unsendable
- the publisher's pre-packed ``_DELIVER_HEAD`` / ``_DELIVER_TAIL`` -> payloads.deliver_call / deliver_meta
- ``Publisher.publish``'s packed event                            -> payloads.event
"""
from __future__ import annotations

import asyncio
import socket
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from net.calls import client
from net.errors import MessageTooLarge, ProtocolError
from net.events import publisher as events, shared, subscriber
from net.serving import link as inbound, registry, running
from net.serving.server import HandlerSlots
from net.transport import endpoints
from net.transport.framed import FramedSocket
from net.wire import frames as wire, ids, payloads
from net.wire.frames import Kind

LIMIT = 1 << 20
ADDRESS = ("payloads.test", 1)          # never resolved: the pool's dial is replaced by a socket pair
ECHO_KEY = ids.key("tests.test_payloads.echo")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
arg_lists = st.lists(json_values, max_size=4)
kwarg_maps = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
texts = st.text(max_size=30)


def frame(kind: Kind, request_id: int, payload: Any = None) -> bytes:
    return wire.frame_bytes(kind, request_id, payload, max_message=LIMIT)


def received(sock: socket.socket, count: int = 1) -> bytes:
    """The raw bytes of the next ``count`` frames arriving on ``sock`` (bounded by a timeout)."""
    sock.settimeout(5)
    data = b""
    end = 0
    for _ in range(count):
        while len(data) < end + wire.HEADER_SIZE:
            data += sock.recv(65536)
        length = wire.HEADER.unpack_from(data, end)[0]
        end += wire.HEADER_SIZE + length
        while len(data) < end:
            data += sock.recv(65536)
    assert len(data) == end, "more bytes than the frames expected"
    return data


def echo(*args: Any, **kwargs: Any) -> list[Any]:
    """What the callee's dispatcher handed a handler: its args and kwargs."""
    return [list(args), kwargs]


# -- the bytes on the wire stay put --------------------------------------------------------------
def test_a_call_frame_is_these_bytes():
    assert frame(Kind.CALL, 1, payloads.call(b"k", [1], {})) == bytes.fromhex(
        "00000008" "02" "00000001"          # length, CALL, request id
        "94" "c4016b" "9101" "80" "80")     # [b"k", [1], {}, {}]


def test_an_error_frame_is_these_bytes():
    assert frame(Kind.ERROR, 7, payloads.error("ValueError", "bad")) == bytes.fromhex(
        "00000028" "04" "00000007"
        "83" "a474797065" "aa56616c75654572726f72"          # {"type": "ValueError",
        "a76d657373616765" "a3626164"                       #  "message": "bad",
        "a974726163656261636b" "a0")                          #  "traceback": ""}


def test_goodbye_credit_and_stream_item_frames_are_these_bytes():
    assert frame(Kind.GOODBYE, 0, payloads.goodbye(payloads.IDLE, 7)) == bytes.fromhex(
        "0000001b" "0d" "00000000"
        "82" "a6726561736f6e" "a469646c65" "ac6c6173745f72657175657374" "07")
    assert frame(Kind.CREDIT, 3, payloads.credit(16)) == bytes.fromhex("00000001" "08" "00000003" "10")
    assert b"".join(wire.encode_items(3, [wire.pack(1), wire.pack("a")], max_message=LIMIT)) == bytes.fromhex(
        "00000004" "05" "00000003" "92" "01" "a161")


def test_a_delivery_call_is_its_documented_array():
    key = ids.SUBSCRIPTION_KEY
    meta = payloads.deliver_meta(b"p", "i", "t", "l", "r", 5)
    packed = wire.pack(payloads.deliver_call(meta, [payloads.event("e", [], {})]))
    assert packed == (b"\x94" + b"\xc4" + bytes([len(key)]) + key + b"\x93\xa7deliver" + wire.pack(meta)
                      + b"\x91" + b"\x93\xa1e\x90\x80" + b"\x80\x80")
    assert wire.pack(meta) == (b"\x86\xa9publisher\xc4\x01p\xa8instance\xa1i\xa2to\xa1t\xa5lease\xa1l"
                               b"\xa5route\xa1r\xa3seq\x05")


# -- builder -> pack -> unpack -> parser ---------------------------------------------------------
def through_the_wire(value: Any) -> Any:
    return wire.unpack(wire.pack(value))


@given(st.binary(max_size=40), arg_lists, kwarg_maps, st.one_of(st.none(), kwarg_maps))
@settings(max_examples=150, deadline=None)
def test_calls_round_trip(key, args, kwargs, options):
    parsed = payloads.parse_call(through_the_wire(payloads.call(key, args, kwargs, options)))
    assert parsed == (key, args, kwargs, options or {})


@given(texts, texts, texts)
@settings(max_examples=100, deadline=None)
def test_errors_round_trip(kind, message, trace):
    assert payloads.parse_error(through_the_wire(payloads.error(kind, message, trace))) == (kind, message, trace)


def test_an_error_from_an_exception_round_trips_with_its_traceback():
    try:
        raise KeyError("gone")
    except KeyError as exc:
        failure = payloads.parse_error(through_the_wire(payloads.error_from(exc)))
    assert failure.type == "KeyError" and failure.message == "'gone'" and "raise KeyError" in failure.traceback
    failure = payloads.parse_error(through_the_wire(payloads.unsendable(MessageTooLarge("big"))))
    assert failure == (payloads.MESSAGE_TOO_LARGE, "the result cannot be sent: big", "")


@given(texts, st.integers(min_value=0, max_value=wire.MAX_REQUEST_ID))
@settings(max_examples=100, deadline=None)
def test_goodbyes_round_trip(reason, last):
    assert payloads.parse_goodbye(through_the_wire(payloads.goodbye(reason, last))) == (reason, last)


def test_a_goodbye_without_last_request_is_an_older_peers():
    assert payloads.parse_goodbye({"reason": "idle"}) == ("idle", None)


@given(st.integers(min_value=1, max_value=2**32))
@settings(max_examples=50, deadline=None)
def test_credit_round_trips(amount):
    assert payloads.parse_credit(through_the_wire(payloads.credit(amount))) == amount


@given(st.lists(json_values, min_size=1, max_size=6), st.integers(min_value=1, max_value=wire.MAX_REQUEST_ID))
@settings(max_examples=100, deadline=None)
def test_stream_items_round_trip(items, request_id):
    decoder = wire.FrameDecoder(LIMIT)
    [got] = decoder.decode(b"".join(wire.encode_items(request_id, [wire.pack(i) for i in items],
                                                      max_message=LIMIT)))
    assert got.kind is Kind.STREAM_ITEM and payloads.parse_stream_items(got.payload) == items


@given(st.binary(min_size=1, max_size=20), texts, st.integers(1, 65535), texts, texts,
       st.lists(texts, max_size=4), st.floats(min_value=0.001, max_value=1e6))
@settings(max_examples=100, deadline=None)
def test_subscribe_requests_round_trip(peer_id, host, port, instance, route, names, lease):
    request = payloads.subscribe_request(peer_id, host, port, instance, route, names, lease)
    action, sent = through_the_wire(payloads.subscribe_args(request))
    assert action == payloads.SUBSCRIBE
    assert payloads.parse_subscribe_request(sent) == (peer_id, host, port, instance, route, names, lease)


@given(st.binary(max_size=20), texts, texts, texts, st.integers(0, 2**40),
       st.lists(st.tuples(texts, arg_lists, kwarg_maps), max_size=4))
@settings(max_examples=100, deadline=None)
def test_deliveries_round_trip(publisher, lease, route, to, seq, batch):
    meta = payloads.deliver_meta(publisher, "me", to, lease, route, seq)
    sent = [payloads.event(*item) for item in batch]
    key, args, kwargs, options = payloads.parse_call(through_the_wire(payloads.deliver_call(meta, sent)))
    assert (key, kwargs, options) == (ids.SUBSCRIPTION_KEY, {}, {})
    action, got_meta, got_events = args
    assert action == payloads.DELIVER
    assert payloads.parse_delivery(got_meta, got_events, to) == (publisher, lease, route, seq, sent)
    assert payloads.parse_delivery(got_meta, got_events, to + "-other") is None
    assert [payloads.parse_event(item) for item in got_events] == [tuple(item) for item in batch]


@given(st.integers(0, 2**32), st.integers(0, 2**32), st.one_of(st.none(), texts))
@settings(max_examples=50, deadline=None)
def test_delivery_receipts_round_trip(handled, failed, error):
    receipt = payloads.parse_delivery_receipt(through_the_wire(payloads.delivery_receipt(handled, failed, error)))
    assert receipt == (False, handled, failed, error)
    assert payloads.parse_delivery_receipt(through_the_wire(payloads.delivery_unknown())).unknown


# -- parsers refuse what is not their shape, saying what they expected ---------------------------
MALFORMED = [
    (payloads.parse_call, None), (payloads.parse_call, {"not": "a call"}), (payloads.parse_call, [b"k", [], {}]),
    (payloads.parse_call, [b"k", {}, {}, {}]), (payloads.parse_call, [b"k", [], [], {}]),
    (payloads.parse_call, [7, [], {}, {}]), (payloads.parse_call, "abcd"),
    (payloads.parse_error, "boom"), (payloads.parse_error, {"type": 1, "message": "m"}),
    (payloads.parse_error, {"type": "T"}), (payloads.parse_error, {"type": "T", "message": "m", "traceback": 3}),
    (payloads.parse_credit, 0), (payloads.parse_credit, -1), (payloads.parse_credit, True),
    (payloads.parse_credit, 1.5), (payloads.parse_credit, None),
    (payloads.parse_stream_items, 5), (payloads.parse_stream_items, {"a": 1}),
    (payloads.parse_goodbye, None), (payloads.parse_goodbye, {"last_request": 1}),
    (payloads.parse_goodbye, {"reason": "x", "last_request": -1}),
    (payloads.parse_goodbye, {"reason": "x", "last_request": True}),
    (payloads.parse_subscribe_request, "not a map"), (payloads.parse_subscribe_request, {"id": b"x"}),
    (payloads.parse_subscribe_request, {"id": b"x", "host": "h", "port": 70000, "route": "r",
                                        "instance": "i", "events": ["e"], "lease": 1}),
    (payloads.parse_subscribe_request, {"id": b"x", "host": "h", "port": 9, "route": "r",
                                        "instance": "i", "events": "e", "lease": 1}),
    (payloads.parse_subscribe_request, {"id": 5, "host": "h", "port": 9, "route": "r",
                                        "instance": "i", "events": [], "lease": -1}),
    (payloads.parse_event, "abc"), (payloads.parse_event, ["e", {}, {}]), (payloads.parse_event, [1, [], {}]),
    (payloads.parse_delivery_receipt, [1, 2]), (payloads.parse_delivery_receipt, {"failed": -1}),
    (payloads.parse_delivery_receipt, {"handled": 1, "error": 5}),
]


@pytest.mark.parametrize("parser, payload", MALFORMED)
def test_parsers_refuse_malformed_payloads_with_a_protocol_error(parser, payload):
    with pytest.raises(ProtocolError, match=r"malformed .*(expected|needs|no )"):
        parser(payload)


@pytest.mark.parametrize("meta, events, message", [
    (["not", "a", "map"], [], "expected"), ({"to": "me"}, "not a list", "expected"),
    ({"to": "me", "lease": "l", "route": "r"}, [], "required"),
])
def test_malformed_deliveries_are_refused(meta, events, message):
    with pytest.raises(ProtocolError, match=message):
        payloads.parse_delivery(meta, events, "me")


def test_a_delivery_for_another_instance_is_not_looked_at_further():
    assert payloads.parse_delivery({"to": "someone else"}, [], "me") is None


def test_a_key_sent_as_text_is_its_ascii_bytes_and_options_not_a_map_are_none():
    assert payloads.parse_call(["abc", [], {}, None]) == (b"abc", [], {}, {})
    assert payloads.parse_call(["ü", [], {}, []]).key == b"?"


# -- the caller's inline copies ------------------------------------------------------------------
@pytest.fixture
def peer_end(monkeypatch) -> Iterator[socket.socket]:
    """The pool's next connection to ADDRESS is one end of a socket pair; yields the other end."""
    ours, theirs = socket.socketpair()
    monkeypatch.setattr(endpoints, "dial", lambda host, port, timeout, max_message:
                        FramedSocket(ours, f"{host}:{port}", max_message))
    yield theirs
    connection = client.POOL._connections.get(ADDRESS)
    if connection is not None:
        connection.close()
    theirs.close()


@pytest.mark.parametrize("timeout", [None, 5.0])        # the leader path, and the path with a deadline
def test_a_blocking_call_sends_the_canonical_call_frame(peer_end, timeout):
    key, args, kwargs = ids.key("tests.anything"), (1, "two", b"3"), {"x": [None, 1.5]}
    peer_end.sendall(frame(Kind.RESULT, 1, "done"))      # the reply, waiting before the call is made
    assert client.call(*ADDRESS, key, args, kwargs, timeout=timeout) == "done"
    assert received(peer_end) == frame(Kind.CALL, 1, payloads.call(key, list(args), kwargs))


def test_a_submitted_call_sends_the_canonical_call_frame(peer_end):
    key, args, kwargs = ids.key("tests.anything"), [[1, 2]], {}
    peer_end.sendall(frame(Kind.RESULT, 1, 3))
    assert client.submit(*ADDRESS, key, args, kwargs).result(timeout=5) == 3
    assert received(peer_end) == frame(Kind.CALL, 1, payloads.call(key, args, kwargs))


def test_an_awaited_call_sends_the_canonical_call_frame(peer_end):
    key, args, kwargs = ids.key("tests.anything"), ["a"], {"b": b"c"}
    peer_end.sendall(frame(Kind.RESULT, 1, None))
    assert asyncio.run(client.acall(*ADDRESS, key, args, kwargs, timeout=5)) is None
    assert received(peer_end) == frame(Kind.CALL, 1, payloads.call(key, args, kwargs))


def test_send_call_and_register_call_frame_as_the_builder_does(peer_end):
    connection = client.POOL.get(*ADDRESS)
    key, args, kwargs = ids.key("tests.anything"), [1], {"k": "v"}
    options = payloads.stream_options(8)
    first = connection.send_call(key, args, kwargs, client.Waiter(), options=options)
    second = connection.send_call(key, args, kwargs, client.Waiter(), kind=Kind.NOTIFY)
    assert received(peer_end, 2) == (frame(Kind.CALL, first, payloads.call(key, args, kwargs, options))
                                     + frame(Kind.NOTIFY, second, payloads.call(key, args, kwargs)))
    third, data = connection.register_call(key, args, kwargs, client.Waiter(), options=options)
    assert data == frame(Kind.CALL, third, payloads.call(key, args, kwargs, options))
    fourth, data = connection.register_call(key, args, kwargs, client.Waiter())
    assert data == frame(Kind.CALL, fourth, payloads.call(key, args, kwargs))


@given(json_values)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_callers_framing_is_encode_frame_and_packed_frame(peer_end, payload):
    connection = client.POOL.get(*ADDRESS)
    request_id, header, body = connection._frame(Kind.CALL, payload)
    assert header + body == frame(Kind.CALL, request_id, payload)
    request_id, header, body = connection._frame(Kind.CALL, wire.pack(payload), packed=True)
    assert header + body == b"".join(wire.packed_frame(Kind.CALL, request_id, wire.pack(payload),
                                                       max_message=LIMIT))


def test_the_callers_framing_refuses_what_encode_frame_refuses(peer_end):
    connection = client.POOL.get(*ADDRESS)
    connection.max_message = 100
    with pytest.raises(MessageTooLarge) as inline:
        connection._frame(Kind.CALL, [b"k", ["x" * 200], {}, {}])
    with pytest.raises(MessageTooLarge) as canonical:
        wire.encode_frame(Kind.CALL, 1, [b"k", ["x" * 200], {}, {}], max_message=100)
    assert str(inline.value) == str(canonical.value)


# -- the callee's inline copies ------------------------------------------------------------------
class _Peer:
    host = "127.0.0.1"

    def get_flag(self, name: str) -> wire.Flag:
        return wire.Flag(name, ids.encode_text(name))


INVALID = _Peer().get_flag("INVALID_CONNECTION")


@pytest.fixture(scope="module")
def callee() -> Iterator[tuple[inbound.InboundLink, socket.socket]]:
    """An InboundLink whose caller is the other end of a socket pair; it serves ``echo``."""
    ours, theirs = socket.socketpair()
    server = types.SimpleNamespace(peer=_Peer(), port=0, max_message=LIMIT, handler_slots=HandlerSlots(1),
                                   watchdog=types.SimpleNamespace(watch=lambda link: None))
    link = inbound.InboundLink(server, ours, "pair")
    link.framed = FramedSocket(ours, "pair", LIMIT)
    registry.CONNECTIONS[ECHO_KEY] = echo
    yield link, theirs
    del registry.CONNECTIONS[ECHO_KEY]
    link.close()
    theirs.close()


def canonical_reply(request_id: int, payload: Any) -> bytes:
    """What the callee answers a CALL with, by payloads.parse_call (``echo`` is the one connection)."""
    try:
        call = payloads.parse_call(payload)
    except ProtocolError as exc:
        return frame(Kind.ERROR, request_id, payloads.error(payloads.PROTOCOL_ERROR, str(exc)))
    if call.key != ECHO_KEY:
        return frame(Kind.RESULT, request_id, INVALID)
    return frame(Kind.RESULT, request_id, echo(*call.args, **call.kwargs))


keys = st.sampled_from([ECHO_KEY, ECHO_KEY.decode(), b"unknown", "unknown", "ünï", 7, None, [ECHO_KEY], 1.5])
no_stream = st.one_of(json_values, kwarg_maps).filter(lambda o: not (isinstance(o, dict) and o.get("stream")))
call_like = st.one_of(
    st.tuples(keys, arg_lists, kwarg_maps, no_stream).map(list),                     # mostly well formed
    st.tuples(keys, st.one_of(arg_lists, json_values), st.one_of(kwarg_maps, json_values), no_stream).map(list),
    st.lists(st.one_of(keys, json_values), max_size=6),                             # any array
    json_values, keys)                                                              # anything at all


@given(call_like)
@settings(max_examples=300, deadline=None)
def test_the_dispatchers_parse_agrees_with_parse_call(callee, payload):
    link, caller = callee
    if isinstance(payload, list) and len(payload) == 4 and isinstance(payload[3], dict):
        assume(not payload[3].get("stream"))
    payload = through_the_wire(payload)         # what the dispatcher gets is always decoded msgpack
    link._dispatch(9, payload, True, 0)
    assert received(caller) == canonical_reply(9, payload)


@pytest.mark.parametrize("payload", [
    None, 5, "abcd", b"abcd", {"not": "a call"}, {"a": 1, "b": 2, "c": 3, "d": 4}, [], [ECHO_KEY, [], {}],
    [ECHO_KEY, [], {}, {}, {}], [ECHO_KEY, {}, {}, {}], [ECHO_KEY, [], [], {}], [None, [], {}, {}],
    [ECHO_KEY.decode(), [1], {"a": 2}, None], [ECHO_KEY, [1], {}, "options as text"], ["ünï", [], {}, {}],
])
def test_the_dispatcher_answers_malformed_calls_as_parse_call_says(callee, payload):
    link, caller = callee
    link._dispatch(11, payload, True, 0)
    assert received(caller) == canonical_reply(11, payload)


def test_a_malformed_notify_gets_no_answer(callee):
    link, caller = callee
    link._dispatch(12, {"not": "a call"}, False, 0)
    link._dispatch(13, [ECHO_KEY, [], {}, {}], True, 0)        # the next frame on the wire is this reply
    assert received(caller) == canonical_reply(13, [ECHO_KEY, [], {}, {}])


@given(json_values, st.integers(min_value=0, max_value=wire.MAX_REQUEST_ID), st.booleans())
@settings(max_examples=100, deadline=None)
def test_the_callees_reply_send_is_encode_frame(callee, value, request_id, soon):
    link, caller = callee
    for kind in (Kind.RESULT, Kind.ERROR, Kind.STREAM_END):
        link._send(kind, request_id, value, soon=soon)
    assert received(caller, 3) == (frame(Kind.RESULT, request_id, value) + frame(Kind.ERROR, request_id, value)
                                   + frame(Kind.STREAM_END, request_id, value))


def test_a_reply_that_cannot_travel_is_answered_as_payloads_unsendable(callee):
    link, caller = callee
    with pytest.raises(TypeError) as refused:
        wire.pack(object())
    link._send(Kind.RESULT, 6, object())
    assert received(caller) == frame(Kind.ERROR, 6, payloads.unsendable(refused.value))
    big = "x" * 400
    with pytest.raises(MessageTooLarge) as too_large:
        wire.encode_frame(Kind.RESULT, 6, big, max_message=300)
    link.framed.max_message = 300           # room for the ERROR that says so, not for the result
    try:
        link._send(Kind.RESULT, 6, big)
    finally:
        link.framed.max_message = LIMIT
    assert received(caller) == frame(Kind.ERROR, 6, payloads.unsendable(too_large.value))


# -- the publisher's inline copies ---------------------------------------------------------------
def test_a_published_event_is_packed_as_payloads_event():
    publisher = events.Publisher()
    record = events.Subscriber(b"sub", "127.0.0.1", 9, "r", "them", 8)
    record.busy = True                  # nothing is sent: only the queued bytes are looked at
    publisher.routes = {"tick": (record,)}
    assert publisher.publish("tick", [1, b"2"], {"three": [3.0]}) == 1
    assert list(record.queue) == [wire.pack(payloads.event("tick", [1, b"2"], {"three": [3.0]}))]


def test_a_delivery_is_the_canonical_deliver_call_and_its_receipt_is_parsed(peer_end):
    publisher = events.Publisher()
    record = events.Subscriber(b"sub", *ADDRESS, "route", "them", 8)
    record.busy = True
    publisher.routes = {"tick": (record,)}
    batch = [payloads.event("tick", [n], {"n": n}) for n in range(3)]
    for item in batch:
        publisher.publish(*item)
    publisher._send(record)             # what a delivery thread runs
    me = running.running()
    meta = payloads.deliver_meta(me.id if me is not None else b"", shared.INSTANCE, "them", record.lease,
                                 "route", 1)
    assert received(peer_end) == frame(Kind.CALL, 1, payloads.deliver_call(meta, batch))
    peer_end.sendall(frame(Kind.RESULT, 1, payloads.delivery_receipt(3, 1, "ValueError: x")))
    deadline = time.monotonic() + 5
    while record.busy and time.monotonic() < deadline:
        time.sleep(0.01)                # the connection's reader hands the receipt over
    assert (record.delivered, record.failed, record.busy) == (3, 1, False)


def test_the_subscriber_answers_with_the_receipt_builders():
    leases = subscriber.Leases()
    meta = payloads.deliver_meta(b"pub", "them", shared.INSTANCE, "lease", "route", 1)
    batch = [payloads.event("nobody-listens", [], {}), ["not", "an event"]]
    assert leases.deliver(meta, batch) == payloads.delivery_receipt(2, 1, "malformed event")
    assert leases.deliver({**meta, "to": "another"}, batch) == payloads.delivery_unknown()
    with pytest.raises(ValueError, match="lease, route and seq"):
        leases.deliver({**meta, "seq": "one"}, batch)
