"""What type checkers see of net's public API (checked by mypy in CI, never run).

A line whose comment is "E:" and an error code must be a mypy error of that code:
tests/test_typing.py runs mypy on this file and checks each expected error, and that
no other line errors.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import net


@net.connect()
def render(frame: int) -> str:
    return f"rendered {frame}"


@net.connect("Tagged")
def scale(value: float, factor: float = 2.0) -> float:
    return value * factor


@net.connect
def bare(name: str) -> bytes:
    return name.encode()


@net.connect()
def frames(count: int) -> Iterator[int]:
    yield from range(count)


def typed_peer(p: net.Peer) -> int | None:
    return p.port


def uses(p: net.Peer) -> None:
    local: str = render(1)
    remote: str = render(1, peer=p)
    by_id: str = render(2, peer=p.id)
    future: concurrent.futures.Future[str] = render.submit(1, peer=p)
    scaled: float = scale(1.5, factor=3.0)
    raw: bytes = bare("x")
    items: Iterator[int] = frames(3)
    render("x")                             # E: call-overload
    render(1, 2)                            # E: call-overload
    wrong: int = render(1)                  # E: assignment
    wrong_future: concurrent.futures.Future[int] = render.submit(1, peer=p)   # E: assignment
    del local, remote, by_id, future, scaled, raw, items, wrong, wrong_future


async def uses_async(p: net.Peer) -> None:
    result: str = await render.acall(1, peer=p)
    wrong: int = await render.acall(1, peer=p)                              # E: assignment
    del result, wrong


def settings() -> None:
    port: int = net.PORT_START
    deadline: float | None = net.TIMEOUT
    group: str | None = net.GROUP
    net.TIMEOUT = 2.5
    net.PORT_START = "3010"                 # E: assignment
    bad: str = net.TIMEOUT                  # E: assignment
    del port, deadline, group, bad


def errors() -> None:
    try:
        render(1, peer="127.0.0.1:3010")
    except net.RemoteError as exc:
        kind: str = exc.remote_type
        del kind
    except net.NetError:
        pass


@net.event("frame_done")
def frame_done(frame: int) -> tuple[list[Any], dict[str, Any]]:
    return [frame], {}


def events() -> None:
    count: int = frame_done(3)
    frame_done("three")                     # E: arg-type
    del count


def peer_type() -> None:
    me: net.Peer = net.Peer()
    typed_peer(me)
    other: net.Peer = net.peer._Peer(launch=False, test=True)
    typed_peer(other)
    asyncio.run(uses_async(me))
