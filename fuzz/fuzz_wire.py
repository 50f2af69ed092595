"""atheris harness for the wire decoder (not part of the test run).

    python fuzz/fuzz_wire.py -max_total_time=60          # from the repository root

The property: whatever the bytes and however they are split, the decoder only
raises ProtocolError and never buffers more than one header + NET_MAX_MESSAGE.
"""
import os
import sys

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

with atheris.instrument_imports():
    from net.errors import ProtocolError
    from net.wire import frames as wire

LIMIT = 4096


def one_input(data: bytes) -> None:
    if not data:
        return
    step = data[0] % 16 + 1                 # the first byte chooses how the rest is split
    decoder = wire.FrameDecoder(LIMIT)
    try:
        for i in range(1, len(data), step):
            decoder.feed(data[i:i + step])
            for _ in decoder.frames():
                pass
            assert decoder.buffered <= wire.HEADER_SIZE + LIMIT
    except ProtocolError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
