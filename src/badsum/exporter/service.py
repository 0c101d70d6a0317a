"""Running the exporter: the drop reader, the optional canary runner, the HTTP endpoint and the
collector thread, started in that order and stopped in the reverse one. The CLI (cli/exporter.py)
parses the command line, owns the signals and maps the outcome to an exit code.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from badsum.exporter.collector import Exporter, Options
from badsum.exporter.server import Endpoint

Log = Callable[[str], None]


def make_exporter(options: Options, cri_root: str, log: Log) -> Exporter:
    """The live exporter: this host's snapshot, its containers named from the runtimes' state under `cri_root`."""
    from badsum.host.cri import CriNamer

    return Exporter(options, namer=CriNamer(cri_root), log=log)


def start_drops(exporter: Exporter, choice: str, log: Log) -> object | None:
    """The kernel drop counter (each drop's own namespace and device), else the tracefs reader
    (host-wide drops, joined to namespaces by counters); says which. The started reader, or None."""
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
        log("drops: counted by the kernel (eBPF), with the namespace and device of each dropped packet")
    else:
        why = f": the kernel drop counter is not available ({source.kernel_why_not})" if source.kernel_why_not else ""
        log(f"drops: host-wide from tracefs, joined to namespaces by their counters{why}")
    exporter.drops = source.reader
    return source.reader


def serve(exporter: Exporter, endpoint: Endpoint, stop: threading.Event, *, drops: str | None,
          canary_every: float | None, log: Log) -> bool:  # fmt: skip
    """Serve /metrics and collect every `options.interval` until `stop` is set (True), or until the
    collector thread dies (False). `drops`: the `--drops` choice, None for no drop reader;
    `canary_every`: also run the canary this often (writing `options.canary_file`)."""
    reader = None
    canary = None
    try:
        if drops is not None:
            reader = start_drops(exporter, drops, log)
        if canary_every:
            from badsum.exporter.canary import CanaryRunner

            canary = CanaryRunner(exporter.options.canary_file or "", canary_every, log=log,
                                  on_error=lambda m: exporter.error("canary", m))  # fmt: skip
            canary.start()
        endpoint.start()
        h, p = endpoint.address
        log(f"serving http://{f'[{h}]' if ':' in h else h}:{p}/metrics, collecting every {exporter.options.interval:g} s")
        collector = threading.Thread(target=exporter.run, args=(stop,), name="badsum-collector", daemon=True)
        collector.start()
        first = True
        while not stop.wait(0.5):
            if first and exporter.latest.finished_at is not None:
                first = False
                log(f"first collection: {exporter.latest.namespaces} namespaces in {exporter.latest.duration_s:.1f} s")
            if not collector.is_alive():
                return False
        endpoint.stop()
        # Let a collection in progress finish: its nsenter/nstat children end with it.
        collector.join(60)
    finally:
        if canary is not None:
            canary.stop()
        if reader is not None:
            with exporter.drops_lock:
                reader.stop()  # type: ignore[attr-defined]
    return True


__all__ = ["make_exporter", "serve", "start_drops"]
