"""`badsum` entry point: builds the parser from the ordered command list and maps errors to exit codes.

Exit codes (docs/cli.md): 0 nothing wrong, 1 findings, 2 usage, 3 could not read or inspect,
130 interrupted, 141 the output pipe was closed.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from badsum import __version__
from badsum.cli.result import ExitCode, Result, render, say
from badsum.report.output import OutputError, cannot_write

#: Every command (module badsum.cli.NAME with `register(subparsers)` and `HELP`), in the order
#: `--help` lists them, with its one-line summary. A run imports only the module of the command it
#: runs: `badsum pcap` must not pay for the lab, doctor and fix machinery at start-up.
COMMANDS: dict[str, str] = {
    "pcap": "verify every checksum in a capture and find the symptoms (SYN ladders, PMTU, ping-only)",
    "capture": "capture at many points at once (explicit or along a container's path), keeping the kernel's checksum status",
    "trace": "line up the same packet across capture points and name the first hop where it went bad",
    "follow": "follow packets through the kernel with eBPF and name the first bad hop from the kernel's checksum state",
    "doctor": "snapshot this host's namespaces and check them against the known checksum and MTU issues",
    "fix": "plan (and with --apply make, journal and undo) the narrowest change for each finding",
    "lab": "reproduce known incidents on the real kernel in throwaway namespaces",
    "canary": "test this host's datapaths and offload settings in throwaway namespaces (pass/fail)",
    "exporter": "serve this host's checksum counters, drops, offloads, MTUs and findings as Prometheus metrics",
    "watch": "live per-namespace checksum and fragmentation counter deltas, and kernel drops by reason",
}

EPILOG = """\
exit codes: 0 nothing wrong, 1 findings (bad checksums), 2 usage error,
            3 input unreadable or damaged, 130 interrupted, 141 output pipe closed

examples:
  badsum pcap capture.pcapng
  sudo badsum doctor && sudo badsum fix
  sudo badsum capture --auto web1 -d 10 -o caps/
  badsum trace caps/c1:eth0.pcapng caps/host:c1-veth.pcapng caps/host:c2-veth.pcapng
  sudo badsum follow -f 'tcp port 80' --duration 10
  sudo badsum lab run ovs-userspace-veth
"""


_REQUIRED = "the following arguments are required"


class _Missing(Exception):
    """argparse found a required argument missing; an unknown option may deserve the message more."""


class Parser(argparse.ArgumentParser):
    """argparse, except that an unknown option is named before a missing argument: `badsum --bogus`
    says `--bogus`, not "COMMAND required" (argparse checks required arguments first)."""

    def error(self, message: str) -> Any:  # argparse's signature: NoReturn
        if message.startswith(_REQUIRED):
            raise _Missing(message)
        return super().error(message)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        try:
            return super().parse_known_args(words, namespace)
        except _Missing as missing:
            # Parse again with nothing required, only to learn what was not recognised.
            relaxed = [a for a in self._actions if a.required]
            for a in relaxed:
                a.required = False
            try:
                _, extras = super().parse_known_args(words, copy.copy(namespace))
            finally:
                for a in relaxed:
                    a.required = True
            if extras:
                super().error(f"unrecognized arguments: {' '.join(extras)}")
            super().error(str(missing))


class CommandParser(Parser):
    """A command's parser: it names an unknown option itself, under its own usage line."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command is fully registered (the rest are summaries)."""
    parser = Parser(
        prog="badsum",
        description="Find where packets go bad in container and overlay networks, and why.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"badsum {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    for name, summary in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"badsum.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # badsum multiplies no matrices, yet numpy's OpenBLAS starts a thread per core when numpy is
    # first imported (by the command module, below) and they spin: 0.08 s of CPU on every run,
    # measured on `badsum pcap`. One thread starts none; a user's own setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    words = list(sys.argv[1:] if argv is None else argv)
    chosen = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(e.code or 0)
    try:
        outcome = args.run(args)
        # A command returns a Result (one renderer prints it) or, streaming, its ExitCode.
        return render(outcome, bool(getattr(args, "json", False))) if isinstance(outcome, Result) else int(outcome)
    except OutputError as e:  # > /dev/full, >&-: the result could not be delivered (EPIPE is below: 141)
        return cannot_write(e)
    except KeyboardInterrupt:
        say("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `badsum pcap --jsonl big.pcap | head`: the reader went away. Exit as a SIGPIPE'd
        # process would (128 + 13), so a pipeline does not take a cut run for a clean one.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return ExitCode.BROKEN_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
