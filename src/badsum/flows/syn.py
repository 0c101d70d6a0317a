"""SYN retry ladders: handshakes whose SYN (or SYN-ACK) had to be sent again, and how they ended.

"Connections take 63 seconds" is 1+2+4+8+16+32 s of SYN retransmissions (RFC 6298 back-off from
the 1 s initial RTO); Linux >= 6.x first retries linearly (`net.ipv4.tcp_syn_linear_timeouts`,
default 4: 1 s steps, then doubling); stacks with an RTT-based first timeout (TFO) double from tens
of milliseconds. A send of the same SYN (flow and sequence number) within `duplicate_ms` of the
previous one is the same packet seen twice (two capture points, or a duplicating switch), not a
retransmission.

Vectorised part: SYNs are selected per batch; the other packets of pending handshakes are found
through a 64 K filter on `sport ^ dport` (direction-free), and only those get flow keys.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from badsum.checksum.verdict import Status
from badsum.flows.base import (
    BatchView,
    Bounded,
    Limits,
    add_evidence,
    flow_keys,
    flow_of,
    fmt_s,
    host_pair_keys,
    take,
)
from badsum.flows.causes import causes_for
from badsum.flows.facts import TCP_ACK, TCP_RST, TCP_SYN
from badsum.flows.symptom import Evidence, Kind, Severity, Symptom

PENDING, CONNECTED, REFUSED, RESET = 0, 1, 2, 3


def ladder_pattern(gaps: list[float]) -> str:
    """Name the back-off of successive retransmission gaps (seconds)."""
    if not gaps:
        return "irregular"
    rtt_based = gaps[0] < 0.75  # Linux's first SYN timeout is 1 s (TCP_TIMEOUT_INIT); less means an RTT-based RTO
    ratios = [b / a if a > 0 else float("inf") for a, b in itertools.pairwise(gaps)]
    doubling = [1.5 <= r <= 2.6 for r in ratios]
    same = [0.8 <= r <= 1.25 for r in ratios]
    if rtt_based:
        return "rtt-backoff" if not ratios or any(doubling) and all(d or s for d, s in zip(doubling, same)) else "irregular"
    if all(doubling):
        return "exponential"  # also a single gap of ~1 s: the first step of the classic ladder
    if all(same):
        return "linear"
    k = next(i for i, s in enumerate(same) if not s)
    if k >= 1 and all(doubling[k:]):
        return "linear-then-exponential"
    return "irregular"


#: Connects slower than this are failures (the user-visible incidents start at 3 s: 1+2 s of SYN back-off).
SLOW_CONNECT_S = 3.0


class _Sends:
    """One side's ladder: the distinct sends of one SYN (or SYN-ACK) sequence number."""

    __slots__ = ("duplicates", "faults", "first_fault", "frames", "last", "ok_after_fault", "sent", "seq", "times")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.times: list[int] = []
        self.frames: list[int] = []
        self.duplicates = 0
        self.sent = 0
        self.last = 0
        self.faults: list[int] = []  # checksum status of each faulty send (BatchView.tcp_fault)
        self.first_fault = 0  # that of the first send (0: the first send was fine)
        self.ok_after_fault = 0

    def send(self, ts: int, frame: int, dup_ns: int, fault: int = 0) -> bool:
        """Record a send; False when it is a duplicate of the previous one."""
        if self.sent and abs(ts - self.last) <= dup_ns:
            self.duplicates += 1
            return False
        if not self.sent:
            self.first_fault = fault
        if fault:
            self.faults.append(fault)
        elif self.faults:
            self.ok_after_fault += 1
        self.sent += 1
        self.last = ts
        if len(self.times) < 256:  # a ladder longer than this is still reported, its tail not kept
            self.times.append(ts)
            self.frames.append(frame)
        return True


class Handshake:
    __slots__ = (
        "client",
        "client_dir",
        "depth",
        "end_frame",
        "end_text",
        "end_ts",
        "fact",
        "first_ts",
        "hp",
        "key",
        "pxor",
        "reverse",
        "server",
        "state",
    )  # fmt: skip

    def __init__(self, key: int, client_dir: int, hp: int, fact: np.void, reverse: bool) -> None:
        self.key, self.client_dir, self.hp = key, client_dir, hp
        self.fact, self.reverse = fact, reverse
        self.client: _Sends | None = None
        self.server: _Sends | None = None
        self.state = PENDING
        self.end_ts = self.end_frame = 0
        self.end_text = ""
        self.first_ts = int(fact["ts_ns"])
        self.pxor = int(fact["sport"]) ^ int(fact["dport"])
        self.depth = int(fact["depth"])


#: (host-pair key, failed) for every closed handshake the client of which was seen: icmp-only joins these.
TcpResult = Callable[[int, bool], None]


