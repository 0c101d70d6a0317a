"""`badsum exporter`: serve this host's checksum facts as Prometheus metrics (read-only)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from badsum.cli.result import ExitCode, say

HELP = "serve this host's checksum counters, drops, offloads, MTUs and findings as Prometheus metrics"
EXAMPLES = """\
examples:
  sudo badsum exporter                                   # http://127.0.0.1:9847/metrics, every 30 s
  sudo badsum exporter --listen 0.0.0.0:9847 --interval 60
  sudo badsum exporter --once | grep badsum_checksum_errors_total
  sudo badsum canary --state-file /run/badsum/canary.json   # what badsum_canary_ok reports

exit codes: 0 stopped (SIGTERM) or --once printed, 2 usage,
            3 cannot listen on the address, or --once could not collect; 130 interrupted (SIGINT)
"""


def register(sub: argparse._SubParsersAction) -> None:
    from badsum.exporter.canary import DEFAULT_STATE
    from badsum.exporter.server import DEFAULT_LISTEN
    from badsum.host.kernel_drops import CHOICES

    p = sub.add_parser("exporter", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", metavar="HOST:PORT", default=DEFAULT_LISTEN,
                   help=f"address to serve /metrics and /healthz on (default {DEFAULT_LISTEN}; port 0 picks a free one)")
    p.add_argument("--interval", metavar="SECONDS", type=_seconds(1, 3600), default=30.0,
                   help="time between the starts of two collections (default 30)")
    p.add_argument("--once", action="store_true", help="collect once, print the metrics text to stdout and exit")
    p.add_argument("--max-namespaces", metavar="N", type=_count, default=2000,
                   help="namespaces that get per-namespace series, the host's first (default 2000)")
    p.add_argument("--max-series", metavar="N", type=_count, default=50_000,
                   help="series per metric family (default 50000)")
    p.add_argument("--no-drops", action="store_true", help="do not watch kernel drops (no eBPF program, no tracefs instance)")
    p.add_argument("--drops", choices=CHOICES, default="auto",
                   help="where drops come from: kernel (eBPF: each drop's own namespace and device), tracefs "
                        "(host-wide, joined to namespaces by counters), auto (kernel, else tracefs; default)")  # fmt: skip
    p.add_argument("--cri-root", metavar="DIR", default="/",
                   help="where the host's /run and /var/lib are, for the runtimes' state files (default /)")
    p.add_argument("--canary-file", metavar="FILE", default=DEFAULT_STATE,
                   help=f"the result `badsum canary --state-file` writes (default {DEFAULT_STATE})")
    p.add_argument("--canary-every", metavar="SECONDS", type=_seconds(60, 7 * 86400), default=None,
                   help="also run the canary this often, writing --canary-file (builds namespaces; off by default)")
    p.set_defaults(run=run)


def _seconds(low: float, high: float):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"takes {low:g} to {high:g} seconds, not {v:g}")
        return v

    return parse


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError("takes 1 or more")
    return v


def _log(message: str) -> None:
    """The exporter's own lines on standard error (`badsum: exporter: ...`): a service's log."""
    say(f"exporter: {message}")


def run(args: argparse.Namespace) -> ExitCode:
    """Long-running: serves until SIGTERM (0) or SIGINT (130); `--once` prints one collection."""
    from badsum.exporter import service
    from badsum.exporter.collector import Options
    from badsum.exporter.server import Endpoint, exposition, parse_listen

    try:
        host, port = parse_listen(args.listen)
    except ValueError as e:
        say(str(e))
        return ExitCode.USAGE
    if os.geteuid() != 0:
        _log("not root: only the host's own namespace can be read; other namespaces' facts are unknown")
    options = Options(interval=args.interval, max_namespaces=args.max_namespaces, max_series=args.max_series,
                      canary_file=args.canary_file)  # fmt: skip
    exporter = service.make_exporter(options, args.cri_root, log=_log)
    if args.once:
        if exporter.collect_once().finished_at is None:
            _log("could not collect (see above)")
            return ExitCode.UNREADABLE
        sys.stdout.write(exposition(exporter))
        return ExitCode.OK
    try:
        endpoint = Endpoint(exporter, host, port)
    except OSError as e:
        say(f"cannot listen on {args.listen}: {e.strerror or e}")
        return ExitCode.UNREADABLE
    stop = threading.Event()
    got: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        served = service.serve(exporter, endpoint, stop, drops=None if args.no_drops else args.drops,
                               canary_every=args.canary_every, log=_log)  # fmt: skip
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if not served:
        return ExitCode.UNREADABLE
    _log("stopped")
    return ExitCode.INTERRUPTED if signal.SIGINT in got else ExitCode.OK


__all__ = ["register", "run"]
