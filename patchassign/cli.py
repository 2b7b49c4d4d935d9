"""The ``patchassign`` command.

Every failure a user can cause (bad file, bad JSON, bad option) ends with a one-line
message on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command line or its input files (exit status 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchassign",
        description="Change who is assigned to what in other systems, at volume.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sb = sub.add_parser(
        "sandbox",
        help="run the five fake servers on 127.0.0.1 until interrupted",
        description="Start the fake PERSCOM, Maxsight, Kintone, SuperOffice and Findable "
        "servers on free loopback ports, print their URLs and throwaway tokens, and serve "
        "until Ctrl-C.",
    )
    sb.add_argument(
        "--demo", type=int, default=100, metavar="N", help="demo records per system (default 100)"
    )
    sb.add_argument("--records", metavar="FILE", help='JSON file {"<system>": [records]} to seed')
    sb.add_argument(
        "--faults",
        metavar="JSON",
        help='fault settings for every server, e.g. \'{"throttle": 0.05, "drop": 0.01}\', '
        'or per system: \'{"kintone": {"latency": 0.05}}\'',
    )
    sb.add_argument("--systems", metavar="LIST", help="comma-separated subset of systems")
    sb.add_argument("--json", action="store_true", help="print the URLs and tokens as JSON")
    return parser


async def _sandbox(args: argparse.Namespace) -> int:
    from .sandbox import SYSTEMS, Sandbox

    try:
        faults = json.loads(args.faults) if args.faults else None
    except json.JSONDecodeError as e:
        raise UsageError(f"--faults is not JSON: {e}") from None
    systems = args.systems.split(",") if args.systems else SYSTEMS
    if args.demo < 0:
        raise UsageError("--demo must be 0 or more")
    try:
        kwargs = {"faults": faults, "demo": args.demo, "systems": systems}
        sandbox = Sandbox.from_file(args.records, **kwargs) if args.records else Sandbox(**kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sandbox:
        described = sandbox.describe()
        if args.json:
            print(json.dumps(described, indent=2), flush=True)
        else:
            width = max(map(len, described))
            print("patchassign sandbox: serving on 127.0.0.1 (Ctrl-C to stop)")
            for name, info in described.items():
                print(f"  {name:<{width}}  {info['url']}  token {info['token']}")
            sys.stdout.flush()
        await stop.wait()
    print("sandbox stopped", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "sandbox":
            return asyncio.run(_sandbox(args))
    except UsageError as e:
        print(f"patchassign {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
