""""Ping works, TCP fails": per host pair, ICMP echo answered while TCP connects fail or UDP gets no
reply.

ICMP checksums are always computed in software; TCP and UDP ones are the ones transmit offload
leaves unfinished (KB-005, KB-007), so a path that mangles offloaded packets passes ping and
nothing else. Echo and UDP packets are counted per host pair in a direct-mapped table of numpy
columns, filled in C (`_fastscan.pair_count`, in frame order; no Python per packet or per pair);
TCP connect outcomes come from the SYN detector when it closes a handshake.
"""

from __future__ import annotations

import numpy as np

from badsum.checksum.verdict import Flow
from badsum.flows.base import BatchView, Bounded, Limits, addr_text
from badsum.flows.causes import causes_for
from badsum.flows.symptom import Evidence, Kind, Severity, Symptom
from badsum.native import _fastscan

# count columns: echo requests sent by direction 0/1, echo replies sent by direction 0/1, UDP by direction 0/1
REQ0, REQ1, REP0, REP1, UDP0, UDP1 = range(6)


class PairDetector:
    """Host pairs in a direct-mapped table of plain numpy columns (a colliding pair replaces the old)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        size = 1 << max(int(limits.host_pairs - 1).bit_length(), 4)
        self.key = np.zeros(size, dtype=np.uint64)  # host-pair key | 1 (0: empty slot)
        self.counts = np.zeros((size, 6), dtype=np.int64)
        self.a_dir = np.zeros(size, dtype=np.int8)  # host-pair direction of the echo initiator's packets
        self.ipver = np.zeros(size, dtype=np.uint8)
        self.depth = np.zeros(size, dtype=np.uint8)
        self.first = np.zeros((size, 2), dtype=np.int64)  # frame, ts of the first echo
        self.last = np.zeros((size, 2), dtype=np.int64)  # frame, ts of the last echo
        self.addr = np.zeros((size, 2, 16), dtype=np.uint8)  # the sender in direction 0 and in direction 1
        self.created = self.evicted = 0
        self.tcp: Bounded[int, list[int]] = Bounded(limits.host_pairs)  # host pair -> [connects, failed]

    def tcp_result(self, hp: int, failed: bool) -> None:
        """A closed handshake between the pair (from the SYN detector): connects and failures."""
        hp |= 1  # as in the table
        cur = self.tcp.get(hp)
        if cur is None:
            self.tcp.put(hp, [1, int(failed)])
        else:
            cur[0] += 1
            cur[1] += int(failed)

    def feed(self, v: BatchView) -> None:
        icmp = v.icmp_idx
        if len(icmp):
            self._count(v.facts, icmp, udp=False)
        if self.created:
            udp = v.udp_idx
            if len(udp):
                self._count(v.facts, udp, udp=True)

    def _count(self, facts: np.ndarray, idx: np.ndarray, udp: bool) -> None:
        # One C pass per batch: a few hundred echoes spread over a table of megabytes made a dozen
        # numpy calls and their random writes cost more than the per-packet work itself.
        created, evicted = _fastscan.pair_count(
            np.ascontiguousarray(facts), np.ascontiguousarray(idx, dtype=np.int64), udp, self.key, self.counts,
            self.a_dir, self.ipver, self.depth, self.first, self.last, self.addr,
        )  # fmt: skip
        self.created += created
        self.evicted += evicted

    def finish(self) -> list[Symptom]:
        out = []
        # only pairs that could be a symptom reach Python: echo answered, and some TCP result or
        # unanswered UDP (the exact test follows, per pair)
        occ = np.flatnonzero(self.key != 0)
        a_dir = self.a_dir[occ].astype(np.int64)
        c, rows = self.counts[occ], np.arange(len(occ))
        udp_silent = (c[rows, UDP0 + a_dir] >= 2) & (c[rows, UDP0 + 1 - a_dir] == 0)
        tcp_known = np.isin(self.key[occ], np.fromiter(self.tcp.data, dtype=np.uint64, count=len(self.tcp.data)))
        for i in occ[(c[rows, REP0 + 1 - a_dir] > 0) & (udp_silent | tcp_known)].tolist():
            a = int(self.a_dir[i])
            counts = self.counts[i].tolist()
            requests, replies = counts[REQ0 + a], counts[REP0 + 1 - a]
            if not replies:
                continue
            udp_sent, udp_answered = counts[UDP0 + a], counts[UDP0 + 1 - a]
            connects, failed = self.tcp.data.get(int(self.key[i]), [0, 0])
            tcp_ok = connects - failed
            tcp_bad = failed > 0 and tcp_ok == 0
            udp_bad = udp_sent >= 2 and udp_answered == 0 and tcp_ok == 0
            if not (tcp_bad or udp_bad):
                continue
            details = {"echo_requests": requests, "echo_replies": replies, "tcp_connects": connects,
                       "tcp_failed": failed, "udp_sent": udp_sent, "udp_answered": udp_answered}  # fmt: skip
            v = int(self.ipver[i])
            src, dst = addr_text(self.addr[i, a].tobytes(), v), addr_text(self.addr[i, 1 - a].tobytes(), v)
            fails = []
            if tcp_bad:
                fails.append(f"{failed} of {connects} TCP connect{'s' * (connects != 1)} failed")
            if udp_bad:
                fails.append(f"{udp_sent} UDP datagrams got no reply")
            (f0, t0), (f1, t1) = self.first[i].tolist(), self.last[i].tolist()
            evidence = (Evidence(f0, t0, f"first ICMP echo between {src} and {dst}"), Evidence(f1, t1, "last ICMP echo"))
            depth = int(self.depth[i])
            out.append(Symptom(
                kind=Kind.ICMP_ONLY,
                severity=Severity.FAIL if tcp_bad else Severity.WARN,
                summary=f"ping answered ({replies} replies to {requests} echo requests) but " + " and ".join(fails),
                flow=Flow(v, src, dst, 0, 0, 0),
                count=failed if tcp_bad else udp_sent,
                first_ts_ns=t0,
                last_ts_ns=t1,
                first_frame=f0,
                last_frame=f1,
                evidence=evidence,
                likely_causes=causes_for(Kind.ICMP_ONLY, details, depth),
                details=details,
                depth=depth,
            ))  # fmt: skip
        return out
