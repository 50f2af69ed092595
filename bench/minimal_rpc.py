"""The floor for any msgpack RPC in Python: net's wire format, none of its features.

A client and a threaded server that speak net's framing (preamble, 9-byte
header, msgpack ``[key, args, kwargs, options]`` calls) and do nothing else:
no pooling, no waiters or deadlines, no heartbeat, no handler registry,
limits, cancellation or hand-off. ``bench/core.py`` measures it next to the
raw socket so the cost of net's features on each side shows separately
(net client -> this server, this client -> net server).

    python bench/minimal_rpc.py serve PORT     # the echo server (a separate process)
"""
from __future__ import annotations

import os
import socket
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from baseline import recv_exactly, serve

from net.wire import frames as wire

HEADER = wire.HEADER


def _serve_connection(conn: socket.socket) -> None:
    """Echo the first argument of every CALL; answer PINGs. Whole frames per read (small calls)."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    packer = msgpack.Packer(use_bin_type=True)
    view = memoryview(bytearray(1 << 20))
    try:
        recv_exactly(conn, wire.PREAMBLE_SIZE)
        conn.sendall(wire.preamble(0))
        while True:
            count = conn.recv_into(view)
            if not count:
                return
            offset = 0
            while offset < count:
                length, kind, request_id = HEADER.unpack_from(view, offset)
                body = view[offset + wire.HEADER_SIZE:offset + wire.HEADER_SIZE + length]
                offset += wire.HEADER_SIZE + length
                if kind == wire.Kind.PING:
                    reply_kind, reply = wire.Kind.PONG, packer.pack(None)
                else:
                    reply_kind, reply = wire.Kind.RESULT, packer.pack(msgpack.unpackb(body)[1][0])
                conn.sendall(HEADER.pack(len(reply), reply_kind, request_id) + reply)
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()


class MinimalClient:
    """One connection, one call at a time, small values only (whole frames per read)."""

    def __init__(self, port: int, key: bytes):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(wire.preamble(0))
        wire.check_preamble(recv_exactly(self.sock, wire.PREAMBLE_SIZE))
        self.key = key
        self.request_id = 0
        self.packer = msgpack.Packer(use_bin_type=True)
        self.view = memoryview(bytearray(1 << 20))

    def call(self, value: object) -> object:
        self.request_id += 1
        body = self.packer.pack([self.key, [value], {}, {}])
        self.sock.sendall(HEADER.pack(len(body), wire.Kind.CALL, self.request_id) + body)
        count = self.sock.recv_into(self.view)
        while count < wire.HEADER_SIZE:
            count += self.sock.recv_into(self.view[count:])
        length = HEADER.unpack_from(self.view)[0]
        while count < wire.HEADER_SIZE + length:
            count += self.sock.recv_into(self.view[count:])
        return msgpack.unpackb(self.view[wire.HEADER_SIZE:wire.HEADER_SIZE + length])

    def close(self) -> None:
        self.sock.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), _serve_connection)
    else:
        sys.exit("usage: minimal_rpc.py serve PORT")