class SynDetector:
    def __init__(self, limits: Limits, on_result: TcpResult | None = None) -> None:
        self.limits = limits
        self.dup_ns = int(limits.duplicate_ms * 1e6)
        self.table: Bounded[int, Handshake] = Bounded(limits.tcp_flows, lambda k, h: self._close(h, evicted=True))
        self.pending: dict[int, Handshake] = {}  # creation order: the oldest expire first
        self.filter = np.zeros(1 << 16, dtype=np.int32)  # pending handshakes per sport ^ dport
        self.results: list[Symptom] = []
        self.dropped = 0
        self.on_result = on_result

    # ---- per batch ----

    def feed(self, v: BatchView) -> None:
        syn = v.syn_idx
        if not len(syn) and not self.pending:
            return
        pxor = v.pxor
        tcp = v.tcp
        # the batch's own SYNs join the filter first: their handshake may complete in this batch
        fresh = np.zeros(1 << 16, dtype=bool)
        fresh[pxor[syn]] = True
        watch = fresh[pxor] | (self.filter[pxor] > 0) if self.pending else fresh[pxor]
        cand = np.flatnonzero(tcp & watch)
        fault = v.tcp_fault
        if len(cand):
            sub = take(v.facts, cand)
            keys, dirs = flow_keys(sub)
            hps, _ = host_pair_keys(sub)
            flags = sub["tcp_flags"]
            for i in range(len(sub)):
                k = int(keys[i])
                if flags[i] & TCP_SYN:
                    self._syn(sub[i], k, int(dirs[i]), int(hps[i]), int(fault[cand[i]]) if fault is not None else 0)
                else:
                    h = self.pending.get(k)
                    if h is not None:
                        self._other(h, sub[i], int(dirs[i]))
        if v.n and self.pending:
            self._expire(int(v.facts["ts_ns"][-1]) - int(self.limits.syn_timeout_s * 1e9))

    def _new(self, key: int, client_dir: int, hp: int, fact: np.void, reverse: bool) -> Handshake:
        old = self.table.pop(key)
        if old is not None:
            self._close(old)
        h = Handshake(key, client_dir, hp, fact.copy(), reverse)
        self.table.put(key, h)
        self.pending[key] = h
        self.filter[h.pxor] += 1
        return h

    def _syn(self, f: np.void, key: int, d: int, hp: int, fault: int = 0) -> None:
        seq, ts, frame = int(f["seq"]), int(f["ts_ns"]), int(f["frame"])
        h = self.table.get(key)
        if not f["tcp_flags"] & TCP_ACK:  # SYN from the client
            if h is None or (h.client is not None and h.client.seq != seq) or (h.client is None and h.state != PENDING):
                h = self._new(key, d, hp, f, False)  # a new connection attempt (new ISN, or port reuse)
            if h.client is None:
                h.client = _Sends(seq)
            if h.state != PENDING:
                return  # the same SYN after the handshake completed: a late copy, not a ladder
            h.client.send(ts, frame, self.dup_ns, fault)
            return
        # SYN-ACK from the server
        if h is None:
            h = self._new(key, 1 - d, hp, f, True)
        if d == h.client_dir or h.state != PENDING:
            return  # simultaneous open, or a SYN-ACK after the handshake completed
        if h.server is None:
            h.server = _Sends(seq)
        elif h.server.seq != seq:
            return
        h.server.send(ts, frame, self.dup_ns, fault)

    def _other(self, h: Handshake, f: np.void, d: int) -> None:
        flags = int(f["tcp_flags"])
        if flags & TCP_RST:
            from_server = d != h.client_dir
            self._resolve(h, REFUSED if from_server else RESET, f, "RST from the server" if from_server else "RST from the client")
        elif (d == h.client_dir and flags & TCP_ACK) or int(f["payload"]) > 0:
            self._resolve(h, CONNECTED, f, "handshake completed: " + ("ACK from the client" if d == h.client_dir else "data from the server"))

    def _resolve(self, h: Handshake, state: int, f: np.void, text: str) -> None:
        h.state, h.end_ts, h.end_frame, h.end_text = state, int(f["ts_ns"]), int(f["frame"]), text
        if self.pending.pop(h.key, None) is not None:
            self.filter[h.pxor] -= 1

    def _expire(self, before_ns: int) -> None:
        for key in list(self.pending):
            h = self.pending[key]
            if h.first_ts >= before_ns:
                break
            self.table.pop(key)
            self._close(h)

    # ---- closing ----

    def _close(self, h: Handshake, evicted: bool = False) -> None:
        if self.pending.pop(h.key, None) is not None:
            self.filter[h.pxor] -= 1
        if h.client is not None and self.on_result is not None:
            self.on_result(h.hp, h.state != CONNECTED)
        for side in (h.client, h.server):
            if side is not None and side.sent > 1:
                found = [self._symptom(h, side, side is h.client)]
                if side.first_fault:
                    found.append(self._fault_symptom(h, side, side is h.client))
                for s in found:
                    if len(self.results) < self.limits.symptoms:
                        self.results.append(s)
                    else:
                        self.dropped += 1

    def _fault_symptom(self, h: Handshake, s: _Sends, client: bool) -> Symptom:
        """The handshake segment itself arrived with a checksum the receiver rejects and had to be
        sent again: `bad-retransmissions` for the SYN (or SYN-ACK), beside its ladder. On the OVS
        userspace datapath (KB-005) the SYN is the only segment that ever goes out."""
        what = "SYN" if client else "SYN-ACK"
        statuses = {Status(x).label for x in s.faults}
        status = statuses.pop() if len(statuses) == 1 else "mixed"
        retrans = s.sent - 1
        details = {"status": status, "segments": 1, "retransmissions": retrans, "later_ok": s.ok_after_fault}
        evidence: list[Evidence] = []
        for i, (t, fr) in enumerate(zip(s.times, s.frames)):
            add_evidence(evidence, Evidence(fr, t, f"{what} {'sent' if i == 0 else f'resent ({i})'}"))
        return Symptom(
            kind=Kind.BAD_RETRANSMISSIONS,
            severity=Severity.FAIL if s.ok_after_fault == 0 else Severity.WARN,
            summary=(f"{what} arrived with a {status} checksum and was sent {s.sent} times: "
                     "the receiver drops it for its checksum"),
            flow=flow_of(h.fact, reverse=h.reverse),
            count=retrans,
            first_ts_ns=s.times[0],
            last_ts_ns=s.times[-1],
            first_frame=s.frames[0],
            last_frame=s.frames[-1],
            evidence=tuple(evidence),
            likely_causes=causes_for(Kind.BAD_RETRANSMISSIONS, details, h.depth),
            details=details,
            depth=h.depth,
        )

    def _symptom(self, h: Handshake, s: _Sends, client: bool) -> Symptom:
        what = "SYN" if client else "SYN-ACK"
        gaps = [(b - a) / 1e9 for a, b in zip(s.times, s.times[1:])]
        n = s.sent - 1
        if h.state == CONNECTED:
            outcome = "connected"
        elif (h.state == REFUSED and client) or (h.state == RESET and not client):
            outcome = "refused"
        else:
            outcome = "unanswered"
        connect_s = None
        if outcome == "connected":
            answer = h.end_ts
            if client and h.server is not None:  # the SYN-ACK that answered the last SYN, if it was seen
                after = [t for t in h.server.times if t >= s.times[-1]]
                if after:
                    answer = after[0]
            connect_s = round((answer - s.times[0]) / 1e9, 6)
        ladder = "+".join(fmt_s(g) for g in gaps)
        plural = "s" if n != 1 else ""
        last = h.end_ts if h.state != PENDING else s.last
        span = (last - s.times[0]) / 1e9
        if outcome == "connected":
            verb = "connect took" if client else "handshake took"
            summary = f"{verb} {connect_s:.1f} s: {n} {what} retransmission{plural} ({ladder} s)"
            if client and n == 1 and 0.8 <= gaps[0] <= 1.5:
                summary += ": the 1-second delay"
        elif outcome == "refused":
            summary = f"refused (RST) after {span:.1f} s: {n} {what} retransmission{plural} ({ladder} s)"
        else:
            summary = f"never answered: {n} {what} retransmission{plural} over {span:.1f} s ({ladder} s)"
        evidence: list[Evidence] = []
        for i, (t, fr) in enumerate(zip(s.times, s.frames)):
            text = what if i == 0 else f"{what} retransmission {i} after {fmt_s((t - s.times[i - 1]) / 1e9)} s"
            add_evidence(evidence, Evidence(fr, t, text))
        if h.state != PENDING:
            add_evidence(evidence, Evidence(h.end_frame, h.end_ts, h.end_text))
        details = {
            "side": "client" if client else "server",
            "syns": s.sent,
            "gaps_s": [round(g, 3) for g in gaps],
            "pattern": ladder_pattern(gaps),
            "outcome": outcome,
            "connect_s": connect_s,
            "duplicates": s.duplicates,
        }
        # A connect that needed 3 s or more (the 63 s incident, a DNS query over TCP timing out) is
        # broken for its user; one lost SYN (the 1-second delay) is worth a look, not an alarm.
        slow = connect_s is not None and connect_s >= SLOW_CONNECT_S
        severity = Severity.FAIL if outcome != "connected" or slow else Severity.WARN
        return Symptom(
            kind=Kind.SYN_RETRIES,
            severity=severity,
            summary=summary,
            flow=flow_of(h.fact, reverse=h.reverse),
            count=n,
            first_ts_ns=s.times[0],
            last_ts_ns=last,
            first_frame=s.frames[0],
            last_frame=h.end_frame if h.state != PENDING else s.frames[-1],
            evidence=tuple(evidence),
            likely_causes=causes_for(Kind.SYN_RETRIES, details, h.depth),
            details=details,
            depth=h.depth,
        )

    def finish(self) -> list[Symptom]:
        for key, h in self.table.items():
            self.table.pop(key)
            self._close(h)
        out, self.results = self.results, []
        return out
