"""The whole-capture run: one capture through the checksum scan and the flow analysis.

It sits above both `badsum.scan` (batches in, verdict arrays out) and `badsum.flows` (flow tables
and detectors) and is the one place that joins them into a `ScanSummary` (DESIGN.md, "Layers").

Scan fast, explain slow: the C scanner first, the detailed decoder for what it defers.

Batches come from the reader in order. The C scanner (GIL released) judges the common packets;
with `jobs > 1` several batches are scanned at once on threads. The packets it defers go through
the detailed decoder in capture order (reassembly needs that order). Each batch's non-ok rows go
to the sinks in frame order, then are dropped: memory does not grow with the capture.

Beside the checksums, each batch's packet facts (badsum.flows.facts, extracted on the same worker
threads) and non-ok rows feed the flow analysis, in frame order, which keeps bounded tables and
turns them into symptoms at the end (SYN ladders, PMTU, icmp-only ...).
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from badsum.checksum.detailed import DetailedJudge
from badsum.checksum.verdict import (
    MAX_DEPTH,
    N_LAYERS,
    N_STATUS,
    TP_STATUS_CSUMNOTREADY,
    TP_STATUS_UNKNOWN,
    Status,
    VerdictFlag,
)
from badsum.flows.analyzer import FlowAnalyzer
from badsum.flows.extract import FactExtractor
from badsum.flows.symptom import Symptom
from badsum.scan.batch import Batch
from badsum.scan.fast import STAT_KERNEL_OVERRIDES, FastResult, FastScanner, port_kinds
from badsum.scan.flowtable import FlowTable
from badsum.scan.rows import merge_sorted, verdicts_to_rows
from badsum.scan.timeline import Timeline
from badsum.wire.ports import PortTable

#: Examples of decode issues kept for the report (the counts are complete).
MAX_ISSUE_EXAMPLES = 20


def _acquire(permits: threading.Semaphore, stop: threading.Event) -> bool:
    """Take a permit unless the consumer has gone (`stop`); False then."""
    while not stop.is_set():
        if permits.acquire(timeout=0.1):
            return not stop.is_set()
    return False


class RowSink(Protocol):
    """Receives each batch's non-ok rows (frame order), and late rows for earlier frames."""

    def rows(self, batch: Batch, rows: np.ndarray) -> None: ...

    def late_rows(self, rows: np.ndarray) -> None: ...


@dataclass(frozen=True, slots=True)
class ScanConfig:
    """How to scan."""

    vxlan_ports: tuple[int, ...] = ()
    """UDP ports decoded as VXLAN besides 4789 and 8472."""
    jobs: int = 1
    """Threads for the fast path."""
    fast: bool = True
    """False: every packet through the detailed decoder (the reference path)."""
    symptoms: bool = True
    """Run the flow analysis (SYN ladders, PMTU, icmp-only ...) beside the checksums."""
    timeline: bool = False
    """Count bad and partial checksums over the capture's time (`pcap --html`'s chart)."""


@dataclass(slots=True)
class ScanSummary:
    """Everything the report needs; bounded in size whatever the capture."""

    packets: int = 0
    bytes: int = 0
    deferred: int = 0
    kernel_overrides: int = 0
    gso_frames: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros((MAX_DEPTH, N_LAYERS, N_STATUS), dtype=np.int64))
    linktypes: Counter = field(default_factory=Counter)
    decode_issues: Counter = field(default_factory=Counter)
    issue_examples: list[tuple[int, str]] = field(default_factory=list)
    undecodable: int = 0
    """Records with a decode issue and no checksum judged (too short for their headers, unknown link type)."""
    flows: FlowTable = field(default_factory=FlowTable)
    inbound_partial: int = 0
    symptoms: list[Symptom] = field(default_factory=list)
    """What the flow analysis concluded (empty when it did not run)."""
    flow_stats: dict[str, int] = field(default_factory=dict)
    """The flow analysis' own bookkeeping (flows tracked, evicted ...)."""
    timeline: Timeline | None = None
    """Bad and partial checksums over time (None unless ScanConfig.timeline)."""

    def status_total(self, status: Status) -> int:
        return int(self.counts[:, :, int(status)].sum())


