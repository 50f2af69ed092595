"""atheris harness for the shared-key handshake state machine (not part of the test run).

    python fuzz/fuzz_auth.py -max_total_time=60          # from the repository root

Each input is a stream of msgpack handshake messages thrown at a server or a
client state machine. The property: only AuthError is ever raised, and
without the key nothing authenticates.
"""
import os
import sys

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

with atheris.instrument_imports():
    from net.errors import AuthError, ProtocolError
    from net.wire import frames as wire, handshake as auth

KEY = b"the fuzzer never learns this key"


def one_input(data: bytes) -> None:
    if not data:
        return
    as_server, keyed = data[0] & 1, data[0] & 2
    secret = KEY if keyed else None
    machine = auth.ServerHandshake(secret) if as_server else auth.ClientHandshake(secret)
    machine.start()
    decoder = wire.FrameDecoder(auth.MAX_MESSAGE)
    try:
        decoder.feed(data[1:])
        for frame in decoder.frames():
            machine.receive(frame.payload)
    except (AuthError, ProtocolError):
        return
    # A keyed server can only be convinced by a proof made with KEY.
    assert not (keyed and as_server and machine.done)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
