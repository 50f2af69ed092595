"""The ``net`` subcommands that run a peer in this process: serve, listen, demo.

``serve`` and ``listen`` keep their peer running until Ctrl-C/SIGTERM (or
``--duration``), then close it and exit 0; :func:`wait_for_stop` is that
wait. Settings a command implies (the user's ``--host``, a loopback
listener for a loopback publisher) are applied before the peer starts.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from .args import EXIT_OK, add_json_option, add_peer_options, count, deadline, seconds, target
from .output import connections_table, console, print_json, say


def wait_for_stop(duration: float | None, stop: threading.Event | None = None) -> str:
    """Block until SIGINT/SIGTERM (or ``duration``, or ``stop`` set); returns what ended it."""
    stop = stop or threading.Event()
    reason = {"why": "duration"}

    def on_signal(signum: int, _frame: Any) -> None:
        reason["why"] = signal.Signals(signum).name
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ends_at = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            remaining = 0.5 if ends_at is None else min(0.5, ends_at - time.monotonic())
            if remaining <= 0:
                break
            stop.wait(remaining)
        if stop.is_set() and reason["why"] == "duration":
            reason["why"] = "done"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return reason["why"]


# -- serve --------------------------------------------------------------------------------------------
def add_serve(commands: Any) -> None:
    parser = commands.add_parser(
        "serve", help="import your code and run it as a peer until Ctrl-C",
        description="Import MODULE_OR_FILE (module name, file.py or package folder) so its "
                    "@net.connect/@net.event/@net.subscribe functions register, then serve them "
                    "until Ctrl-C or SIGTERM.")
    parser.add_argument("modules", nargs="*", metavar="MODULE_OR_FILE", help="your code to serve")
    parser.add_argument("--group", help="this peer's group (overrides NET_GROUP)")
    parser.add_argument("--hub", action="store_true", default=None, help="mark this peer as a hub (NET_IS_HUB)")
    parser.add_argument("--host", help="address advertised in this peer's id (overrides NET_HOST)")
    parser.add_argument("--bind", help="address to listen on (overrides NET_BIND)")
    parser.add_argument("--port-start", type=int, metavar="PORT", help="first port to try (NET_PORT_START)")
    parser.add_argument("--port-range", type=int, metavar="N", help="ports tried after it (NET_PORT_RANGE)")
    parser.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop by itself after this long")
    add_json_option(parser)
    parser.set_defaults(run=run_serve)


def _apply_settings(args: argparse.Namespace) -> None:
    """Command-line overrides win over the environment: set them before any peer starts."""
    import net
    overrides = {"GROUP": args.group, "IS_HUB": args.hub, "HOST": args.host, "BIND": args.bind,
                 "PORT_START": args.port_start, "PORT_RANGE": args.port_range}
    for name, value in overrides.items():
        if value is not None:
            setattr(net, name, value)


def run_serve(args: argparse.Namespace) -> int:
    import net

    from ..serving import registry
    from . import loader
    _apply_settings(args)
    for module in args.modules:
        loader.load(module)
    peer = net.Peer()
    connections = [registry.describe(key) for key in list(registry.CONNECTIONS)]
    user = [c for c in connections if not c["name"].startswith("net.defaults.")]
    if args.json:
        print_json({"serving": peer.id.decode(), "host": peer.host, "port": peer.port,
                    "group": peer.group, "hub": peer.hub, "pid": os.getpid(),
                    "connections": [c["name"] for c in user]}, indent=None)
    else:
        say(f"net: serving {peer.id.decode()} on {peer.host}:{peer.port} "
            f"(group {peer.group}, hub {'yes' if peer.hub else 'no'}, pid {os.getpid()})")
        if user:
            console().print(connections_table(user))
        say("Ctrl-C to stop")
    why = wait_for_stop(args.duration)
    peer.close()
    if args.json:
        print_json({"stopped": why}, indent=None)
    else:
        say(f"net: stopped ({why})")
    return EXIT_OK


# -- listen -------------------------------------------------------------------------------------------
def add_listen(commands: Any) -> None:
    parser = commands.add_parser(
        "listen", help="print a peer's events as they arrive, until Ctrl-C",
        description="Subscribe to EVENT on PEER and print each event as it arrives. This runs a peer "
                    "in this process so the publisher can deliver to it.")
    add_peer_options(parser, timeout=10.0)
    parser.add_argument("event", metavar="EVENT", help="the event name (as in @net.event(name))")
    parser.add_argument("--count", type=count, metavar="N", help="exit after N events")
    parser.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop by itself after this long")
    add_json_option(parser)
    parser.set_defaults(run=run_listen)


def _reachable_settings(target: Any) -> None:
    """A listener for a loopback publisher advertises loopback too, unless the user chose NET_HOST."""
    import net
    loopback = target.host.startswith("127.") or target.host in ("::1", "localhost")
    if loopback and "NET_HOST" not in os.environ:
        net.HOST = "127.0.0.1"
        if "NET_BIND" not in os.environ:
            net.BIND = "127.0.0.1"


def run_listen(args: argparse.Namespace) -> int:
    import net
    if not hasattr(net, "subscribe"):
        raise net.NetError("this build of net has no events (net.subscribe): listen is unavailable")
    publisher = target(args)
    with deadline(args):
        net.info(peer=publisher.address)    # unreachable: one clear error now, not silence later
    _reachable_settings(publisher)
    stop = threading.Event()
    received = {"count": 0}
    lock = threading.Lock()

    def on_event(*values: Any, **keywords: Any) -> None:
        with lock:
            received["count"] += 1
            if args.json:
                print_json({"event": args.event, "peer": str(publisher), "args": list(values),
                            "kwargs": keywords, "time": time.time()}, indent=None)
            else:
                from rich.pretty import pretty_repr
                shown = ", ".join([pretty_repr(v) for v in values] +
                                  [f"{k}={pretty_repr(v)}" for k, v in keywords.items()])
                say(f"{time.strftime('%H:%M:%S')} {args.event}({shown})")
            sys.stdout.flush()
            if args.count and received["count"] >= args.count:
                stop.set()

    peer = net.Peer()
    with deadline(args):
        subscription = net.subscribe(args.event, peers=[publisher.address])(on_event)
    if args.json:
        print_json({"listening": args.event, "peer": str(publisher), "subscriber": peer.id.decode()},
                   indent=None)
    else:
        say(f"net: listening for {args.event} on {publisher} as {peer.id.decode()} (Ctrl-C to stop)")
    sys.stdout.flush()
    why = wait_for_stop(args.duration, stop)
    try:
        subscription.unsubscribe()          # the publisher forgets us at once, not at lease expiry
    except Exception:                       # best effort: the publisher may be gone already
        pass
    peer.close()
    if not args.json:
        say(f"net: stopped ({why}) after {received['count']} event(s)")
    return EXIT_OK


# -- demo ---------------------------------------------------------------------------------------------
def add_demo(commands: Any) -> None:
    parser = commands.add_parser("demo", help="start peers on loopback and show them calling each other",
                                 description="Start peers on 127.0.0.1 in subprocesses, find them, call "
                                             "across and fire an event; prints what happened.")
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import net
    net.HOST = net.BIND = "127.0.0.1"       # the demo never listens beyond loopback
    from . import demo
    return demo.run()
