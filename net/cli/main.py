"""The ``net`` command (also ``python -m net``): serve, peers, info, call, listen, ping, demo, certs.

This module is the entry point only: it assembles the subcommands and turns
errors into exit codes. One function builds each subcommand's parser
(``add_<name>``) and one runs it (``run_<name>``), so new subcommands merge
without touching the others; they live by what they do:

- ``net.cli.query``: ask peers something and print it (peers, info, call, ping);
- ``net.cli.serve``: run a peer in this process (serve, listen, demo);
- ``net.cli.args`` / ``net.cli.output``: the options and the printing they share.

Exit codes: 0 success; 1 the operation failed (unreachable or unknown peer,
unknown connection, remote error, import failure, no ping reply); 2 the
command line is wrong (argparse, malformed JSON argument); 130 interrupted.
``serve`` and ``listen`` run until Ctrl-C/SIGTERM and then exit 0.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .args import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from .query import add_call, add_info, add_peers, add_ping
from .serve import add_demo, add_listen, add_serve


def add_certs(commands: Any) -> None:
    """``net certs``: a team CA and peer certificates (net/cli/certs.py imports cryptography only when run)."""
    from . import certs
    parser = commands.add_parser("certs", help="create a team CA and peer certificates for mutual TLS",
                                 description=(certs.__doc__ or "").splitlines()[0] if certs.__doc__ else None)
    certs.add_arguments(parser)
    parser.set_defaults(run=certs.run)


SUBCOMMANDS: list[Callable[[Any], None]] = [add_serve, add_peers, add_info, add_call, add_listen, add_ping,
                                            add_demo, add_certs]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
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
    run: Callable[[argparse.Namespace], int] = args.run     # set by each subcommand's parser
    try:
        return run(args)
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
