"""Retransmissions that mean something: segments resent after a bad/partial checksum (the receiver
dropped them), and large segments resent and never acknowledged while small ones are (a PMTU
black hole).

A partial checksum counts only on a segment the capture saw arriving with no checksum pending in
the kernel (`BatchView.tcp_fault`): on the sender's side it is transmit offload at work, and a
resend there is a loss somewhere, not a checksum drop. Both detectors key segments by (flow,
direction, sequence number) and treat a copy within `duplicate_ms` as the same packet seen twice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from badsum.checksum.verdict import Status
from badsum.flows.base import (
    BatchView,
    Bounded,
    Limits,
    SegmentTable,
    add_evidence,
    flow_keys,
    flow_of,
    seq_after_eq,
    take,
)
from badsum.flows.causes import causes_for
from badsum.flows.facts import TCP_ACK
from badsum.flows.symptom import Evidence, Kind, Severity, Symptom


class _Bad:
    """A segment first seen with a bad/partial checksum and sent again; its copies and their checksums."""

    __slots__ = (
        "duplicates",
        "evidence",
        "fact",
        "first_frame",
        "first_ts",
        "last_frame",
        "last_ts",
        "later_ok",
        "retrans",
        "statuses",
    )  # fmt: skip

    def __init__(self, fact: np.void | None, status: int, first_frame: int, first_ts: int, last_ts: int) -> None:
        self.fact = fact  # the first retransmission (same flow and direction as the bad segment)
        self.statuses = {status}
        self.first_frame, self.first_ts = first_frame, first_ts
        self.retrans = self.later_ok = self.duplicates = 0
        self.last_ts, self.last_frame = last_ts, first_frame
        self.evidence: list[Evidence] = []


class BadRetransmissions:
    """Bad/partial TCP segments go into a SegmentTable (vectorised); only their repeats reach Python."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.dup_ns = int(limits.duplicate_ms * 1e6)
        self.segments = SegmentTable(limits.segment_table_bits, filtered=True)
        self.stored = 0
        self.table: Bounded[tuple[int, int, int], _Bad] = Bounded(limits.bad_segments, self._evicted)
        self.done: list[tuple[int, _Bad]] = []

    def _evicted(self, k: tuple[int, int, int], e: _Bad) -> None:
        if len(self.done) < self.limits.symptoms:
            self.done.append((k[0], e))

    def feed(self, v: BatchView) -> None:
        status = v.tcp_fault
        if status is None:
            if not self.stored:
                return  # no bad segment seen yet: nothing can be a repeat of one
            status = np.zeros(v.n, dtype=np.uint8)
        else:
            self.stored += int(np.count_nonzero(status))
        # only segments whose ports ever stored a bad one are looked up (the table's filter)
        h, prev = self.segments.match(v.facts, status, min_payload=1)
        if not len(h):
            return
        sub = take(v.facts, h)
        keys, dirs = flow_keys(sub)
        seqs, ts, frame, st = sub["seq"].tolist(), sub["ts_ns"].tolist(), sub["frame"].tolist(), status[h].tolist()
        for j, (p_ts, p_frame, p_first, p_status) in enumerate(prev.tolist()):
            k = (int(keys[j]), int(dirs[j]), seqs[j])
            t, fr = ts[j], frame[j]
            e = self.table.get(k)
            if e is None:
                e = _Bad(sub[j : j + 1].copy()[0], p_status, p_frame, p_first, p_ts)
                self.table.put(k, e)
            if fr == e.last_frame:
                continue
            if abs(t - e.last_ts) <= self.dup_ns:
                e.duplicates += 1
                continue
            e.retrans += 1
            e.last_ts, e.last_frame = t, fr
            if st[j] == 0:
                e.later_ok += 1
                add_evidence(e.evidence, Evidence(fr, t, f"retransmission {e.retrans}: checksum ok"))
            else:
                e.statuses.add(st[j])
                add_evidence(e.evidence, Evidence(fr, t, f"retransmission {e.retrans}: checksum {Status(st[j]).label} again"))

    def finish(self) -> list[Symptom]:
        per_flow: dict[int, list[_Bad]] = {}
        for key, e in self.done + [(k[0], e) for k, e in self.table.items() if e.retrans]:
            per_flow.setdefault(key, []).append(e)
        out = []
        for segs in per_flow.values():
            statuses = set().union(*(e.statuses for e in segs))
            status = Status(statuses.pop()).label if len(statuses) == 1 else "mixed"
            retrans = sum(e.retrans for e in segs)
            later_ok = sum(e.later_ok for e in segs)
            first = min(segs, key=lambda e: e.first_frame)
            last = max(segs, key=lambda e: e.last_frame)
            evidence: list[Evidence] = []
            for e in sorted(segs, key=lambda e: e.first_frame):
                f = e.fact
                label = "/".join(sorted(Status(x).label for x in e.statuses))
                text = f"TCP checksum {label}: seq {int(f['seq'])}, {int(f['payload'])} bytes"
                add_evidence(evidence, Evidence(e.first_frame, e.first_ts, text))
                for item in e.evidence:
                    add_evidence(evidence, item)
            details = {"status": status, "segments": len(segs), "retransmissions": retrans, "later_ok": later_ok}
            fact = first.fact
            depth = int(fact["depth"])
            what = "partial (unfinished offload)" if status == "partial" else status
            summary = (f"{len(segs)} segment{'s' * (len(segs) != 1)} with a {what} TCP checksum sent again {retrans} "
                       f"time{'s' * (retrans != 1)}: the receiver drops them"
                       + (f" ({later_ok} later cop{'ies' if later_ok != 1 else 'y'} with a good checksum)" if later_ok else ""))  # fmt: skip
            out.append(Symptom(
                kind=Kind.BAD_RETRANSMISSIONS,
                severity=Severity.FAIL if later_ok == 0 else Severity.WARN,
                summary=summary,
                flow=flow_of(fact),
                count=retrans,
                first_ts_ns=first.first_ts,
                last_ts_ns=last.last_ts,
                first_frame=first.first_frame,
                last_frame=last.last_frame,
                evidence=tuple(evidence),
                likely_causes=causes_for(Kind.BAD_RETRANSMISSIONS, details, depth),
                details=details,
                depth=depth,
            ))  # fmt: skip
        return out


