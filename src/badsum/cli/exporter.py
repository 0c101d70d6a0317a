"""`badsum exporter`: serve this host's checksum facts as Prometheus metrics (read-only)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

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
    p.add_argument("--drops", choices=("auto", "kernel", "tracefs"), default="auto",
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


def _say(message: str) -> None:
    print(f"badsum: exporter: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from badsum.exporter.collector import Exporter, Options
    from badsum.exporter.server import Endpoint, exposition, parse_listen
    from badsum.host.cri import CriNamer

    try:
        host, port = parse_listen(args.listen)
    except ValueError as e:
        print(f"badsum: {e}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        _say("not root: only the host's own namespace can be read; other namespaces' facts are unknown")
    options = Options(interval=args.interval, max_namespaces=args.max_namespaces, max_series=args.max_series,
                      canary_file=args.canary_file)  # fmt: skip
    exporter = Exporter(options, namer=CriNamer(args.cri_root), log=_say)
    if args.once:
        latest = exporter.collect_once()
        if latest.finished_at is None:
            _say("could not collect (see above)")
            return 3
        sys.stdout.write(exposition(exporter))
        return 0

    try:
        endpoint = Endpoint(exporter, host, port)
    except OSError as e:
        print(f"badsum: cannot listen on {args.listen}: {e.strerror or e}", file=sys.stderr)
        return 3
    stop = threading.Event()
    got: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    watch = None
    canary = None
    try:
        if not args.no_drops:
            watch = _start_drops(exporter, getattr(args, "drops", "auto"))
        if args.canary_every:
            from badsum.exporter.canary import CanaryRunner

            canary = CanaryRunner(args.canary_file, args.canary_every, log=_say,
                                  on_error=lambda m: exporter.error("canary", m))  # fmt: skip
            canary.start()
        endpoint.start()
        h, p = endpoint.address
        _say(f"serving http://{f'[{h}]' if ':' in h else h}:{p}/metrics, collecting every {args.interval:g} s")
        collector = threading.Thread(target=exporter.run, args=(stop,), name="badsum-collector", daemon=True)
        collector.start()
        first = True
        while not stop.wait(0.5):
            if first and exporter.latest.finished_at is not None:
                first = False
                _say(f"first collection: {exporter.latest.namespaces} namespaces in {exporter.latest.duration_s:.1f} s")
            if not collector.is_alive():
                return 3
        endpoint.stop()
        # Let a collection in progress finish: its nsenter/nstat children end with it.
        collector.join(60)
    finally:
        if canary is not None:
            canary.stop()
        if watch is not None:
            with exporter.drops_lock:
                watch.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
    _say("stopped")
    return 130 if signal.SIGINT in got else 0


def _start_drops(exporter, choice: str = "auto"):
    """The kernel drop counter (each drop's own namespace and device), else the tracefs reader
    (host-wide drops, joined to namespaces by counters); says which."""
    try:
        from badsum.host.kernel_drops import KERNEL, open_drops
    except ImportError as e:
        exporter.error("drops", f"drop watching is not available: {e}")
        return None
    source = open_drops(choice, f"badsum-exporter-{os.getpid()}")
    if source.reader is None:
        exporter.error("drops", f"not watching drops: {source.why_not}")
        return None
    if source.method == KERNEL:
        _say("drops: counted by the kernel (eBPF), with the namespace and device of each dropped packet")
    else:
        why = f": the kernel drop counter is not available ({source.kernel_why_not})" if source.kernel_why_not else ""
        _say(f"drops: host-wide from tracefs, joined to namespaces by their counters{why}")
    exporter.drops = source.reader
    return source.reader


__all__ = ["register", "run"]
