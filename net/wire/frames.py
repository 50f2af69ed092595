"""The net wire protocol, without any I/O: bytes in, frames out (and back).

A connection starts with a 6-byte preamble from each side, then frames::

    preamble  0      3        4          6
              +------+--------+----------+
              | NET  | version|  modes   |      b"NET" + u8 version + u16 security modes
              +------+--------+----------+

``modes`` says which protections the sender *requires* (bit 0: shared key,
bit 1: TLS). Nothing is negotiated: each side refuses a peer whose modes
differ from its own, so tampering with the bits can only cause a refusal,
never a downgrade. After the preambles, a TLS connection starts TLS, then a
secured connection finishes with AUTH frames (see :mod:`net.auth`).

    frame     0             4      5               9                     9+length
              +-------------+------+---------------+---------------------+
              | length (u32)| kind | request id u32| msgpack payload ... |
              +-------------+------+---------------+---------------------+

All integers are big-endian. ``length`` counts only the payload and must not
exceed the receiver's ``max_message`` (NET_MAX_MESSAGE); a larger prefix is a
:class:`ProtocolError` *before* any of the payload is buffered. ``request id``
pairs replies, stream items and cancels with the call that caused them, so
many calls share one connection at once (0 = not tied to a call).

Payloads are msgpack (bin type for ``bytes``, str for UTF-8 text). Nothing
received is ever unpickled or evaluated. The only extension type is a *flag*
(ext code 1, the flag's name as UTF-8), returned by a handler through
``Peer().get_flag(name)``; any other extension is a protocol error.
"""
from __future__ import annotations

import inspect
import struct
import threading
from collections import deque
from collections.abc import Iterator
from enum import IntEnum
from typing import Any, NamedTuple

import msgpack

from ..errors import AuthError, FrameTooLarge, MessageTooLarge, NetError, ProtocolError, VersionMismatch
from .ids import encode_text

VERSION = 1
MAGIC = b"NET"
PREAMBLE = struct.Struct("!3sBH")
PREAMBLE_SIZE = PREAMBLE.size          # 6
HEADER = struct.Struct("!IBI")
HEADER_SIZE = HEADER.size              # 9
FLAG_EXT = 1
MAX_REQUEST_ID = 0xFFFFFFFF


class Kind(IntEnum):
    """What a frame carries; the request id says which call it belongs to.

    The payload of each kind is built and parsed in :mod:`net.wire.payloads`, whose
    docstring is the schema table.
    """

    HELLO = 1         # either side, id 0: {"id": peer id, ...}; first frame after the preamble
    CALL = 2          # caller -> callee: [connection, args, kwargs, options]
    RESULT = 3        # callee -> caller: the return value
    ERROR = 4         # callee -> caller: {"type", "message", "traceback"}
    STREAM_ITEM = 5   # callee -> caller: a list of one or more items of a streamed (generator) result
    STREAM_END = 6    # callee -> caller: the stream finished
    CANCEL = 7        # caller -> callee: stop working on this request
    CREDIT = 8        # caller -> callee: may send this many more stream items
    PING = 9          # either side: are you alive? (answered by PONG with the same id)
    PONG = 10
    NOTIFY = 11       # caller -> callee: like CALL but no reply is wanted (event delivery)
    AUTH = 12         # either side: authentication handshake messages
    GOODBYE = 13      # either side: closing; payload {"reason", "last_request"}


_KIND_BY_VALUE: dict[int, Kind] = {kind.value: kind for kind in Kind}   # Kind(n) is slow


class Frame(NamedTuple):
    """One decoded frame (a tuple: cheap to build on the hot path)."""

    kind: Kind
    request_id: int
    payload: Any


_new_frame = tuple.__new__      # Frame(...) runs Python code per frame; this is the same tuple, in C


class Flag(str):
    """A flag id returned by a handler; travels as a msgpack extension, not as text."""

    __slots__ = ("name",)
    name: str

    def __new__(cls, name: str, encoded: str) -> Flag:
        flag = super().__new__(cls, encoded)
        flag.name = name
        return flag


def _default(obj: Any) -> Any:
    if isinstance(obj, Flag):
        return msgpack.ExtType(FLAG_EXT, obj.name.encode("utf-8"))
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if inspect.isgenerator(obj) or inspect.isasyncgen(obj):
        raise TypeError("a generator is not one value: its connection streams, so call it as a stream "
                        "(for x in f(peer=P), async for x in f.acall(peer=P), or f.stream(peer=P))")
    raise TypeError(f"cannot send a {type(obj).__name__} over net: only JSON types and bytes travel "
                    f"(convert it in the function, or in an @net.event hook)")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == FLAG_EXT:
        name = data.decode("utf-8")
        return Flag(name, encode_text(name))
    raise ProtocolError(f"unknown msgpack extension type {code}")


_unpackb = msgpack.unpackb      # options as in :func:`unpack` wherever it is called
_packers = threading.local()    # a Packer is not thread-safe, and building one per call is slow


