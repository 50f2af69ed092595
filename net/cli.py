"""The ``net`` command (also ``python -m net``): serve, peers, info, call, listen, ping, demo.

One function builds each subcommand's parser (``add_<name>``) and one runs it
(``run_<name>``), so new subcommands merge without touching the others.

Exit codes: 0 success; 1 the operation failed (unreachable or unknown peer,
unknown connection, remote error, import failure, no ping reply); 2 the
command line is wrong (argparse, malformed JSON argument); 130 interrupted.
``serve`` and ``listen`` run until Ctrl-C/SIGTERM and then exit 0.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


# -- output ----------------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Any:
    from rich.console import Console
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def jsonable(value: Any) -> Any:
    """``json.dumps`` default: bytes as UTF-8 text (else base64), sets/tuples as lists, else repr."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def print_json(value: Any, indent: int | None = 2) -> None:
    sys.stdout.write(json.dumps(value, default=jsonable, indent=indent, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _text(value: Any) -> Any:
    """A table cell from remote data: never interpreted as rich markup."""
    from rich.text import Text
    return Text(value.decode("ascii", "replace") if isinstance(value, bytes) else str(value))


def say(line: str) -> None:
    """A plain status line (never wrapped or styled: scripts and tests read these)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- arguments shared by several subcommands ---------------------------------------------------------
def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def _peer_options(parser: argparse.ArgumentParser, timeout: float | None) -> None:
    parser.add_argument("peer", metavar="PEER",
                        help="peer id, host:port, or a unique prefix of a peer's id or host")
    parser.add_argument("--lan", action="store_true",
                        help="look a PEER prefix up on the whole network (sends discovery traffic); "
                             "by default only this machine's peers are searched")
    parser.add_argument("--timeout", type=_seconds, default=timeout, metavar="SECONDS",
                        help="give up after this long" + (f" (default {timeout:g})" if timeout else
                                                          " (default: NET_TIMEOUT, no deadline)"))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0 seconds")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parse_value(text: str) -> Any:
    """A JSON literal; a plain word that is not JSON is a string. Text that looks like JSON must be JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        if text.strip()[:1] in ("[", "{", '"'):
            raise UsageError(f"argument {text!r} is not valid JSON: {exc}") from None
        return text


def parse_keyword(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise UsageError(f"--kw {text!r}: expected key=value with key a Python identifier")
    return key, parse_value(value)


def _target(args: argparse.Namespace) -> Any:
    from . import targets
    return targets.resolve(args.peer, lan=args.lan)


def _deadline(args: argparse.Namespace) -> Any:
    import net
    return net.timeout(args.timeout)


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
    parser.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop by itself after this long")
    _json_option(parser)
    parser.set_defaults(run=run_serve)


def _apply_settings(args: argparse.Namespace) -> None:
    """Command-line overrides win over the environment: set them before any peer starts."""
    import net
    overrides = {"GROUP": args.group, "IS_HUB": args.hub, "HOST": args.host, "BIND": args.bind,
                 "PORT_START": args.port_start, "PORT_RANGE": args.port_range}
    for name, value in overrides.items():
        if value is not None:
            setattr(net, name, value)


def wait_for_stop(duration: float | None, stop: threading.Event | None = None) -> str:
    """Block until SIGINT/SIGTERM (or ``duration``, or ``stop`` set); returns what ended it."""
    stop = stop or threading.Event()
    reason = {"why": "duration"}

    def on_signal(signum: int, _frame: Any) -> None:
        reason["why"] = signal.Signals(signum).name
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if remaining <= 0:
                break
            stop.wait(remaining)
        if stop.is_set() and reason["why"] == "duration":
            reason["why"] = "done"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return reason["why"]


def run_serve(args: argparse.Namespace) -> int:
    import net
    from . import loader, registry
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
            _console().print(_connections_table(user))
        say("Ctrl-C to stop")
    why = wait_for_stop(args.duration)
    peer.close()
    if args.json:
        print_json({"stopped": why}, indent=None)
    else:
        say(f"net: stopped ({why})")
    return EXIT_OK


def _connections_table(entries: list[dict[str, Any]]) -> Any:
    from rich.table import Table
    table = Table("connection", "signature", "doc", title="connections", title_justify="left")
    for entry in entries:
        table.add_row(_text(entry.get("name")), _text(entry.get("signature", "")), _text(entry.get("doc", "")))
    return table


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
    _json_option(parser)
    parser.set_defaults(run=run_peers)


def run_peers(args: argparse.Namespace) -> int:
    from . import targets
    where = "this machine" if args.on_host else "the network"
    started = time.monotonic()
    status = _console(stderr=True).status(f"looking for peers on {where} ...", spinner="dots")
    with status:
        found = targets.discover(on_host=args.on_host, groups=args.groups, hubs_only=args.hubs)
    elapsed = time.monotonic() - started
    if args.json:
        print_json(found)
        return EXIT_OK
    from rich.table import Table
    table = Table("id", "host", "port", "group", "hub", "user",
                  title=f"{len(found)} peer{'s' if len(found) != 1 else ''} on {where} ({elapsed:.2f}s)",
                  title_justify="left")
    for entry in found:
        table.add_row(*(_text(value) for value in (entry["id"], entry.get("host"), entry.get("port"),
                                                   entry.get("group"), "yes" if entry.get("hub") else "",
                                                   entry.get("user", ""))))
    _console().print(table)
    return EXIT_OK


# -- info ---------------------------------------------------------------------------------------------
def add_info(commands: Any) -> None:
    parser = commands.add_parser("info", help="a peer's info, connections, subscriptions and flags",
                                 description="Show what PEER is and what it offers.")
    _peer_options(parser, timeout=10.0)
    _json_option(parser)
    parser.set_defaults(run=run_info)


def fetch_summary(target: Any) -> dict[str, Any]:
    """The peer's summary; a peer without the ``summary`` built-in gets info + connections."""
    import net
    from .defaults import introspection
    try:
        return introspection.summary(peer=target.address)
    except net.InvalidConnection:
        return {"info": net.info(peer=target.address), "connections": net.connections(peer=target.address),
                "subscriptions": None, "flags": None}


def run_info(args: argparse.Namespace) -> int:
    target = _target(args)
    with _deadline(args):
        summary = fetch_summary(target)
    summary = {"id": target.id or _id_of(summary["info"], target), "address": str(target), **summary}
    if args.json:
        print_json(summary)
        return EXIT_OK
    from rich.table import Table
    console = _console()
    table = Table("field", "value", title=f"peer {summary['id']}", title_justify="left", show_header=False)
    for key, value in summary["info"].items():
        table.add_row(_text(key), _text(value))
    console.print(table)
    builtin = [entry for entry in summary["connections"] if str(entry.get("name")).startswith("net.defaults.")]
    console.print(_connections_table([entry for entry in summary["connections"] if entry not in builtin]))
    names = ", ".join(str(entry.get("name")).rsplit(".", 1)[-1] for entry in builtin)
    console.print(_text(f"built-in connections: {names}"), style="dim")
    if summary.get("subscriptions") is not None:
        table = Table("event", "subscribers", title="subscriptions", title_justify="left")
        for entry in summary["subscriptions"]:
            table.add_row(_text(entry["event"]), _text("\n".join(map(str, entry["subscribers"])) or "-"))
        if not summary["subscriptions"]:
            table.add_row("(none)", "")
        console.print(table)
    if summary.get("flags") is not None:
        table = Table("flag", "doc", title="flags", title_justify="left")
        for entry in summary["flags"]:
            table.add_row(_text(entry["name"]), _text(entry.get("doc", "")))
        console.print(table)
    return EXIT_OK


def _id_of(info: dict[str, Any], target: Any) -> str:
    from . import identity
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
    _peer_options(parser, timeout=None)
    parser.add_argument("connection", metavar="CONNECTION", help="connection name (module.function) or tag")
    parser.add_argument("values", nargs="*", metavar="ARGS", help="positional arguments (JSON literals)")
    parser.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument, value as a JSON literal (repeatable)")
    _json_option(parser)
    parser.set_defaults(run=run_call)


def call_connection(target: Any, name: str, values: list[Any], keywords: dict[str, Any]) -> tuple[str, Any]:
    """Call ``name`` on ``target``; if the peer has no such name but one unique ``*.name``, call that."""
    import net
    from . import client, identity
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
    target = _target(args)
    with _deadline(args):
        name, result = call_connection(target, args.connection, values, keywords)
    if args.json:
        print_json(result)
    elif isinstance(result, str):
        sys.stdout.write(result + "\n")
    else:
        from rich.pretty import Pretty
        _console().print(Pretty(result))
    return EXIT_OK


# -- listen -------------------------------------------------------------------------------------------
def add_listen(commands: Any) -> None:
    parser = commands.add_parser(
        "listen", help="print a peer's events as they arrive, until Ctrl-C",
        description="Subscribe to EVENT on PEER and print each event as it arrives. This runs a peer "
                    "in this process so the publisher can deliver to it.")
    _peer_options(parser, timeout=10.0)
    parser.add_argument("event", metavar="EVENT", help="the event name (as in @net.event(name))")
    parser.add_argument("--count", type=_count, metavar="N", help="exit after N events")
    parser.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop by itself after this long")
    _json_option(parser)
    parser.set_defaults(run=run_listen)


def _reachable_settings(target: Any) -> None:
    """A listener for a loopback publisher advertises loopback too, unless the user chose NET_HOST."""
    import net
    if target.host.startswith("127.") or target.host in ("::1", "localhost"):
        if "NET_HOST" not in os.environ:
            net.HOST = "127.0.0.1"
            if "NET_BIND" not in os.environ:
                net.BIND = "127.0.0.1"


def run_listen(args: argparse.Namespace) -> int:
    import net
    if not hasattr(net, "subscribe"):
        raise net.NetError("this build of net has no events (net.subscribe): listen is unavailable")
    target = _target(args)
    with _deadline(args):
        net.info(peer=target.address)       # unreachable: one clear error now, not silence later
    _reachable_settings(target)
    stop = threading.Event()
    received = {"count": 0}
    lock = threading.Lock()

    def on_event(*values: Any, **keywords: Any) -> None:
        with lock:
            received["count"] += 1
            if args.json:
                print_json({"event": args.event, "peer": str(target), "args": list(values),
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
    with _deadline(args):
        subscription = net.subscribe(args.event, peers=[target.address])(on_event)
    if args.json:
        print_json({"listening": args.event, "peer": str(target), "subscriber": peer.id.decode()}, indent=None)
    else:
        say(f"net: listening for {args.event} on {target} as {peer.id.decode()} (Ctrl-C to stop)")
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


# -- ping ---------------------------------------------------------------------------------------------
def add_ping(commands: Any) -> None:
    parser = commands.add_parser("ping", help="round-trip times to a peer, like ping",
                                 description="Call PEER's null connection COUNT times and print round-trip "
                                             "times (the first includes opening the connection).")
    _peer_options(parser, timeout=2.0)
    parser.add_argument("-c", "--count", type=_count, default=4, help="calls to make (default 4)")
    parser.add_argument("-i", "--interval", type=_seconds, default=1.0, metavar="SECONDS",
                        help="pause between calls (default 1)")
    _json_option(parser)
    parser.set_defaults(run=run_ping)


def run_ping(args: argparse.Namespace) -> int:
    import net
    target = _target(args)
    times: list[float | None] = []
    if not args.json:
        say(f"PING {target}" + (f" ({target.id})" if target.id else ""))
    try:
        for sequence in range(1, args.count + 1):
            started = time.perf_counter()
            try:
                with _deadline(args):
                    net.null(peer=target.address)
                elapsed = (time.perf_counter() - started) * 1000
                times.append(elapsed)
                line = f"reply from {target}: seq={sequence} time={elapsed:.3f} ms"
            except (net.PeerUnreachable, net.Timeout) as exc:
                times.append(None)
                line = f"no reply from {target}: seq={sequence}: {exc}"
            if not args.json:
                say(line)
            if sequence < args.count:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    replies = [t for t in times if t is not None]
    summary = {"peer": str(target), "sent": len(times), "received": len(replies),
               "loss": 0.0 if not times else round(100 * (1 - len(replies) / len(times)), 1),
               "times_ms": times,
               "min_ms": min(replies) if replies else None, "max_ms": max(replies) if replies else None,
               "avg_ms": sum(replies) / len(replies) if replies else None}
    if args.json:
        print_json(summary)
    else:
        say(f"--- {target} ping statistics ---\n{summary['sent']} calls, {summary['received']} replies, "
            f"{summary['loss']:g}% loss")
        if replies:
            say(f"rtt min/avg/max = {summary['min_ms']:.3f}/{summary['avg_ms']:.3f}/{summary['max_ms']:.3f} ms")
    return EXIT_OK if replies else EXIT_FAILED


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


# -- certs (issue 6: mutual TLS) -------------------------------------------------------------------
def add_certs(commands: Any) -> None:
    """``net certs`` lives in net/certs.py (the trust work); offered when that module is present."""
    import importlib.util
    if importlib.util.find_spec("net.certs") is None:
        return
    from . import certs     # imports cryptography only when run
    parser = commands.add_parser("certs", help="create a team CA and peer certificates for mutual TLS",
                                 description=(certs.__doc__ or "").splitlines()[0] if certs.__doc__ else None)
    certs.add_arguments(parser)
    parser.set_defaults(run=certs.run)


# -- entry point --------------------------------------------------------------------------------------
SUBCOMMANDS: list[Callable[[Any], None]] = [add_serve, add_peers, add_info, add_call, add_listen, add_ping,
                                            add_demo, add_certs]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="net", description="Find and call Python peers on your network.",
                                     epilog="Run 'net COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"net {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()
    sys.stderr.write(f"net: error: {message}\n")
    sys.stderr.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        import net
    except Exception as exc:            # a malformed NET_* variable fails at import: say which
        return _fail(str(exc), EXIT_USAGE)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except net.RemoteError as exc:
        where = f" in {exc.connection}" if exc.connection else ""
        _fail(f"the call raised {exc.remote_type}: {exc.remote_message} (on {exc.peer}{where})", EXIT_FAILED)
        if exc.remote_traceback:
            sys.stderr.write("\nRemote traceback:\n" + exc.remote_traceback.rstrip() + "\n")
        return EXIT_FAILED
    except net.InvalidConnection as exc:
        offered = ", ".join(name for name in exc.offered if not name.startswith("net.defaults.")) or "(none)"
        return _fail(f"unknown connection {exc.connection!r} on {exc.peer}; it offers: {offered}", EXIT_FAILED)
    except net.PeerUnreachable as exc:
        return _fail(f"unreachable peer: {' '.join(str(exc).split())}", EXIT_FAILED)
    except net.NetError as exc:
        return _fail(" ".join(str(exc).split()), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:             # `net peers | head`: the reader went away, not our failure
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
