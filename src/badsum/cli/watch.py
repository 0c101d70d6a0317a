"""`badsum watch`: live, per interval, what moved in every namespace's checksum and fragmentation
counters, and the kernel's drops by reason, protocol and location."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from badsum.cli.argtypes import pick_namespaces
from badsum.cli.result import ExitCode, Failure, say

HELP = "live per-namespace checksum and fragmentation counter deltas, and kernel drops by reason"
EXAMPLES = """\
examples:
  sudo badsum watch                         # every namespace, every second, until Ctrl-C
  sudo badsum watch --netns web1 -d 30      # one namespace for 30 seconds
  sudo badsum watch --json --duration 10    # one JSON envelope per line, per interval, then a summary
  sudo badsum watch --drops tracefs         # drops from tracefs, joined to namespaces by counters

exit codes: 0 nothing moved, 1 checksum errors or checksum drops seen, 2 usage (unknown --netns),
            3 could not watch at all, 130 Ctrl-C before the first interval ended
            (Ctrl-C or SIGTERM later ends the watch normally: 0 or 1)
"""

def register(sub: argparse._SubParsersAction) -> None:
    from badsum.host.kernel_drops import CHOICES

    p = sub.add_parser("watch", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--interval", "-i", metavar="S", type=_seconds(0.1, 3600), default=1.0,
                   help="seconds per interval (0.1 to 3600; default 1)")  # fmt: skip
    p.add_argument("--duration", "-d", metavar="S", type=_seconds(0.1, None), default=None,
                   help="stop after S seconds (default: until Ctrl-C)")  # fmt: skip
    p.add_argument("--netns", "-n", metavar="NAME", action="append", default=[],
                   help="only this namespace (id, ip netns name, pid:PID, host); repeatable")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON envelope per line per interval, then a summary line")
    p.add_argument("--all", action="store_true", help="text: also show namespaces and counters that did not move")
    p.add_argument("--drops", choices=CHOICES, default="auto",
                   help="where drops come from: kernel (eBPF: each drop's own namespace and device), tracefs "
                        "(host-wide, joined to namespaces by counters), auto (kernel, else tracefs; default)")  # fmt: skip
    p.set_defaults(run=run)


def _seconds(lo: float, hi: float | None) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(v) or v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"out of range ({lo}-{hi if hi else 'any'} seconds): {text}")
        return v

    return parse


class _Stop(Exception):
    """SIGTERM: end the watch as Ctrl-C does, through every finally."""


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> ExitCode:
    """Streams: one JSON line or text block per interval as it ends, then the summary."""
    from badsum.cli import watch_view as view
    from badsum.host import netns, watching

    found = netns.discover().namespaces
    try:
        chosen = pick_namespaces("--netns", found, args.netns) if args.netns else None
    except Failure as e:
        return _cannot(args, e.code, e.message, e.message, e.exit_code)
    watch = watching.Watch(found, {r.inode for r in chosen} if chosen is not None else None, root=os.geteuid() == 0,
                           interval=args.interval, duration=args.duration, drops=args.drops,
                           instance=f"{watching.INSTANCE_PREFIX}{os.getpid()}")  # fmt: skip
    try:
        with _sigterm_stops():
            watch.open_drops()
            if not args.json:
                for n in watch.notes:
                    say(n["message"])
            watch.baseline()
            live = view.open_live() if sys.stdout.isatty() and not args.json else None
            try:
                for record in watch.intervals():
                    if args.json:
                        print(_line("findings" if record["findings"] else "ok", record, watch.notes), flush=True)
                    elif live is not None:
                        live.update(view.live_view(watch.totals, record, args.all, watch.started), refresh=True)
                    else:
                        print(view.text_block(record, args.all), flush=True)
            except (KeyboardInterrupt, _Stop):
                if watch.totals.intervals == 0:
                    say("interrupted before the first interval ended")
                    return ExitCode.INTERRUPTED
            finally:
                if live is not None:
                    live.stop()
    except watching.CannotWatch as e:
        return _cannot(args, "watch.cannot", f"cannot watch: {e}", e.why, ExitCode.UNREADABLE)
    except (KeyboardInterrupt, _Stop):
        return ExitCode.INTERRUPTED
    finally:
        watch.close()
    summary = watch.summary()
    if args.json:
        print(_line("findings" if summary["findings"] else "ok", summary, watch.notes), flush=True)
    else:
        print(view.summary_text(summary), flush=True)
    return ExitCode.FINDINGS if summary["findings"] else ExitCode.OK


def _cannot(args: argparse.Namespace, code: str, said: str, message: str, exit_code: ExitCode) -> ExitCode:
    """Nothing was watched: one line on standard error; under --json, one summary line with the error."""
    say(said)
    if args.json:
        print(_line("error", {"kind": "summary", "intervals": 0}, [{"code": code, "message": message}]))
    return exit_code


def _line(status: str, data: dict[str, Any], errors: list[dict[str, str]]) -> str:
    """One envelope on one line (JSON lines): the same keys as every command's envelope."""
    from badsum.report.envelope import SCHEMA_VERSION

    doc = {"schema_version": SCHEMA_VERSION, "command": "watch", "status": status, "data": data, "errors": errors}
    return json.dumps(doc, separators=(",", ":"))


__all__ = ["register", "run"]
