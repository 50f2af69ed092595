"""Streamed results: a connection written as a generator sends its items as they are produced.

Wire (see docs/protocol.md): the caller sends CALL with ``options["stream"] = window``;
the callee answers with STREAM_ITEM frames (each a list of one or more items),
then STREAM_END, or ERROR if the generator raised. The callee may send at most
``window`` items ahead of what the caller has consumed; the caller hands
back credit with CREDIT frames as its user consumes items (back-pressure).
CANCEL from the caller (``break``, ``close()``, garbage collection, timeout,
task cancellation) closes the remote generator, so its ``finally`` runs.

Caller side, :mod:`net.stream_iterators`: :class:`RemoteStream` (``for x in
f(peer=P)``) and :class:`AsyncRemoteStream` (``async for x in f.acall(peer=P)``),
both fed by a :class:`StreamReceiver` registered as the request's pending reply.

Callee side, :mod:`net.stream_runners`: :func:`serve` starts a
:class:`SyncStreamRunner` (a plain generator, run in slices on the worker pool)
or an :class:`AsyncStreamRunner` (a task on the peer's loop); :func:`credit`
lets it run further ahead.

This module says whether a function streams, and re-exports both sides.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from .stream_iterators import AsyncRemoteStream, RemoteStream, StreamReceiver
from .stream_runners import (BATCH_BYTES, BATCH_ITEMS, FLUSH_DELAY, WINDOW_BYTES, AsyncStreamRunner,
                             SyncStreamRunner, _Runner, credit, serve)

__all__ = ["is_streaming", "RemoteStream", "AsyncRemoteStream", "StreamReceiver", "serve", "credit",
           "SyncStreamRunner", "AsyncStreamRunner", "_Runner",
           "BATCH_ITEMS", "BATCH_BYTES", "FLUSH_DELAY", "WINDOW_BYTES"]


def is_streaming(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` remotely yields a stream (it is a generator function)."""
    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