def pack(value: Any) -> bytes:
    """msgpack-encode one payload value (raises TypeError for types that cannot travel)."""
    if type(value) is Flag:     # Flag subclasses str, so msgpack would send it as plain text
        value = _default(value)
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, default=_default)
    try:
        packed: bytes = packer.pack(value)
        return packed
    except BaseException:
        _packers.packer = msgpack.Packer(use_bin_type=True, default=_default)   # reset its buffer
        raise


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """Decode one payload; any malformation becomes :class:`ProtocolError`."""
    try:
        return _unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook)
    except ProtocolError:
        raise
    except Exception as exc:    # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"undecodable payload: {exc.__class__.__name__}: {exc}") from None


def array_header(length: int) -> bytes:
    """The msgpack header of an array of ``length`` items.

    Followed by that many already-packed items it is a packed list, so a value
    packed once (an event) can go into many messages without re-encoding it.
    """
    if length < 16:
        return bytes((0x90 | length,))
    if length < 0x10000:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def too_large(size: int, max_message: int) -> MessageTooLarge:
    """The error for a message of ``size`` bytes over the sender's limit."""
    return MessageTooLarge(f"message of {size:,} bytes exceeds the limit of {max_message:,} "
                           f"bytes (NET_MAX_MESSAGE)")


def packed_frame(kind: Kind, request_id: int, body: bytes, *, max_message: int) -> list[bytes]:
    """Frame an already msgpack-encoded payload (see :func:`array_header`)."""
    if len(body) > max_message:
        raise too_large(len(body), max_message)
    return [HEADER.pack(len(body), kind, request_id), body]


MODE_KEY = 0x0001       # preamble modes: this side requires the shared-key handshake
MODE_TLS = 0x0002       # ... this side requires mutual TLS


def describe_modes(modes: int) -> str:
    """Human words for a preamble's modes, for error messages."""
    parts = [name for bit, name in ((MODE_TLS, "mutual TLS"), (MODE_KEY, "a shared key")) if modes & bit]
    unknown = modes & ~(MODE_KEY | MODE_TLS)
    if unknown:
        parts.append(f"unknown modes 0x{unknown:04x}")
    return " + ".join(parts) if parts else "no security (plain)"


def preamble(modes: int = 0) -> bytes:
    return PREAMBLE.pack(MAGIC, VERSION, modes)


def check_preamble(data: bytes) -> int:
    """Validate the other side's 6-byte preamble; return the security modes it requires."""
    if len(data) != PREAMBLE_SIZE:
        raise ProtocolError(f"short preamble: {len(data)} of {PREAMBLE_SIZE} bytes")
    magic, version, modes = PREAMBLE.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"not a net peer (preamble starts with {magic!r})")
    if version != VERSION:
        raise VersionMismatch(f"other side speaks net protocol version {version}, this side {VERSION}")
    return int(modes)


def encode_frame(kind: Kind, request_id: int, payload: Any = None, *,
                 max_message: int) -> list[bytes]:
    """Frame one message. Returns [header, body] so large bodies are never copied to join them."""
    body = pack(payload)
    if len(body) > max_message:
        raise too_large(len(body), max_message)
    return [HEADER.pack(len(body), kind, request_id), body]


def encode_items(request_id: int, packed_items: list[bytes], *, max_message: int) -> list[bytes]:
    """Frame a STREAM_ITEM: a msgpack array of already-packed items (each packed once, by :func:`pack`)."""
    array = array_header(len(packed_items))
    body = array + b"".join(packed_items)
    if len(body) > max_message:
        raise MessageTooLarge(f"stream item of {len(body):,} bytes exceeds the limit of {max_message:,} "
                              f"bytes (NET_MAX_MESSAGE)")
    return [HEADER.pack(len(body), Kind.STREAM_ITEM, request_id), body]


def frame_bytes(kind: Kind, request_id: int, payload: Any = None, *, max_message: int) -> bytes:
    """Frame one message as a single bytes object (handy for small frames and tests)."""
    return b"".join(encode_frame(kind, request_id, payload, max_message=max_message))