class Scanner:
    """Runs batches through both paths; feed it with `run(batches)`."""

    def __init__(self, config: ScanConfig = ScanConfig(), sinks: Iterable[RowSink] = ()) -> None:
        self.config = config
        self.sinks = list(sinks)
        self.ports = PortTable.with_vxlan_ports(config.vxlan_ports)
        # One PortTable for both paths: the C port table is made from it (a clash between a
        # user's VXLAN port and a default port resolves the same way in both).
        self.fast = FastScanner(port_kinds(self.ports)) if config.fast else None
        self.judge = DetailedJudge(self.ports)
        self.summary = ScanSummary(timeline=Timeline() if config.timeline else None)
        self.facts = FactExtractor(fast=config.fast, ports=self.ports) if config.symptoms else None
        self.analyzer = FlowAnalyzer() if config.symptoms else None

    def run(self, batches: Iterable[Batch], progress: Callable[[Batch], None] | None = None) -> ScanSummary:
        for batch, (fast, facts) in self._fast_results(batches):
            self._finish_batch(batch, fast, facts)
            if progress is not None:
                progress(batch)
            # Drop the batch before the next one is read: it pins its mapped window of the file
            # (8 MiB of resident pages) and would otherwise stay alive through the next read.
            del batch, fast, facts
        late = verdicts_to_rows(self.judge.expired(final=True))
        self._emit_late(late)
        if self.analyzer is not None:
            self.summary.symptoms = self.analyzer.finish()
            self.summary.flow_stats = dict(self.analyzer.stats)
        return self.summary

    def _work(self, batch: Batch) -> tuple[FastResult | None, np.ndarray | None]:
        """The per-batch work that needs no order: it runs on the worker threads with --jobs."""
        fast = self.fast.scan(batch) if self.fast is not None else None
        facts = self.facts.extract(batch) if self.facts is not None else None
        return fast, facts

    def _fast_results(self, batches: Iterable[Batch]) -> Iterator[tuple[Batch, tuple[FastResult | None, np.ndarray | None]]]:
        if self.config.jobs <= 1:
            for b in batches:
                yield b, self._work(b)
                del b  # not alive while the next batch is read (see run)
            return
        # The reader (framing, inflate) runs on a thread of its own and hands batches to `jobs`
        # workers, while this thread runs the flow analysis and the sinks in frame order: with the
        # reader in this thread, framing and the analysis took turns and a second job sped up only
        # the scan. At most `jobs` batches are read and not yet finished (each pins a chunk of the
        # file): the reader takes a permit before it reads one, this thread returns it when done.
        with ThreadPoolExecutor(max_workers=self.config.jobs, thread_name_prefix="badsum-scan") as pool:
            window: queue.Queue = queue.Queue()
            permits = threading.Semaphore(self.config.jobs)
            stop = threading.Event()

            def read() -> None:
                it = iter(batches)
                try:
                    while _acquire(permits, stop):
                        b = next(it, None)
                        if b is None:
                            break
                        window.put((b, pool.submit(self._work, b)))
                        del b
                    else:
                        return
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer, after the batches before it
                    window.put((None, exc))
                    return
                window.put((None, None))

            reader = threading.Thread(target=read, name="badsum-read", daemon=True)
            reader.start()
            try:
                while True:
                    b, fut = window.get()
                    if b is None:
                        if fut is not None:
                            raise fut
                        break
                    yield b, fut.result()
                    del b, fut
                    permits.release()
            finally:
                stop.set()
                permits.release()  # a reader waiting for a permit sees `stop`
                reader.join()

    def _finish_batch(self, batch: Batch, fast: FastResult | None, facts: np.ndarray | None = None) -> None:
        s = self.summary
        n = len(batch)
        s.packets += n
        s.bytes += int(batch.caplen.sum(dtype=np.int64))
        for lt, c in zip(*np.unique(batch.linktype, return_counts=True)):
            s.linktypes[int(lt)] += int(c)
        parts = []
        if fast is not None:
            s.counts += fast.counts
            s.kernel_overrides += int(fast.stats[STAT_KERNEL_OVERRIDES])
            parts.append(fast.issues)
            todo = fast.deferred
        else:
            todo = np.arange(n, dtype=np.uint32)
        s.deferred += len(todo) if fast is not None else 0
        parts.append(self._detailed(batch, todo))
        rows = merge_sorted(parts)
        late = verdicts_to_rows(self.judge.expired())
        self._account(batch, rows)
        if s.timeline is not None:
            s.timeline.add(batch, rows)
        if self.analyzer is not None and facts is not None:
            self.analyzer.feed(facts, rows, batch.direction, batch.tp_status)
        for sink in self.sinks:
            sink.rows(batch, rows)
        self._emit_late(late)

    def _detailed(self, batch: Batch, indices: np.ndarray) -> np.ndarray:
        s = self.summary
        verdicts = []
        for i in indices.tolist():
            o, cap = int(batch.offset[i]), int(batch.caplen[i])
            frame_no = batch.first_frame + i
            res = self.judge.judge(
                frame_no,
                int(batch.ts_ns[i]),
                bytes(batch.buf[o : o + cap]),
                int(batch.origlen[i]),
                int(batch.linktype[i]),
                int(batch.tp_status[i]),
            )
            for v in res.verdicts:
                s.counts[min(v.depth, MAX_DEPTH - 1), int(v.layer), int(v.status)] += 1
                if v.flags & VerdictFlag.KERNEL and v.status == Status.OK:
                    s.kernel_overrides += 1
            verdicts.extend(res.verdicts)
            if res.frame.issues and not res.verdicts:  # fragment overlaps (res.issues) decoded fine
                s.undecodable += 1
            for issue in res.issues:
                s.decode_issues[issue.code] += 1
                if len(s.issue_examples) < MAX_ISSUE_EXAMPLES:
                    s.issue_examples.append((frame_no, str(issue)))
        return verdicts_to_rows(verdicts)

    def _account(self, batch: Batch, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        s = self.summary
        s.flows.add(rows)
        partial = rows["status"] == int(Status.PARTIAL)
        s.gso_frames += len(np.unique(rows["frame"][partial & ((rows["flags"] & int(VerdictFlag.GSO)) != 0)]))
        if partial.any():
            idx = (rows["frame"][partial] - batch.first_frame).astype(np.int64)
            idx = idx[(idx >= 0) & (idx < len(batch))]
            # A veth hands its peer the same skb with the sum still pending, so partial on a
            # received packet is normal there. It is a fault (KB-005: OVS netdev, AF_PACKET relays
            # re-create the packet) when the kernel recorded the packet as received with no
            # checksum pending: inbound (epb_flags) and tp_status without TP_STATUS_CSUMNOTREADY.
            tp = batch.tp_status[idx]
            fault = (batch.direction[idx] == 1) & (tp != TP_STATUS_UNKNOWN) & ((tp & TP_STATUS_CSUMNOTREADY) == 0)
            s.inbound_partial += int(fault.sum())

    def _emit_late(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        for v in rows:
            self.summary.counts[min(int(v["depth"]), MAX_DEPTH - 1), int(v["layer"]), int(v["status"])] += 1
        self.summary.flows.add(rows)
        for sink in self.sinks:
            sink.late_rows(rows)
