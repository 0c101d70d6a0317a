"""Path MTU: ICMP frag-needed (RFC 1191) and ICMPv6 Packet Too Big (RFC 8201) joined to the packets
that caused them, what the sender did next, and DF packets larger than an MTU already reported.

The quoted packet in an ICMP error carries its own IP total length, so the join looks at the
recent packets of exactly that length first, then compares addresses, ports, IP id and TCP
sequence number. Of the recent packets (up to `pmtu_window`) only what that join compares is kept,
32 bytes each (PMTU_DTYPE): whole facts would hold ~18 MB for a join that rarely runs.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from badsum.checksum.verdict import Flow
from badsum.flows.base import (
    BatchView,
    Bounded,
    Limits,
    add_evidence,
    addr_text,
    addr_words,
    ev,
    flow_keys,
    take,
)
from badsum.flows.causes import causes_for
from badsum.flows.facts import (
    FACTS_DTYPE,
    IPF_DF,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
)
from badsum.flows.symptom import Evidence, Kind, Severity, Symptom
from badsum.native import _fastscan

#: RFC 8200 section 5 (IPv6 minimum link MTU) and RFC 791 (every IPv4 module must pass 68 bytes).
MIN_MTU = {4: 68, 6: 1280}
MAX_CAUSED = 64


#: What the ICMP join keeps of each recent packet: 32 bytes instead of a 136-byte fact (filled in C,
#: `_fastscan.pmtu_pack`). `key` hashes the addresses and protocol, and the ports for TCP and UDP,
#: in the packet's direction (64 bits: as the flow keys, a false match is not a practical concern);
#: `seq` is 0 unless TCP.
PMTU_DTYPE = np.dtype([("key", "<u8"), ("frame", "<u8"), ("seq", "<u4"), ("ip_len", "<u4"), ("ipid", "<u2"), ("_pad", "V6")])
assert PMTU_DTYPE.itemsize == 32


def pmtu_rows(facts: np.ndarray) -> np.ndarray:
    """PMTU_DTYPE rows of a FACTS_DTYPE array."""
    out = np.empty(len(facts), dtype=PMTU_DTYPE)
    if len(facts):
        _fastscan.pmtu_pack(np.ascontiguousarray(facts), out)
    return out


def quoted_row(f: np.void) -> np.void:
    """The PMTU_DTYPE row of the packet an ICMP error quotes, as the packet itself would give it."""
    q = np.zeros(1, dtype=FACTS_DTYPE)
    for a, b in (("src", "q_src"), ("dst", "q_dst"), ("sport", "q_sport"), ("dport", "q_dport"), ("proto", "q_proto"),
                 ("seq", "q_seq"), ("ipid", "q_ipid")):  # fmt: skip
        q[a] = f[b]
    return pmtu_rows(q)[0]


class _Window:
    """One earlier batch's PMTU_DTYPE rows, with the keys read out once when first searched."""

    __slots__ = ("_key", "rows")

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self._key: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def key(self) -> np.ndarray:
        if self._key is None:
            self._key = np.ascontiguousarray(self.rows["key"])
        return self._key


class _Report:
    """ICMP errors from one reporter about one flow and one MTU."""

    __slots__ = (
        "bigger",
        "caused",
        "count",
        "depth",
        "dport",
        "dst",
        "evidence",
        "first_frame",
        "first_ts",
        "fitted",
        "flow",
        "ipver",
        "last_frame",
        "last_ts",
        "mtu",
        "proto",
        "quoted_len",
        "quoted_seqs",
        "reporter",
        "sport",
        "src",
    )  # fmt: skip

    def __init__(self, f: np.void, reporter: str) -> None:
        v = int(f["ipver"])
        self.mtu, self.reporter, self.ipver = int(f["icmp_mtu"]), reporter, v
        self.src, self.dst = bytes(f["q_src"]), bytes(f["q_dst"])
        self.proto, self.sport, self.dport = int(f["q_proto"]), int(f["q_sport"]), int(f["q_dport"])
        self.flow = Flow(v, addr_text(self.src, v), addr_text(self.dst, v), self.proto, self.sport, self.dport)
        self.count = self.quoted_len = 0
        self.caused: list[int] = []
        self.quoted_seqs: set[int] = set()
        self.first_ts, self.first_frame = int(f["ts_ns"]), int(f["frame"])
        self.last_ts, self.last_frame = self.first_ts, self.first_frame
        self.bigger: list[tuple[int, int, int]] = []  # (frame, ts, ip_len) of DF packets over the MTU afterwards
        self.fitted: list[tuple[int, int, int]] = []
        self.evidence: list[Evidence] = []
        self.depth = int(f["depth"])


