"""How the ``net`` command prints: JSON for scripts, plain status lines, rich tables for people.

Everything shown comes from other peers, so table cells are never read as
rich markup, and JSON output never fails on bytes or sets. Status lines are
written plain (never wrapped or styled) because scripts and tests read them.
"""
from __future__ import annotations

import base64
import json
import sys
from typing import Any


def console(stderr: bool = False) -> Any:
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


def text(value: Any) -> Any:
    """A table cell from remote data: never interpreted as rich markup."""
    from rich.text import Text
    return Text(value.decode("ascii", "replace") if isinstance(value, bytes) else str(value))


def say(line: str) -> None:
    """A plain status line (never wrapped or styled: scripts and tests read these)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def connections_table(entries: list[dict[str, Any]]) -> Any:
    from rich.table import Table
    table = Table("connection", "signature", "doc", title="connections", title_justify="left")
    for entry in entries:
        table.add_row(text(entry.get("name")), text(entry.get("signature", "")), text(entry.get("doc", "")))
    return table


def print_peers(found: list[dict[str, Any]], where: str, elapsed: float) -> None:
    """The peers ``net peers`` found, one table row each."""
    from rich.table import Table
    table = Table("id", "host", "port", "group", "hub", "user",
                  title=f"{len(found)} peer{'s' if len(found) != 1 else ''} on {where} ({elapsed:.2f}s)",
                  title_justify="left")
    for entry in found:
        table.add_row(*(text(value) for value in (entry["id"], entry.get("host"), entry.get("port"),
                                                  entry.get("group"), "yes" if entry.get("hub") else "",
                                                  entry.get("user", ""))))
    console().print(table)


def print_summary(summary: dict[str, Any]) -> None:
    """What ``net info`` learned about a peer: its info, connections, subscriptions and flags."""
    from rich.table import Table
    out = console()
    table = Table("field", "value", title=f"peer {summary['id']}", title_justify="left", show_header=False)
    for key, value in summary["info"].items():
        table.add_row(text(key), text(value))
    out.print(table)
    builtin = [entry for entry in summary["connections"] if str(entry.get("name")).startswith("net.defaults.")]
    out.print(connections_table([entry for entry in summary["connections"] if entry not in builtin]))
    names = ", ".join(str(entry.get("name")).rsplit(".", 1)[-1] for entry in builtin)
    out.print(text(f"built-in connections: {names}"), style="dim")
    if summary.get("subscriptions") is not None:
        table = Table("event", "subscribers", title="subscriptions", title_justify="left")
        for entry in summary["subscriptions"]:
            table.add_row(text(entry["event"]), text("\n".join(map(str, entry["subscribers"])) or "-"))
        if not summary["subscriptions"]:
            table.add_row("(none)", "")
        out.print(table)
    if summary.get("flags") is not None:
        table = Table("flag", "doc", title="flags", title_justify="left")
        for entry in summary["flags"]:
            table.add_row(text(entry["name"]), text(entry.get("doc", "")))
        out.print(table)


def print_result(result: Any) -> None:
    """A call's result for people: a string as it is, anything else pretty-printed."""
    if isinstance(result, str):
        sys.stdout.write(result + "\n")
    else:
        from rich.pretty import Pretty
        console().print(Pretty(result))
