"""UDPv6 received and dropped although its checksums verify: IPv6 NAT corrupting skb->csum (KB-011).

`inet_proto_csum_replace16()` before 189c9b1e9453 (Linux 5.6; stable 4.9.213, 4.14/5.4 Feb 2020)
left a CHECKSUM_COMPLETE skb's csum wrong after an IPv6 NAT rewrite, so the receiving stack counts
Udp6InCsumErrors and drops the datagram, though the packet on the wire is right. TCP recomputes
and is unaffected: DNS over IPv6 through SNAT/DNAT times out while TCP works.

The capture says whether the sums verify; the counters of the receiving namespace (a host
snapshot's two samples, `badsum pcap --snapshot`) say whether the kernel dropped them. One
symptom per receiver: the namespace holding the flows' destination address, whose
Udp6InCsumErrors rose by more than the bad UDPv6 sums the capture holds to it. When no namespace
holds it (NAT rewrote it after the capture point), the namespaces where the counter rose are named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from badsum.checksum.verdict import Layer, Status
from badsum.flows.base import (
    BatchView,
    Bounded,
    Limits,
    addr_text,
    addr_words,
    ev,
    flow_of,
    take,
)
from badsum.flows.causes import causes_for
from badsum.flows.facts import IPF_LATER_FRAGMENT
from badsum.flows.symptom import MAX_EVIDENCE, Evidence, Kind, Severity, Symptom

UDP6_ERRORS, TCP_ERRORS = "Udp6InCsumErrors", "TcpInCsumErrors"


@dataclass(frozen=True, slots=True)
class Receiver:
    """One namespace's checksum counters over an interval and the addresses it holds."""

    ns: str
    """The namespace id (`host`, a netns name, `pid:<pid>`)."""
    addresses: frozenset[str]
    """Its interface addresses, without prefix length, in Python's text form."""
    rising: dict[str, int]
    """Counters that rose over the interval, by nstat name, with the increase."""
    interval_s: float


class _Flow:
    __slots__ = ("evidence", "fact", "first", "last", "notok", "packets")

    def __init__(self, fact: np.void) -> None:
        self.fact = fact.copy()
        self.packets = 0
        self.notok = 0  # own UDP checksums that are not ok (bad, partial, zero-invalid, unverifiable)
        self.first = self.last = (int(fact["frame"]), int(fact["ts_ns"]))
        self.evidence: list[Evidence] = []


