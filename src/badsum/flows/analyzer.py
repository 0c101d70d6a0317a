"""Flow analysis over a whole capture: packet facts in, batch by batch; symptoms out at the end.

`FlowAnalyzer.feed(facts, rows)` takes one batch (FACTS_DTYPE records in frame order, and that
batch's non-ok checksum rows, ISSUE_DTYPE) and `finish()` returns the symptoms, most severe first,
then by time. Every table has a cap (`Limits`); what falls out is counted in `stats`. No detector
keeps a reference to a batch's arrays past `feed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from badsum.flows.base import BatchView, Limits
from badsum.flows.overlay import Heartbeats, TunnelChecksums
from badsum.flows.pairs import PairDetector
from badsum.flows.pmtu import PmtuDetector
from badsum.flows.retrans import BadRetransmissions, Blackhole
from badsum.flows.symptom import Severity, Symptom
from badsum.flows.syn import SynDetector
from badsum.flows.tunnel_zero import TunnelZeroSums
from badsum.flows.udp6 import Receiver, Udp6Flows

__all__ = ["FlowAnalyzer", "Limits"]

_RANK = {Severity.FAIL: 0, Severity.WARN: 1, Severity.INFO: 2}


class Detector(Protocol):
    def feed(self, v: BatchView) -> None: ...

    def finish(self) -> list[Symptom]: ...


class FlowAnalyzer:
    """The detectors, in one explicit order (pairs before SYNs so handshakes closed early reach it)."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits = limits or Limits()
        self.pairs = PairDetector(limits)
        self.syn = SynDetector(limits, on_result=self.pairs.tcp_result)
        self.pmtu = PmtuDetector(limits)
        self.bad = BadRetransmissions(limits)
        self.blackhole = Blackhole(limits, self.pmtu.quoted_flows)
        self.tunnels = TunnelChecksums(limits)
        self.heartbeats = Heartbeats(limits)
        self.zero_sums = TunnelZeroSums(limits)
        self.udp6 = Udp6Flows(limits)
        #: feed order; finish runs the SYN detector first (it reports connect outcomes to `pairs`)
        self.detectors: tuple[Detector, ...] = (self.pairs, self.syn, self.pmtu, self.bad, self.blackhole, self.tunnels,
                                                self.heartbeats, self.zero_sums, self.udp6)  # fmt: skip
        self.packets = 0
        self.batches = 0
        self._finished: list[Symptom] | None = None

    def use_receivers(self, receivers: tuple[Receiver, ...]) -> None:
        """Checksum counters of the receiving namespaces (a host snapshot): they turn UDPv6 flows whose
        sums verify into `udp6-csum-errors` where Udp6InCsumErrors rose (KB-011)."""
        if self._finished is not None:
            raise RuntimeError("use_receivers() after finish()")
        self.udp6.receivers = tuple(receivers)

    def feed(self, facts: np.ndarray, rows: np.ndarray, direction: np.ndarray | None = None,
             tp_status: np.ndarray | None = None) -> None:  # fmt: skip
        """One batch: its facts, its non-ok checksum rows and, when the capture recorded them, each
        packet's direction and kernel status (they decide whether a partial sum is a fault)."""
        if self._finished is not None:
            raise RuntimeError("feed() after finish()")
        v = BatchView(facts, rows, direction, tp_status)
        self.packets += v.n
        self.batches += 1
        for d in self.detectors:
            d.feed(v)

    def finish(self) -> list[Symptom]:
        if self._finished is None:
            out = self.syn.finish()
            for d in self.detectors:
                if d is not self.syn:
                    out += d.finish()
            out.sort(key=lambda s: (_RANK[s.severity], s.first_ts_ns, s.first_frame, s.kind.value))
            self._finished = out
        return list(self._finished)

    @property
    def stats(self) -> Mapping[str, int]:
        """Table sizes and evictions (a bounded table that evicted lost detail, not counts of packets)."""
        tables = {
            "tcp_flows": self.syn.table,
            "bad_segments": self.bad.table,
            "watched_flows": self.blackhole.watched,
            "tcp_pairs": self.pairs.tcp,
            "pmtu_reports": self.pmtu.reports,
            "tunnels": self.tunnels.table,
            "heartbeats": self.heartbeats.table,
            "zero_sum_tunnels": self.zero_sums.table,
            "zero_sum_pairs": self.zero_sums.nonzero,
            "udp6_flows": self.udp6.table,
        }
        counts = {name: (t.created, t.evicted) for name, t in tables.items()}
        counts["host_pairs"] = (self.pairs.created, self.pairs.evicted)
        out = {"packets": self.packets, "batches": self.batches}
        out["flows_tracked"] = sum(c for c, _ in counts.values())
        out["flows_evicted"] = sum(e for _, e in counts.values())
        for name, (c, e) in counts.items():
            out[f"{name}_tracked"] = c
            out[f"{name}_evicted"] = e
        out["symptoms_dropped"] = self.syn.dropped
        return out