class _Seg:
    __slots__ = ("first_frame", "first_ts", "ip_len", "last_frame", "last_ts", "payload", "sends")

    def __init__(self, ip_len: int, payload: int, ts: int, frame: int) -> None:
        self.ip_len, self.payload, self.sends = ip_len, payload, 1
        self.first_ts = self.last_ts = ts
        self.first_frame = self.last_frame = frame


class _Watch:
    __slots__ = ("ack", "depth", "facts", "key", "pxor", "segs")

    def __init__(self, key: int, pxor: int, depth: int) -> None:
        self.key, self.pxor, self.depth = key, pxor, depth
        self.facts: list[np.void | None] = [None, None]  # first packet seen per direction
        self.segs: dict[tuple[int, int], _Seg] = {}
        self.ack: list[int | None] = [None, None]  # highest ACK sent by each direction


class Blackhole:
    """Large segments retransmitted and never acknowledged, smaller ones acknowledged, no ICMP."""

    def __init__(self, limits: Limits, quoted_flows: Callable[[], set[int]]) -> None:
        self.limits = limits
        self.dup_ns = int(limits.duplicate_ms * 1e6)
        self.segments = SegmentTable(limits.segment_table_bits)  # recent large segments
        self.watched: Bounded[int, _Watch] = Bounded(limits.watched_flows, self._evicted)
        self.filter = np.zeros(1 << 16, dtype=np.int32)
        self.quoted_flows = quoted_flows
        self.done: list[_Watch] = []

    def _evicted(self, k: int, w: _Watch) -> None:
        self.filter[w.pxor] -= 1
        if len(self.done) < self.limits.watched_flows:
            self.done.append(w)

    def feed(self, v: BatchView) -> None:
        new = self._retransmitted(v)
        if len(new):
            keys, _ = flow_keys(v.facts, new)
            for j, k in zip(new.tolist(), keys.tolist()):
                if k not in self.watched:
                    f = v.facts[j]
                    w = _Watch(k, int(f["sport"]) ^ int(f["dport"]), int(f["depth"]))
                    self.watched.put(k, w)
                    self.filter[w.pxor] += 1
        if not len(self.watched):
            return
        pxor = v.pxor
        cand = np.flatnonzero(v.tcp & (self.filter[pxor] > 0))
        if not len(cand):
            return
        keys, dirs = flow_keys(v.facts, cand)
        data = self.watched.data
        for j, k, d in zip(cand.tolist(), keys.tolist(), dirs.tolist()):
            w = data.get(k)
            if w is not None:
                self._packet(w, v.facts[j], d)

    def _retransmitted(self, v: BatchView) -> np.ndarray:
        """Indices of large segments seen before (same seq and ports) more than duplicate_ms before
        their previous send (every large segment is stored)."""
        h, prev = self.segments.match(v.facts, None, min_ip_len=self.limits.large_segment)
        if not len(h):
            return h
        return h[np.abs(v.facts["ts_ns"][h] - prev[:, 0]) > self.dup_ns]

    def _packet(self, w: _Watch, f: np.void, d: int) -> None:
        if w.facts[d] is None:
            w.facts[d] = f.copy()
        flags = int(f["tcp_flags"])
        if flags & TCP_ACK:
            a, cur = int(f["ack"]), w.ack[d]
            if cur is None or seq_after_eq(a, cur):
                w.ack[d] = a
        payload = int(f["payload"])
        if not payload:
            return
        k = (d, int(f["seq"]))
        ts, frame = int(f["ts_ns"]), int(f["frame"])
        s = w.segs.get(k)
        if s is None:
            if len(w.segs) < self.limits.segments_per_flow:
                w.segs[k] = _Seg(int(f["ip_len"]), payload, ts, frame)
            return
        if abs(ts - s.last_ts) <= self.dup_ns:
            return
        s.sends += 1
        s.ip_len, s.payload = max(s.ip_len, int(f["ip_len"])), max(s.payload, payload)
        s.last_ts, s.last_frame = ts, frame

    def finish(self) -> list[Symptom]:
        quoted = self.quoted_flows()
        out = []
        for w in self.done + self.watched.values():
            if w.key in quoted:
                continue  # an ICMP error told the sender: that is `pmtu`, not a black hole
            s = self._symptom(w)
            if s is not None:
                out.append(s)
        return out

    def _symptom(self, w: _Watch) -> Symptom | None:
        acked: list[_Seg] = []
        stuck: dict[int, list[_Seg]] = {0: [], 1: []}
        for (d, seq), s in w.segs.items():
            peer = w.ack[1 - d]
            if peer is not None and seq_after_eq(peer, (seq + s.payload) & 0xFFFFFFFF):
                acked.append(s)
            elif s.sends > 1 and s.ip_len >= self.limits.large_segment:
                stuck[d].append(s)
        d = max(stuck, key=lambda x: len(stuck[x]))
        if not stuck[d] or not acked:
            return None
        largest_acked = max(s.ip_len for s in acked)
        smallest_unacked = min(s.ip_len for s in stuck[d])
        if largest_acked >= smallest_unacked or w.facts[d] is None:
            return None
        retrans = sum(s.sends - 1 for s in stuck[d])
        first = min(s.first_ts for s in stuck[d])
        last = max(s.last_ts for s in stuck[d])
        details = {"largest_acked": largest_acked, "smallest_unacked": smallest_unacked, "retransmissions": retrans,
                   "stall_s": round((last - first) / 1e9, 3)}  # fmt: skip
        evidence: list[Evidence] = []
        for s in sorted(stuck[d], key=lambda s: s.first_frame):
            add_evidence(evidence, Evidence(s.first_frame, s.first_ts, f"{s.ip_len}-byte segment, sent {s.sends} times, never acknowledged"))
        fact = w.facts[d]
        return Symptom(
            kind=Kind.BLACKHOLE,
            severity=Severity.FAIL,
            summary=(f"{len(stuck[d])} segment{'s' * (len(stuck[d]) != 1)} of {smallest_unacked}+ bytes retransmitted {retrans} "
                     f"times and never acknowledged, while {largest_acked}-byte ones were; no ICMP: a PMTU black hole"),
            flow=flow_of(fact),
            count=retrans,
            first_ts_ns=first,
            last_ts_ns=last,
            first_frame=min(s.first_frame for s in stuck[d]),
            last_frame=max(s.last_frame for s in stuck[d]),
            evidence=tuple(evidence),
            likely_causes=causes_for(Kind.BLACKHOLE, details, w.depth),
            details=details,
            depth=w.depth,
        )