class Udp6Flows:
    """Counts UDPv6 packets per directional flow and their own non-ok UDP sums; symptoms only with receivers."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.table: Bounded[tuple, _Flow] = Bounded(limits.udp6_flows)
        self.receivers: tuple[Receiver, ...] = ()

    def feed(self, v: BatchView) -> None:
        m = v.udp & (v.col("ipver") == 6) & ((v.col("ip_flags") & IPF_LATER_FRAGMENT) == 0)
        idx = np.flatnonzero(m)
        if not len(idx):
            return
        sub = take(v.facts, idx)
        bad = np.zeros(len(sub), dtype=bool)
        rows = v.rows
        if len(rows):
            r = rows[(rows["layer"] == Layer.UDP) & (rows["status"] != Status.OK) & (rows["ipver"] == 6)]
            if len(r):  # the packet's own (innermost) UDP sum, by frame and depth
                mine = sub["frame"].astype(np.uint64) * 256 + sub["depth"]
                bad = np.isin(mine, r["frame"].astype(np.uint64) * 256 + r["depth"])
        s0, s1 = addr_words(sub, "src")
        d0, d1 = addr_words(sub, "dst")
        ports = (sub["sport"].astype(np.uint64) << np.uint64(16)) | sub["dport"]
        keys, first, inverse = np.unique(np.stack([s0, s1, d0, d1, ports], axis=1), axis=0, return_index=True,
                                         return_inverse=True)  # fmt: skip
        inverse = inverse.ravel()
        counts = np.bincount(inverse, minlength=len(keys))
        nbad = np.bincount(inverse, weights=bad, minlength=len(keys)).astype(np.int64)
        last = np.zeros(len(keys), dtype=np.int64)
        last[inverse] = np.arange(len(sub))  # the later index wins: the flow's last packet in the batch
        for k in range(len(keys)):
            key = tuple(keys[k].tolist())
            fl = self.table.get(key)
            if fl is None:
                fl = _Flow(sub[first[k]])
                self.table.put(key, fl)
            fl.packets += int(counts[k])
            fl.notok += int(nbad[k])
            f = sub[last[k]]
            fl.last = (int(f["frame"]), int(f["ts_ns"]))
            if len(fl.evidence) < 3 and not bad[first[k]]:
                g = sub[first[k]]
                fl.evidence.append(ev(g, f"UDPv6 checksum verifies ({int(g['payload'])} bytes of payload)"))

    def finish(self) -> list[Symptom]:
        if not self.receivers:
            return []
        suspects = [r for r in self.receivers if r.rising.get(UDP6_ERRORS, 0) > 0 and not r.rising.get(TCP_ERRORS, 0)]
        if not suspects:
            return []
        out = []
        unmatched: list[_Flow] = []
        for r in suspects:
            to_it = [fl for fl in self.table.values() if addr_text(fl.fact["dst"], 6) in r.addresses]
            if sym := self._symptom(to_it, [r], by_address=True):
                out.append(sym)
        owned = set().union(*(r.addresses for r in self.receivers))
        unmatched = [fl for fl in self.table.values() if addr_text(fl.fact["dst"], 6) not in owned]
        if not out and (sym := self._symptom(unmatched, suspects, by_address=False)):
            # The destination is nobody's address in the snapshot (rewritten by the NAT, or another
            # host's): the namespaces whose Udp6InCsumErrors rose are named, as a weaker link.
            out.append(sym)
        return out

    def _symptom(self, flows: list[_Flow], receivers: list[Receiver], by_address: bool) -> Symptom | None:
        clean = [fl for fl in flows if fl.notok == 0]
        errs = {r.ns: r.rising.get(UDP6_ERRORS, 0) for r in receivers}
        captured_bad = sum(fl.notok for fl in flows)
        # Bad sums the capture holds explain as many errors; only those beyond are the kernel's own doing.
        if not clean or sum(errs.values()) <= captured_bad:
            return None
        fl = max(clean, key=lambda x: x.packets)
        packets = sum(x.packets for x in clean)
        names = ", ".join(f"{ns} +{n}" for ns, n in errs.items())
        interval = max(r.interval_s for r in receivers)
        where = "the receiving namespace" if by_address else "namespaces that do not hold the destination"
        summary = (f"{packets} UDPv6 packet{'s' * (packets != 1)} in {len(clean)} flow{'s' * (len(clean) != 1)} with correct "
                   f"checksums, yet Udp6InCsumErrors rose in {where} ({names} over {interval:g} s) and TcpInCsumErrors "
                   "did not: IPv6 NAT corrupting skb->csum (KB-011, fixed by 189c9b1e9453)")  # fmt: skip
        details = {"receivers": errs, "matched_by": "address" if by_address else "none", "interval_s": interval,
                   "packets": packets, "flows": len(clean), "captured_bad": captured_bad, "tcp_in_csum_errors": 0}  # fmt: skip
        return Symptom(
            kind=Kind.UDP6_CSUM_ERRORS,
            severity=Severity.FAIL if by_address else Severity.WARN,
            summary=summary,
            flow=flow_of(fl.fact),
            count=packets,
            first_ts_ns=min(x.first[1] for x in clean),
            last_ts_ns=max(x.last[1] for x in clean),
            first_frame=min(x.first[0] for x in clean),
            last_frame=max(x.last[0] for x in clean),
            evidence=tuple(e for x in clean for e in x.evidence)[:MAX_EVIDENCE],
            likely_causes=causes_for(Kind.UDP6_CSUM_ERRORS, details, int(fl.fact["depth"])),
            details=details,
            depth=int(fl.fact["depth"]),
        )


__all__ = ["Receiver", "Udp6Flows"]
