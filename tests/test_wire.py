"""The wire protocol alone: bytes in, frames out, no sockets."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from net.errors import MessageTooLarge, ProtocolError, VersionMismatch
from net.wire import frames as wire
from net.wire.frames import Frame, FrameDecoder, Kind

LIMIT = 1 << 20

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)


def roundtrip(kind, request_id, payload, chunk=None):
    data = wire.frame_bytes(kind, request_id, payload, max_message=LIMIT)
    decoder = FrameDecoder(LIMIT)
    frames = []
    step = chunk or len(data)
    for i in range(0, len(data), step):
        decoder.feed(data[i:i + step])
        frames.extend(decoder.frames())
    return frames


@given(json_values, st.integers(min_value=0, max_value=wire.MAX_REQUEST_ID))
@settings(max_examples=200, deadline=None)
def test_any_json_value_and_bytes_round_trip(value, request_id):
    [frame] = roundtrip(Kind.RESULT, request_id, value)
    assert frame == Frame(Kind.RESULT, request_id, value)


def test_byte_by_byte_feeding_gives_the_same_frames():
    payload = {"args": [1, "two", b"\x00\xff"], "text": "héllo ✓"}
    assert roundtrip(Kind.CALL, 7, payload, chunk=1) == [Frame(Kind.CALL, 7, payload)]


def test_several_frames_in_one_chunk():
    data = b"".join(wire.frame_bytes(Kind.RESULT, i, i * 10, max_message=LIMIT) for i in range(5))
    decoder = FrameDecoder(LIMIT)
    decoder.feed(data)
    assert [f.payload for f in decoder.frames()] == [0, 10, 20, 30, 40]


def test_huge_length_prefix_is_refused_before_buffering():
    decoder = FrameDecoder(LIMIT)
    decoder.feed(struct.pack("!IBI", 0xFFFFFFFF, Kind.CALL, 1))
    with pytest.raises(ProtocolError, match="over the limit"):
        decoder.next_frame()
    assert decoder.buffered == 0
    with pytest.raises(ProtocolError):      # a broken decoder stays broken
        decoder.feed(b"more")


def test_unknown_kind_is_a_protocol_error():
    decoder = FrameDecoder(LIMIT)
    decoder.feed(struct.pack("!IBI", 1, 200, 1) + b"\xc0")
    with pytest.raises(ProtocolError, match="unknown frame kind"):
        decoder.next_frame()


def test_garbage_payload_is_a_protocol_error():
    decoder = FrameDecoder(LIMIT)
    decoder.feed(struct.pack("!IBI", 1, Kind.RESULT, 1) + b"\xc1")    # 0xc1: never used in msgpack
    with pytest.raises(ProtocolError, match="undecodable"):
        decoder.next_frame()


def test_truncated_frame_waits_for_more():
    data = wire.frame_bytes(Kind.RESULT, 1, "x" * 100, max_message=LIMIT)
    decoder = FrameDecoder(LIMIT)
    decoder.feed(data[:-1])
    assert decoder.next_frame() is None
    assert decoder.wanted() == 1
    decoder.feed(data[-1:])
    assert decoder.next_frame().payload == "x" * 100


def test_sender_refuses_oversized_messages():
    with pytest.raises(MessageTooLarge, match="exceeds the limit"):
        wire.encode_frame(Kind.RESULT, 1, b"x" * 2000, max_message=1000)


def test_unsendable_types_fail_on_the_sender_with_a_clear_message():
    with pytest.raises(TypeError, match="cannot send a object"):
        wire.pack(object())


def test_flags_travel_as_extension_not_text():
    flag = wire.Flag("NULL", "TlVMTA==")
    decoded = wire.unpack(wire.pack(flag))
    assert isinstance(decoded, wire.Flag) and decoded.name == "NULL" and decoded == "TlVMTA=="
    plain = wire.unpack(wire.pack("TlVMTA=="))     # the same text is *not* a flag
    assert not isinstance(plain, wire.Flag)


def test_unknown_extension_is_a_protocol_error():
    import msgpack
    with pytest.raises(ProtocolError, match="extension"):
        wire.unpack(msgpack.packb(msgpack.ExtType(42, b"x")))


def test_preamble_checks_magic_and_version():
    wire.check_preamble(wire.preamble())
    with pytest.raises(VersionMismatch, match="version 9"):
        wire.check_preamble(wire.PREAMBLE.pack(b"NET", 9, 0))
    with pytest.raises(ProtocolError, match="not a net peer"):
        wire.check_preamble(b"GET / ")


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_only_ever_raise_protocol_error(data):
    decoder = FrameDecoder(1024)
    try:
        decoder.feed(data)
        list(decoder.frames())
    except ProtocolError:
        pass
    assert decoder.buffered <= wire.HEADER_SIZE + 1024 + len(data)


# -- fuzzing the decoder: whole input, byte by byte, allocation bounded ------------------------------
def decode_all(data, limit, chunk=None):
    """Feed ``data`` (whole, or ``chunk`` bytes at a time); return (frames, error type or None)."""
    decoder = FrameDecoder(limit)
    frames = []
    step = chunk or max(len(data), 1)
    try:
        for i in range(0, len(data), step):
            decoder.feed(data[i:i + step])
            frames.extend(decoder.frames())
            assert decoder.buffered <= wire.HEADER_SIZE + limit, "buffered past one frame"
    except ProtocolError as exc:
        return frames, type(exc)
    return frames, None


frame_parts = st.builds(
    lambda kind, request_id, payload: wire.frame_bytes(kind, request_id, payload, max_message=LIMIT),
    st.sampled_from(list(Kind)), st.integers(0, wire.MAX_REQUEST_ID), json_values)


@st.composite
def mutated_streams(draw):
    """Valid frames, then damaged: bytes flipped, cut, spliced with garbage."""
    data = bytearray(b"".join(draw(st.lists(frame_parts, min_size=1, max_size=4))))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@given(st.one_of(st.binary(max_size=600), mutated_streams()), st.integers(1, 7))
@settings(max_examples=150, deadline=None)
def test_whole_and_chunked_decoding_agree_and_only_raise_protocol_error(data, chunk):
    whole = repr(decode_all(data, 4096))                # repr: NaN payloads compare equal
    assert repr(decode_all(data, 4096, chunk=chunk)) == whole
    assert repr(decode_all(data, 4096, chunk=1)) == whole


@given(mutated_streams())
@settings(max_examples=60, deadline=None)
def test_decoding_never_allocates_much_more_than_the_input(data):
    import tracemalloc
    tracemalloc.start()
    try:
        decode_all(data, LIMIT, chunk=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024 + 20 * len(data), f"peak {peak} bytes for {len(data)} bytes of input"


@pytest.mark.parametrize("payload", [
    b"\xdd\xff\xff\xff\xff",                        # array announcing 4 billion items, none sent
    b"\xdf\xff\xff\xff\xff",                        # map announcing 4 billion pairs
    b"\xc6\xff\xff\xff\xff",                        # bin announcing 4 GiB
    b"\x91" * 100_000 + b"\xc0",                    # 100,000 nested arrays
    b"\xd4\x02\x00",                                # an extension type net does not define
    b"\xd4\x01\xff",                                # flag extension holding invalid UTF-8
], ids=["huge-array", "huge-map", "huge-bin", "deep-nesting", "unknown-ext", "bad-flag-name"])
def test_hostile_msgpack_payloads_are_protocol_errors_without_big_allocations(payload):
    import tracemalloc
    data = struct.pack("!IBI", len(payload), Kind.CALL, 1) + payload
    tracemalloc.start()
    try:
        frames, error = decode_all(data, 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error is ProtocolError and frames == []
    assert peak < 4 * len(data) + 256 * 1024


def test_frames_before_a_bad_one_are_delivered_then_the_error():
    """The decode fast path never drops good frames that share a read with a bad one."""
    good = b"".join(wire.frame_bytes(Kind.RESULT, i, i, max_message=LIMIT) for i in (1, 2))
    bad = struct.pack("!IBI", 1, 200, 3) + b"\xc0"              # unknown frame kind
    decoder = FrameDecoder(LIMIT)
    decoder.feed(good + bad)
    assert [decoder.next_frame().payload for _ in range(2)] == [1, 2]
    with pytest.raises(ProtocolError, match="unknown frame kind"):
        decoder.next_frame()


def test_decode_returns_whole_frames_and_keeps_a_partial_tail():
    frames = [wire.frame_bytes(Kind.RESULT, i, "x" * i, max_message=LIMIT) for i in range(1, 4)]
    data = b"".join(frames)
    cut = len(frames[0]) + len(frames[1]) + 5                  # inside the third frame's payload
    decoder = FrameDecoder(LIMIT)
    assert [f.request_id for f in decoder.decode(data[:cut])] == [1, 2]
    assert decoder.buffered == 5
    assert decoder.decode(data[cut:]) == [Frame(Kind.RESULT, 3, "xxx")]
    assert decoder.buffered == 0


def test_decode_raises_at_once_for_a_bad_payload_behind_good_frames():
    """No waiting for another read (which may never come) to report a bad frame already here."""
    good = wire.frame_bytes(Kind.RESULT, 1, "ok", max_message=LIMIT)
    bad = struct.pack("!IBI", 1, Kind.RESULT, 2) + b"\xc1"     # 0xc1: never used in msgpack
    decoder = FrameDecoder(LIMIT)
    with pytest.raises(ProtocolError, match="undecodable"):
        decoder.decode(good + bad)
    # The connection is dropped on that error; the decoder stays dead.
    with pytest.raises(ProtocolError):
        decoder.decode(good)


def test_a_read_that_reuses_its_buffer_does_not_change_decoded_frames():
    """Frames decoded straight from a receive buffer must not point into it."""
    buffer = bytearray(wire.frame_bytes(Kind.RESULT, 1, [b"abc", "d"], max_message=LIMIT))
    decoder = FrameDecoder(LIMIT)
    [frame] = decoder.decode(memoryview(buffer))
    buffer[:] = bytes(len(buffer))
    assert frame.payload == [b"abc", "d"]