class FrameDecoder:
    """Accumulates received bytes and yields complete frames.

    Never buffers more than one header plus ``max_message`` bytes of a frame
    beyond what it has already returned: the length is checked as soon as the
    header is complete. After a :class:`ProtocolError` the decoder is dead;
    the connection must be dropped.
    """

    def __init__(self, max_message: int, expect_preamble: int | None = None, where: str = "the other side"):
        self.max_message = max_message
        self._buffer = bytearray()
        self._need: tuple[int, int, int] | None = None     # (length, kind, request id) of the pending frame
        self._broken: NetError | None = None
        # A caller that sent its preamble without waiting for the answer (plain mode) expects
        # the other side's preamble, with these modes, before the first frame.
        self.expect_preamble = expect_preamble
        self.where = where
        # Frames decoded straight from fed data, not yet taken (see :meth:`feed`); others may
        # look at it, only next_frame and drain take from it.
        self.ready_frames: deque[Frame] = deque()

    def _take_preamble(self) -> bool:
        """Consume and check the awaited preamble; False while it is incomplete."""
        buffer = self._buffer
        if len(buffer) < PREAMBLE_SIZE:
            return False
        try:
            theirs = check_preamble(bytes(buffer[:PREAMBLE_SIZE]))
            if theirs != self.expect_preamble:
                raise AuthError(f"{self.where} uses {describe_modes(theirs)} but this process uses "
                                f"{describe_modes(self.expect_preamble or 0)}: set the same "
                                f"NET_SECRET / NET_TLS_* on both sides")
        except NetError as exc:
            self._broken = exc
            buffer.clear()
            raise
        del buffer[:PREAMBLE_SIZE]
        self.expect_preamble = None
        return True

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def wanted(self) -> int:
        """How many more bytes would complete the frame in progress (a read-size hint)."""
        if self._need is None:
            return max(HEADER_SIZE - len(self._buffer), 1)
        return max(HEADER_SIZE + self._need[0] - len(self._buffer), 1)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take received bytes (``data`` may be reused afterwards); :meth:`next_frame` returns them.

        When nothing is buffered (the usual case: each read holds whole frames),
        complete frames are decoded straight from ``data`` without copying it
        into the buffer. Whatever that fast path does not like (an oversized or
        unknown frame, a bad payload) is left in the buffer, where
        :meth:`next_frame` raises for it after returning the frames before it.
        """
        if self._broken is not None:
            raise self._broken
        if self._buffer or self.expect_preamble is not None:
            self._buffer += data
        else:
            self.ready_frames.extend(self._split(data))

    def decode(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """:meth:`feed` ``data``, then return every complete frame (:meth:`drain`) in one step."""
        if self._buffer or self.ready_frames or self.expect_preamble is not None or self._broken is not None:
            self.feed(data)
            return self.drain()
        frames = self._split(data)
        if self._buffer:                # a partial frame, or one the fast path refused: raise now
            while (frame := self.next_frame()) is not None:
                frames.append(frame)
        return frames

    def _split(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """The complete frames at the start of ``data``; what follows them goes to the buffer."""
        frames = []
        size = len(data)
        offset = 0
        while size - offset >= HEADER_SIZE:
            length, kind, request_id = HEADER.unpack_from(data, offset)
            end = offset + HEADER_SIZE + length
            known = _KIND_BY_VALUE.get(kind)
            if end > size or length > self.max_message or known is None:
                break
            try:
                payload = _unpackb(data[offset + HEADER_SIZE:end], raw=False, strict_map_key=False,
                                   ext_hook=_ext_hook)
            except Exception:           # left to next_frame, which raises the ProtocolError
                break
            frames.append(_new_frame(Frame, (known, request_id, payload)))
            offset = end
        if offset < size:
            self._buffer += data[offset:]
        return frames

    def frames(self) -> Iterator[Frame]:
        """Yield every complete frame buffered so far."""
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame

    def drain(self) -> list[Frame]:
        """Every complete frame received so far, as a list (raises like :meth:`next_frame`)."""
        ready = self.ready_frames
        if ready:
            frames = list(ready)
            ready.clear()
        else:
            frames = []
        if self._buffer or self._broken is not None:
            while (frame := self.next_frame()) is not None:
                frames.append(frame)
        return frames

    def next_frame(self) -> Frame | None:
        if self.ready_frames:
            return self.ready_frames.popleft()
        if self._broken is not None:
            raise self._broken
        if self.expect_preamble is not None and not self._take_preamble():
            return None
        buffer = self._buffer
        if self._need is None:
            if len(buffer) < HEADER_SIZE:
                return None
            length, kind, request_id = HEADER.unpack_from(buffer)
            if length > self.max_message:
                self._broken = FrameTooLarge(
                    f"frame announces {length:,} bytes, over the limit of {self.max_message:,}",
                    kind=kind, request_id=request_id, length=length, limit=self.max_message)
                self._buffer.clear()
                raise self._broken
            if kind not in _KIND_BY_VALUE:
                self._fail(f"unknown frame kind {kind}")
            self._need = (length, kind, request_id)
        length, kind, request_id = self._need
        end = HEADER_SIZE + length
        if len(buffer) < end:
            return None
        body = buffer[HEADER_SIZE:end]      # a slice copy; a memoryview here makes `del` slow
        del buffer[:end]
        self._need = None
        try:
            payload = unpack(body)
        except ProtocolError as exc:
            self._broken = exc
            raise
        return _new_frame(Frame, (_KIND_BY_VALUE[kind], request_id, payload))

    def _fail(self, message: str) -> None:
        self._broken = ProtocolError(message)
        self._buffer.clear()
        raise self._broken
