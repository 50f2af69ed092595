"""The protocol without I/O: frames, payload shapes, the codec, the preamble, the key handshake as a
state machine, peer ids and names. Imports nothing of net but ``errors``; testable and fuzzable with plain bytes.
"""
