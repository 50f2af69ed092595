"""The ``net`` command (also ``python -m net``)."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="net", description="Find and call Python peers on your network.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    commands.add_parser("demo", help="start peers on loopback and show them calling each other",
                        description="Start two peers on 127.0.0.1 and show them calling each other.")
    from . import certs     # `net certs`: issue 6 (imports cryptography only when run)
    certs.add_arguments(commands.add_parser("certs", help="create a team CA and peer certificates for mutual TLS",
                                            description=certs.__doc__.splitlines()[0]))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        import net
        net.HOST = net.BIND = "127.0.0.1"       # the demo never listens beyond loopback
        from . import demo
        return demo.run()
    if args.command == "certs":
        from . import certs
        return certs.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