class _Dest:
    """The smallest MTU reported for one destination, and the DF packets sent there that exceed it."""

    __slots__ = ("count", "depth", "dst", "evidence", "first", "ipver", "largest", "last", "mtu", "reporter", "since", "src", "words")

    def __init__(self, r: _Report, ts: int, frame: int) -> None:
        self.dst, self.ipver, self.mtu, self.since = r.dst, r.ipver, r.mtu, ts
        w = np.frombuffer(r.dst.ljust(16, b"\0")[:16], dtype="<u8")
        self.words = (w[0], w[1])
        self.reporter, self.src, self.depth = r.reporter, r.flow.src, r.depth
        self.count = self.largest = 0
        self.first = self.last = (frame, ts)
        self.evidence: list[Evidence] = []


class PmtuDetector:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.grace_ns = int(limits.pmtu_grace_ms * 1e6)
        self.window: deque[_Window] = deque()
        self.reports: Bounded[tuple[str, int, int], _Report] = Bounded(limits.pmtu_reports, self._evicted)
        self.dests: Bounded[bytes, _Dest] = Bounded(limits.pmtu_reports, self._dest_evicted)
        self.quoted: Bounded[int, bool] = Bounded(limits.watched_flows * 16)
        self.done: list[Symptom] = []

    def quoted_flows(self) -> set[int]:
        """Flow keys of every flow an ICMP error quoted (the black-hole detector leaves them out)."""
        return set(self.quoted.data)

    def _evicted(self, k: tuple[str, int, int], r: _Report) -> None:
        if len(self.done) < self.limits.symptoms:
            self.done.append(self._symptom(r))

    def _dest_evicted(self, k: bytes, d: _Dest) -> None:
        if d.count and len(self.done) < self.limits.symptoms:
            self.done.append(self._oversize(d))

    # ---- per batch ----

    def feed(self, v: BatchView) -> None:
        if v.n:
            self.window.append(_Window(pmtu_rows(v.facts)))
            kept = sum(len(w) for w in self.window)
            while len(self.window) > 1 and kept - len(self.window[0]) >= self.limits.pmtu_window:
                kept -= len(self.window.popleft())
        icmp = v.icmp_idx
        if len(icmp):
            sub = take(v.facts, icmp)
            p, t, _c = sub["proto"], sub["icmp_type"], sub["icmp_code"]
            err = ((p == PROTO_ICMP) & (t == 3)) | ((p == PROTO_ICMPV6) & (t >= 1) & (t <= 4))
            err &= sub["q_proto"] != 0
            if err.any():
                self._errors(sub[err])
        if len(self.dests):
            self._watch(v)

    def _errors(self, errs: np.ndarray) -> None:
        q = np.zeros(len(errs), dtype=FACTS_DTYPE)
        for a, b in (("src", "q_src"), ("dst", "q_dst"), ("sport", "q_sport"), ("dport", "q_dport"), ("proto", "q_proto")):
            q[a] = errs[b]
        qkeys, _ = flow_keys(q)
        for i, f in enumerate(errs):
            qk = int(qkeys[i])
            self.quoted.put(qk, True)
            big = (f["proto"] == PROTO_ICMP and f["icmp_type"] == 3 and f["icmp_code"] == 4) or (
                f["proto"] == PROTO_ICMPV6 and f["icmp_type"] == 2)  # fmt: skip
            if big:
                self._too_big(f, qk)

    def _too_big(self, f: np.void, qk: int) -> None:
        v = int(f["ipver"])
        reporter = addr_text(f["src"], v)
        key = (reporter, qk, int(f["icmp_mtu"]))
        r = self.reports.get(key)
        if r is None:
            r = _Report(f, reporter)
            self.reports.put(key, r)
        r.count += 1
        r.quoted_len = max(r.quoted_len, int(f["q_len"]))
        ts, frame = int(f["ts_ns"]), int(f["frame"])
        r.last_ts, r.last_frame = ts, frame
        if r.proto == PROTO_TCP:
            r.quoted_seqs.add(int(f["q_seq"]))
        cause = self._cause(f)
        what = "frag-needed" if v == 4 else "Packet Too Big"
        if cause is not None:
            if len(r.caused) < MAX_CAUSED and cause not in r.caused:
                r.caused.append(cause)
            add_evidence(r.evidence, ev(f, f"ICMP {what} from {reporter}: mtu {r.mtu}, quoting frame {cause} ({int(f['q_len'])} bytes)"))
        else:
            add_evidence(r.evidence, ev(f, f"ICMP {what} from {reporter}: mtu {r.mtu}, quoting a {int(f['q_len'])}-byte packet not in the capture"))
        d = self.dests.get(r.dst)
        if d is None:
            self.dests.put(r.dst, _Dest(r, ts, frame))
        elif r.mtu < d.mtu:
            d.mtu, d.reporter = r.mtu, r.reporter

    def _cause(self, f: np.void) -> int | None:
        """Frame number of the most recent live packet the ICMP error quotes, if still in the window."""
        hit = self._search(f, exact_length=True)
        # a quote may carry another length than the capture (a middlebox, GRO at the capture point)
        return hit if hit is not None else self._search(f, exact_length=False)

    def _search(self, f: np.void, exact_length: bool) -> int | None:
        q = quoted_row(f)
        qlen, frame, qproto = int(f["q_len"]), int(f["frame"]), int(f["q_proto"])
        for w in reversed(self.window):
            c = w.rows[w.key == q["key"]]  # addresses, protocol, ports
            if exact_length:
                c = c[c["ip_len"] == qlen]
            if not len(c):
                continue
            m = c["frame"] < frame
            if qproto == PROTO_TCP:
                m &= c["seq"] == q["seq"]
            if f["ipver"] == 4:
                m &= c["ipid"] == q["ipid"]
            hit = np.flatnonzero(m)
            if len(hit):
                return int(c["frame"][hit[-1]])
        return None

    def _watch(self, v: BatchView) -> None:
        """Packets sent after a report: over the MTU with DF (ignored), or resized to fit (adapted)."""
        d0, d1 = addr_words(v.facts, "dst")
        for d in self.dests.values():
            idx = np.flatnonzero((d0 == d.words[0]) & (d1 == d.words[1]))
            if not len(idx):
                continue
            c = take(v.facts, idx)
            pending = v.offload_pending
            pending = pending[idx] if pending is not None else np.zeros(len(idx), dtype=bool)
            later = c["ts_ns"] > d.since
            c, pending = c[later], pending[later]
            if not len(c):
                continue
            # A TSO/GSO super-frame (checksum still partial) is cut to the current MSS after the
            # capture point: its size says nothing about whether the sender heeded the report.
            df = ((c["ip_flags"] & IPF_DF) != 0) & ~pending
            over = c[df & (c["ip_len"] > d.mtu) & (c["ts_ns"] > d.since + self.grace_ns)]
            for f in over[: max(12 - len(d.evidence), 0)]:
                d.evidence.append(ev(f, f"DF packet of {int(f['ip_len'])} bytes after MTU {d.mtu} was reported"))
            if len(over):
                if not d.count:
                    d.first = (int(over["frame"][0]), int(over["ts_ns"][0]))
                d.count += len(over)
                d.largest = max(d.largest, int(over["ip_len"].max()))
                d.last = (int(over["frame"][-1]), int(over["ts_ns"][-1]))
            for r in self.reports.values():
                if r.dst == d.dst:
                    self._outcome(r, c, df)

    def _outcome(self, r: _Report, c: np.ndarray, df: np.ndarray) -> None:
        m = (c["src"] == np.void(r.src)) & (c["proto"] == r.proto) & (c["ts_ns"] > r.first_ts)
        if r.proto in (PROTO_TCP, PROTO_UDP):
            m &= (c["sport"] == r.sport) & (c["dport"] == r.dport)
        if not m.any():
            return
        ipl = c["ip_len"]
        late = c["ts_ns"] > r.first_ts + self.grace_ns
        for f in c[m & df & (ipl > r.mtu) & late][:8]:
            if len(r.bigger) < 8:
                r.bigger.append((int(f["frame"]), int(f["ts_ns"]), int(f["ip_len"])))
        fit = m & (ipl <= r.mtu) & (c["payload"] > 0)
        resent = np.isin(c["seq"], list(r.quoted_seqs)) if r.quoted_seqs else np.zeros(len(c), bool)
        for f in c[fit & ((ipl * 10 > r.mtu * 9) | resent)][:8]:
            if len(r.fitted) < 8:
                r.fitted.append((int(f["frame"]), int(f["ts_ns"]), int(f["ip_len"])))

    # ---- results ----

    def _symptom(self, r: _Report) -> Symptom:
        below = r.mtu < MIN_MTU.get(r.ipver, 68)
        outcome = "ignored" if r.bigger else "adapted" if r.fitted else "unknown"
        caused = sorted(r.caused)
        details = {"mtu": r.mtu, "reporter": r.reporter, "quoted_len": r.quoted_len, "caused_by": caused,
                   "outcome": outcome, "below_minimum": below}  # fmt: skip
        what = "ICMP frag-needed" if r.ipver == 4 else "ICMPv6 Packet Too Big"
        summary = (f"{what} from {r.reporter}: MTU {r.mtu} for {r.quoted_len}-byte packets"
                   f" ({r.count} message{'s' * (r.count != 1)})")  # fmt: skip
        if outcome == "ignored":
            summary += f"; the sender kept sending larger DF packets (frame {r.bigger[0][0]}: {r.bigger[0][2]} bytes)"
        elif outcome == "adapted":
            summary += f"; the sender adapted (frame {r.fitted[0][0]}: {r.fitted[0][2]} bytes)"
        if below:
            floor = MIN_MTU[r.ipver]
            summary += f"; MTU {r.mtu} is below the IPv{r.ipver} minimum {floor}" + (
                " (RFC 8021: atomic-fragment attack)" if r.ipver == 6 else "")  # fmt: skip
        evidence = list(r.evidence)
        for frame, ts, ipl in (r.bigger or r.fitted)[:3]:
            add_evidence(evidence, Evidence(frame, ts, f"after the report: {ipl}-byte packet" + (" with DF" if r.bigger else "")))
        severity = Severity.FAIL if outcome == "ignored" else Severity.WARN if below or outcome == "unknown" else Severity.INFO
        after = r.bigger[:1] + r.fitted[:1]  # the first packet that shows what the sender did
        times = [r.first_ts, r.last_ts] + [t for _, t, _ in after]
        frames = [r.first_frame, r.last_frame] + caused + [fr for fr, _, _ in after]
        return Symptom(
            kind=Kind.PMTU,
            severity=severity,
            summary=summary,
            flow=r.flow,
            count=r.count,
            first_ts_ns=r.first_ts,
            last_ts_ns=max(times),
            first_frame=min(frames),
            last_frame=max(frames),
            evidence=tuple(evidence),
            likely_causes=causes_for(Kind.PMTU, details, r.depth),
            details=details,
            depth=r.depth,
        )

    def _oversize(self, d: _Dest) -> Symptom:
        dst = addr_text(d.dst, d.ipver)
        path = f"{d.src} > {dst} (MTU {d.mtu} reported by {d.reporter})"
        details = {"mtu": d.mtu, "largest": d.largest, "path": path}
        return Symptom(
            kind=Kind.DF_OVERSIZE,
            severity=Severity.FAIL,
            summary=f"{d.count} DF packet{'s' * (d.count != 1)} up to {d.largest} bytes sent to {dst} after MTU {d.mtu} was reported",
            flow=Flow(d.ipver, d.src, dst, 0, 0, 0),
            count=d.count,
            first_ts_ns=d.first[1],
            last_ts_ns=d.last[1],
            first_frame=d.first[0],
            last_frame=d.last[0],
            evidence=tuple(d.evidence),
            likely_causes=causes_for(Kind.DF_OVERSIZE, details, d.depth),
            details=details,
            depth=d.depth,
        )

    def finish(self) -> list[Symptom]:
        out = self.done + [self._symptom(r) for r in self.reports.values()]
        out += [self._oversize(d) for d in self.dests.values() if d.count]
        self.done = []
        return out
