"""The ``net`` command line's shared pieces: exit codes, options several subcommands take, argument values.

Each subcommand module builds its parser from these, so every command spells
``PEER``, ``--lan``, ``--timeout`` and ``--json`` the same way, and a bad
value is refused the same way (exit 2) before anything touches the network.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def add_peer_options(parser: argparse.ArgumentParser, timeout: float | None) -> None:
    parser.add_argument("peer", metavar="PEER",
                        help="peer id, host:port, or a unique prefix of a peer's id or host")
    parser.add_argument("--lan", action="store_true",
                        help="look a PEER prefix up on the whole network (sends discovery traffic); "
                             "by default only this machine's peers are searched")
    parser.add_argument("--timeout", type=seconds, default=timeout, metavar="SECONDS",
                        help="give up after this long" + (f" (default {timeout:g})" if timeout else
                                                          " (default: NET_TIMEOUT, no deadline)"))


def _positive(convert: Callable[[str], Any], kind: str, bound: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert(text)``, refused unless it is a ``kind`` above zero."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be {bound}")
        return value
    return parse


seconds = _positive(float, "a number of seconds", "> 0 seconds")
count = _positive(int, "a whole number", ">= 1")


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


def target(args: argparse.Namespace) -> Any:
    """The peer ``PEER`` (with ``--lan``) names, as a :class:`net.targets.Target`."""
    from . import targets
    return targets.resolve(args.peer, lan=args.lan)


def deadline(args: argparse.Namespace) -> Any:
    """``net.timeout(--timeout)``: the deadline for the command's remote calls."""
    import net
    return net.timeout(args.timeout)
