"""The ``net`` subcommands that ask peers something and print the answer: peers, info, call, ping.

Each is one ``add_<name>`` (its parser) and one ``run_<name>`` (its work);
they make remote calls and exit, and leave how results look to
``net.cli.output``.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from .args import (
    EXIT_FAILED,
    EXIT_OK,
    add_json_option,
    add_peer_options,
    count,
    deadline,
    parse_keyword,
    parse_value,
    seconds,
    target,
)
from .output import console, print_json, print_peers, print_result, print_summary, say


# -- peers --------------------------------------------------------------------------------------------
def add_peers(commands: Any) -> None:
    parser = commands.add_parser(
        "peers", help="find peers (this machine with --on-host, else the network)",
        description="Discover peers and list them. Without --on-host this scans the local network "
                    "(ARP table, port probes, multicast query).")
    parser.add_argument("--on-host", action="store_true", help="only this machine's peers (no network traffic)")
    parser.add_argument("--group", action="append", dest="groups", metavar="GROUP",
                        help="only peers in this group (repeatable)")
    parser.add_argument("--hubs", action="store_true", help="only hubs")
    add_json_option(parser)
    parser.set_defaults(run=run_peers)


def run_peers(args: argparse.Namespace) -> int:
    from . import targets
    where = "this machine" if args.on_host else "the network"
    started = time.monotonic()
    status = console(stderr=True).status(f"looking for peers on {where} ...", spinner="dots")
    with status:
        found = targets.discover(on_host=args.on_host, groups=args.groups, hubs_only=args.hubs)
    elapsed = time.monotonic() - started
    if args.json:
        print_json(found)
        return EXIT_OK
    print_peers(found, where, elapsed)
    return EXIT_OK


# -- info ---------------------------------------------------------------------------------------------
def add_info(commands: Any) -> None:
    parser = commands.add_parser("info", help="a peer's info, connections, subscriptions and flags",
                                 description="Show what PEER is and what it offers.")
    add_peer_options(parser, timeout=10.0)
    add_json_option(parser)
    parser.set_defaults(run=run_info)


def fetch_summary(target: Any) -> dict[str, Any]:
    """The peer's summary; a peer without the ``summary`` built-in gets info + connections."""
    import net

    from ..defaults import introspection
    try:
        return introspection.summary(peer=target.address)
    except net.InvalidConnection:
        return {"info": net.info(peer=target.address), "connections": net.connections(peer=target.address),
                "subscriptions": None, "flags": None}


def run_info(args: argparse.Namespace) -> int:
    peer = target(args)
    with deadline(args):
        summary = fetch_summary(peer)
    summary = {"id": peer.id or _id_of(summary["info"], peer), "address": str(peer), **summary}
    if args.json:
        print_json(summary)
    else:
        print_summary(summary)
    return EXIT_OK


def _id_of(info: dict[str, Any], target: Any) -> str:
    from ..wire import ids as identity
    group = info.get("group")
    return identity.generate_id(int(info.get("port") or target.port), str(info.get("host") or target.host),
                                None if group in (None, "None") else group).decode()


# -- call ---------------------------------------------------------------------------------------------
def add_call(commands: Any) -> None:
    parser = commands.add_parser(
        "call", help="call a connection on a peer and print the result",
        description="Call CONNECTION (its name or tag; a unique last part like 'render' is enough) on "
                    "PEER. ARGS are JSON literals (1, 2.5, true, null, \"text\", [1,2], {\"a\":1}); "
                    "a plain word that is not JSON is passed as a string.")
    add_peer_options(parser, timeout=None)
    parser.add_argument("connection", metavar="CONNECTION", help="connection name (module.function) or tag")
    parser.add_argument("values", nargs="*", metavar="ARGS", help="positional arguments (JSON literals)")
    parser.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument, value as a JSON literal (repeatable)")
    add_json_option(parser)
    parser.set_defaults(run=run_call)


def call_connection(target: Any, name: str, values: list[Any], keywords: dict[str, Any]) -> tuple[str, Any]:
    """Call ``name`` on ``target``; if the peer has no such name but one unique ``*.name``, call that."""
    import net

    from ..calls import client
    from ..wire import ids as identity
    try:
        return name, client.call(target.host, target.port, identity.key(name), values, keywords,
                                 target=target.address)
    except net.InvalidConnection as exc:
        suffix = [offered for offered in exc.offered if offered.endswith("." + name)
                  or (name.startswith("net.") and offered.startswith("net.defaults.")
                      and offered.endswith("." + name[4:]))]      # net.info as users write it
        if len(suffix) != 1:
            raise
        return suffix[0], client.call(target.host, target.port, identity.key(suffix[0]), values, keywords,
                                      target=target.address)


def run_call(args: argparse.Namespace) -> int:
    values = [parse_value(text) for text in args.values]
    keywords = dict(parse_keyword(text) for text in args.kw)
    peer = target(args)
    with deadline(args):
        _name, result = call_connection(peer, args.connection, values, keywords)
    if args.json:
        print_json(result)
    else:
        print_result(result)
    return EXIT_OK


# -- ping ---------------------------------------------------------------------------------------------
def add_ping(commands: Any) -> None:
    parser = commands.add_parser("ping", help="round-trip times to a peer, like ping",
                                 description="Call PEER's null connection COUNT times and print round-trip "
                                             "times (the first includes opening the connection).")
    add_peer_options(parser, timeout=2.0)
    parser.add_argument("-c", "--count", type=count, default=4, help="calls to make (default 4)")
    parser.add_argument("-i", "--interval", type=seconds, default=1.0, metavar="SECONDS",
                        help="pause between calls (default 1)")
    add_json_option(parser)
    parser.set_defaults(run=run_ping)


def run_ping(args: argparse.Namespace) -> int:
    import net
    peer = target(args)
    times: list[float | None] = []
    if not args.json:
        say(f"PING {peer}" + (f" ({peer.id})" if peer.id else ""))
    try:
        for sequence in range(1, args.count + 1):
            started = time.perf_counter()
            try:
                with deadline(args):
                    net.null(peer=peer.address)
                elapsed = (time.perf_counter() - started) * 1000
                times.append(elapsed)
                line = f"reply from {peer}: seq={sequence} time={elapsed:.3f} ms"
            except (net.PeerUnreachable, net.Timeout) as exc:
                times.append(None)
                line = f"no reply from {peer}: seq={sequence}: {exc}"
            if not args.json:
                say(line)
            if sequence < args.count:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    replies = [t for t in times if t is not None]
    summary = {"peer": str(peer), "sent": len(times), "received": len(replies),
               "loss": 0.0 if not times else round(100 * (1 - len(replies) / len(times)), 1),
               "times_ms": times,
               "min_ms": min(replies) if replies else None, "max_ms": max(replies) if replies else None,
               "avg_ms": sum(replies) / len(replies) if replies else None}
    if args.json:
        print_json(summary)
    else:
        say(f"--- {peer} ping statistics ---\n{summary['sent']} calls, {summary['received']} replies, "
            f"{summary['loss']:g}% loss")
        if replies:
            say(f"rtt min/avg/max = {summary['min_ms']:.3f}/{summary['avg_ms']:.3f}/{summary['max_ms']:.3f} ms")
    return EXIT_OK if replies else EXIT_FAILED
