"""`badsum` entry point: builds the parser from the ordered command list and maps errors to exit codes.

Exit codes (docs/cli.md): 0 nothing wrong, 1 findings, 2 usage, 3 could not read or inspect,
130 interrupted, 141 the output pipe was closed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from badsum import __version__
from badsum.cli import canary, doctor, lab, pcap
from badsum.cli import fix

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

#: Every command, in the order `--help` lists them. Each module has `register(subparsers)`.
COMMANDS = (pcap, lab, canary, fix, doctor)

EPILOG = """\
exit codes: 0 nothing wrong, 1 findings (bad checksums), 2 usage error,
            3 input unreadable or damaged, 130 interrupted, 141 output pipe closed

examples:
  badsum pcap capture.pcapng
  sudo badsum lab run ovs-userspace-veth
  sudo badsum canary
  sudo badsum doctor
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="badsum",
        description="Find where packets go bad in container and overlay networks, and why.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"badsum {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(e.code or 0)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("badsum: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `badsum pcap --jsonl big.pcap | head`: the reader went away. Exit as a SIGPIPE'd
        # process would (128 + 13), so a pipeline does not take a cut run for a clean one.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
