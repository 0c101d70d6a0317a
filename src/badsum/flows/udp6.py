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
    Limits,
    addr_text,
    addr_words,
    flow_of,
    take,
)
from badsum.flows.causes import causes_for
from badsum.flows.facts import FACTS_DTYPE, IPF_LATER_FRAGMENT
from badsum.flows.lru import BatchLru, fold_keys, lex_groups
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
    """One flow of the table, built at `finish` from its slot."""

    __slots__ = ("evidence", "fact", "first", "last", "notok", "packets")

    def __init__(self, fact: np.void, packets: int, notok: int, first: tuple[int, int], last: tuple[int, int],
                 evidence: list[Evidence]) -> None:  # fmt: skip
        self.fact = fact
        self.packets = packets
        self.notok = notok  # own UDP checksums that are not ok (bad, partial, zero-invalid, unverifiable)
        self.first, self.last = first, last
        self.evidence = evidence


_RAW = np.dtype((np.void, FACTS_DTYPE.itemsize))
_EVIDENCE = 3


class Udp6Flows:
    """Counts UDPv6 packets per directional flow and their own non-ok UDP sums; symptoms only with receivers.

    The flows live in numpy arrays indexed by the slot `table` (a BatchLru) gives each: an
    ephemeral-port workload makes a new flow of nearly every packet, too many for an object each."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        cap = limits.udp6_flows
        self.table = BatchLru(cap, np.uint64)
        self.receivers: tuple[Receiver, ...] = ()
        self.fact = np.zeros(cap, dtype=FACTS_DTYPE)
        """The flow's first packet (its addresses, ports and depth)."""
        self.packets = np.zeros(cap, dtype=np.int64)
        self.notok = np.zeros(cap, dtype=np.int64)
        self.first = np.zeros((cap, 2), dtype=np.int64)
        """(frame, ts_ns) of the first and of the last packet."""
        self.last = np.zeros((cap, 2), dtype=np.int64)
        self.n_evidence = np.zeros(cap, dtype=np.int64)
        self.evidence = np.zeros((cap, _EVIDENCE, 3), dtype=np.int64)
        """Up to three packets whose sums verify: (frame, ts_ns, payload bytes)."""

    def feed(self, v: BatchView) -> None:
        u = v.udp_idx
        idx = u[(v.at("ipver", u) == 6) & ((v.at("ip_flags", u) & IPF_LATER_FRAGMENT) == 0)]
        if not len(idx):
            return
        sub = take(v.facts, idx)
        bad = np.zeros(len(sub), dtype=bool)
        rows = v.rows
        if len(rows):
            m = (rows["layer"] == Layer.UDP) & (rows["status"] != Status.OK) & (rows["ipver"] == 6)
            if m.any():  # the packet's own (innermost) UDP sum, by frame and depth
                mine = sub["frame"].astype(np.uint64) * 256 + sub["depth"]
                bad = _sorted_has(np.sort(rows["frame"][m].astype(np.uint64) * 256 + rows["depth"][m]), mine)
        s0, s1 = addr_words(sub, "src")
        d0, d1 = addr_words(sub, "dst")
        ports = (sub["sport"].astype(np.uint64) << np.uint64(16)) | sub["dport"]
        # Flows in the order of their 5-tuples, as np.unique(axis=0) gave them; the table is keyed
        # by a 64-bit fold of the tuple (its sort is what cost, not the lookup).
        first, inverse = lex_groups(s0, s1, d0, d1, ports)
        keys = fold_keys(s0[first], s1[first], d0[first], d1[first], ports[first])
        counts = np.bincount(inverse, minlength=len(keys))
        nbad = np.bincount(inverse, weights=bad, minlength=len(keys)).astype(np.int64)
        last = np.zeros(len(keys), dtype=np.int64)
        last[inverse] = np.arange(len(sub))  # the later index wins: the flow's last packet in the batch
        slots, fresh = self.table.touch(keys)
        alive = slots >= 0  # a flow created and evicted again within this batch leaves nothing
        slots, fresh, first, last, counts, nbad = slots[alive], fresh[alive], first[alive], last[alive], counts[alive], nbad[alive]
        frame, ts = sub["frame"].astype(np.int64), sub["ts_ns"].astype(np.int64)
        new, nf = slots[fresh], first[fresh]
        self.fact.view(_RAW)[new] = sub.view(_RAW)[nf]
        self.packets[new] = 0
        self.notok[new] = 0
        self.n_evidence[new] = 0
        self.first[new, 0], self.first[new, 1] = frame[nf], ts[nf]
        self.packets[slots] += counts
        self.notok[slots] += nbad
        self.last[slots, 0], self.last[slots, 1] = frame[last], ts[last]
        # One piece of evidence per flow and batch at most: the flow's first packet here, if it verifies.
        room = (self.n_evidence[slots] < _EVIDENCE) & ~bad[first]
        es, ef = slots[room], first[room]
        at = self.n_evidence[es]
        self.evidence[es, at, 0], self.evidence[es, at, 1], self.evidence[es, at, 2] = frame[ef], ts[ef], sub["payload"][ef]
        self.n_evidence[es] += 1

    def _flows(self) -> list[_Flow]:
        """The table's flows, least recently seen first (as a Bounded's values())."""
        out = []
        for s in self.table.order().tolist():
            evidence = [Evidence(int(f), int(t), f"UDPv6 checksum verifies ({int(p)} bytes of payload)")
                        for f, t, p in self.evidence[s, : self.n_evidence[s]].tolist()]  # fmt: skip
            out.append(_Flow(self.fact[s], int(self.packets[s]), int(self.notok[s]), tuple(self.first[s].tolist()),
                             tuple(self.last[s].tolist()), evidence))  # fmt: skip
        return out

    def finish(self) -> list[Symptom]:
        if not self.receivers:
            return []
        suspects = [r for r in self.receivers if r.rising.get(UDP6_ERRORS, 0) > 0 and not r.rising.get(TCP_ERRORS, 0)]
        if not suspects:
            return []
        out = []
        flows = self._flows()
        for r in suspects:
            to_it = [fl for fl in flows if addr_text(fl.fact["dst"], 6) in r.addresses]
            if sym := self._symptom(to_it, [r], by_address=True):
                out.append(sym)
        owned = set().union(*(r.addresses for r in self.receivers))
        unmatched = [fl for fl in flows if addr_text(fl.fact["dst"], 6) not in owned]
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


def _sorted_has(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """np.isin(keys, sorted_keys) for a sorted, non-empty sorted_keys."""
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


__all__ = ["Receiver", "Udp6Flows"]
