"""Performance note: VXLAN/Geneve packets whose outer UDP checksum is 0 (known issue KB-016).

A zero outer UDP checksum is legal (RFC 768 over IPv4; RFC 6935/6936 for tunnels over IPv6), but a
receiving kernel without 89e5c58fc1e2 (Linux 5.12, stable 4.9.268) does not GRO the encapsulated
flow: throughput drops, nothing is lost. flannel's `noudpcsum` VXLAN and Cilium send such packets.

Per tunnel (outer source, destination and tunnel port) the zero sums are counted exactly, from
their `zero-allowed` rows. The non-zero ones leave no row and a fact describes only the inner
packet, so they are counted by the inner host pairs the tunnel was seen carrying: a packet between
the same inner hosts (that direction) with a checksum. One inner pair travels one VTEP pair, so
this is exact for a capture at one point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from badsum.checksum.verdict import Flow, Layer, Status
from badsum.flows.base import (
    BatchView,
    Limits,
    addr_text,
    addr_words,
    ev,
    flow_of,
    take,
    take_rows,
)
from badsum.flows.causes import causes_for
from badsum.flows.facts import FACTS_DTYPE, IPF_UDP_TUNNEL, PROTO_UDP
from badsum.flows.lru import BatchLru, fold_keys
from badsum.flows.overlay import TUNNEL_BY_PORT
from badsum.flows.symptom import Evidence, Kind, Severity, Symptom

#: What the note tells a user to do (known-issues-2 E): any one of these restores GRO.
REMEDY = ("checksum the outer UDP header (`udpcsum` on the VXLAN/Geneve device; flannel without noudpcsum; "
          "Antrea tunnelCsum) or run receivers on Linux >= 5.12 / 4.9.268 (89e5c58fc1e2)")  # fmt: skip


_PORTS = np.array(sorted(TUNNEL_BY_PORT), dtype=np.uint16)
_IS_PORT = np.zeros(1 << 16, dtype=bool)  # a gather: np.isin costs more on every packet of a batch
_IS_PORT[_PORTS] = True


def _pair_keys(facts: np.ndarray) -> np.ndarray:
    """Directional inner host pairs (source, destination) as uint64 keys."""
    s0, s1 = addr_words(facts, "src")
    d0, d1 = addr_words(facts, "dst")
    return fold_keys(s0, s1, d0, d1)


def _tunnelled(ip_flags: np.ndarray, depth: np.ndarray, proto: np.ndarray, dport: np.ndarray) -> np.ndarray:
    """Packets carried in a UDP tunnel; also a tunnel packet with no inner IP (ARP inside VXLAN),
    whose fact is the outer UDP packet itself, sent to a tunnel port."""
    inner = ((ip_flags & IPF_UDP_TUNNEL) != 0) & (depth > 0)
    return inner | ((depth == 0) & (proto == PROTO_UDP) & _IS_PORT[dport])


def _inner_text(fact: np.void) -> str:
    if int(fact["depth"]) == 0:
        return "no inner IP packet (ARP or other Ethernet)"
    x = flow_of(fact)
    return f"inner {x.src}:{x.sport} > {x.dst}:{x.dport} proto {x.proto}"


def _row_words(rows: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(rows[name]).view("<u8").reshape(-1, 2)
    return w[:, 0], w[:, 1]


_EVIDENCE = 3


class TunnelZeroSums:
    """Counts zero outer UDP checksums per tunnel and the packets of the same inner pairs with one.

    Tunnels and pairs live in numpy arrays indexed by the slots of two BatchLru tables: a batch is
    counted with a handful of array operations, however many tunnels and inner pairs it holds."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        cap = limits.tunnels
        self.table = BatchLru(cap, np.uint64)
        """Tunnels (outer source, destination, tunnel port, IP version) by folded key."""
        self.outer = np.zeros(cap, dtype=[("src", "V16"), ("dst", "V16"), ("ipver", "u1"), ("port", "<u2")])
        self.zero = np.zeros(cap, dtype=np.int64)
        self.first = np.zeros((cap, 2), dtype=np.int64)
        """(frame, ts_ns) of the tunnel's first and last zero-sum packet."""
        self.last = np.zeros((cap, 2), dtype=np.int64)
        self.n_pairs = np.zeros(cap, dtype=np.int64)
        self.n_evidence = np.zeros(cap, dtype=np.int64)
        self.evidence = np.zeros((cap, _EVIDENCE), dtype=FACTS_DTYPE)
        # The inner pairs each tunnel was seen carrying: (tunnel slot, pair) by a folded key. The
        # folded keys are a set (membership of a batch's few hundred pairs, where inserting them
        # into one sorted array moved the whole array every batch); slot and pair are appended in
        # chunks and joined when read.
        self._pair_seen: set[int] = set()
        self._pair_chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        #: directional inner host pair -> tunnel packets with a non-zero outer sum
        self.nonzero = BatchLru(limits.tunnel_pairs, np.uint64)
        self.nonzero_count = np.zeros(self.nonzero.cap, dtype=np.int64)

    def feed(self, v: BatchView) -> None:
        # A tunnelled packet is inner (depth > 0) or UDP: the full tunnel test runs on those alone.
        cand = np.flatnonzero((v.col("depth") != 0) | v.udp)
        tun = cand[_tunnelled(v.at("ip_flags", cand), v.at("depth", cand), v.at("proto", cand), v.at("dport", cand))]
        if not len(tun):
            return
        pairs = _pair_keys(take(v.facts, tun))  # each tunnel packet's inner pair, zero sum or not
        zero_frames = np.zeros(0, dtype=np.uint64)
        rows = v.rows
        if len(rows):
            m = (rows["depth"] == 0) & (rows["layer"] == Layer.UDP) & (rows["status"] == Status.ZERO_ALLOWED)
            if m.any():
                zero_frames = rows["frame"][m]
                self._zero(v, take_rows(rows, m), tun, pairs)
        rest = pairs[~_sorted_has(np.sort(zero_frames), v.facts["frame"][tun])]
        if not len(rest):
            return
        keys, counts = _unique_counts(rest)
        slots, fresh = self.nonzero.touch(keys)
        alive = slots >= 0
        self.nonzero_count[slots[alive & fresh]] = 0
        self.nonzero_count[slots[alive]] += counts[alive]

    def _zero(self, v: BatchView, r: np.ndarray, tun: np.ndarray, tun_pairs: np.ndarray) -> None:
        """The zero-sum rows `r` of this batch; `tun` are its tunnel packets, `tun_pairs` their inner pairs."""
        idx = v.index_of_frames(r["frame"])
        keep = (idx >= 0) & _sorted_has(tun, idx)
        r, idx = take_rows(r, keep), idx[keep]
        f = take(v.facts, idx)
        pairs = tun_pairs[np.searchsorted(tun, idx)]
        if not len(r):
            return
        sport, dport = r["sport"], r["dport"]
        port = np.where(_IS_PORT[dport] | ~_IS_PORT[sport], dport, sport)
        tkeys = fold_keys(*_row_words(r, "src"), *_row_words(r, "dst"), port, r["ipver"])
        uniq, first, inverse, counts = _unique_all(tkeys)
        last = np.zeros(len(uniq), dtype=np.int64)
        last[inverse] = np.arange(len(r))  # the later index wins
        slots, fresh = self.table.touch(uniq)
        frame, ts = f["frame"].astype(np.int64), f["ts_ns"].astype(np.int64)
        alive = slots >= 0  # a tunnel created and evicted again within this batch leaves nothing
        new, nf = slots[alive & fresh], first[alive & fresh]
        if len(new):
            o = self.outer
            o["src"][new], o["dst"][new], o["ipver"][new], o["port"][new] = r["src"][nf], r["dst"][nf], r["ipver"][nf], port[nf]
            if self.n_pairs[new].any():  # a slot given anew held an evicted tunnel's pairs
                self._drop_pairs(new)
            self.zero[new] = self.n_pairs[new] = self.n_evidence[new] = 0
            self.first[new, 0], self.first[new, 1] = frame[nf], ts[nf]
        live = slots[alive]
        self.zero[live] += counts[alive]
        self.last[live, 0], self.last[live, 1] = frame[last[alive]], ts[last[alive]]
        pkt_slot = slots[inverse]  # per packet: its tunnel's slot (-1: gone again)
        self._add_pairs(inverse, pairs, slots)
        # every packet of a tunnel looks the same: its first few show it
        if (self.n_evidence[live] >= _EVIDENCE).all():
            return  # the usual batch: every tunnel in it has its evidence already
        order = np.argsort(inverse, kind="stable")
        start = np.searchsorted(inverse[order], np.arange(len(uniq)))
        rank = np.empty(len(r), dtype=np.int64)
        rank[order] = np.arange(len(r)) - start[inverse[order]]
        want = pkt_slot >= 0
        want[want] = rank[want] < _EVIDENCE - self.n_evidence[pkt_slot[want]]
        i = np.flatnonzero(want)
        es = pkt_slot[i]
        self.evidence[es, self.n_evidence[es] + rank[i]] = f[i]
        np.add.at(self.n_evidence, es, 1)

    def _add_pairs(self, inverse: np.ndarray, pairs: np.ndarray, slots: np.ndarray) -> None:
        """Each tunnel keeps the first `tunnel_pairs - held` of this batch's inner pairs in key
        order (some it may hold already), as the per-tunnel sets did."""
        o = np.lexsort((pairs, inverse))
        cu, cp = inverse[o], pairs[o]
        distinct = np.ones(len(o), dtype=bool)
        distinct[1:] = (cu[1:] != cu[:-1]) | (cp[1:] != cp[:-1])
        cu, cp = cu[distinct].astype(np.int64), cp[distinct]
        rank = np.arange(len(cu)) - np.searchsorted(cu, np.arange(len(slots)))[cu]
        cs = slots[cu]
        ok = cs >= 0
        ok[ok] = rank[ok] < self.limits.tunnel_pairs - self.n_pairs[cs[ok]]
        cs, cp = cs[ok], cp[ok]
        h = fold_keys(cs.astype(np.uint64), cp)
        seen = self._pair_seen
        new = ~np.fromiter(map(seen.__contains__, h.tolist()), dtype=bool, count=len(h))
        if not new.any():
            return
        cs, cp, h = cs[new], cp[new], h[new]
        seen.update(h.tolist())
        self._pair_chunks.append((h, cs, cp))
        np.add.at(self.n_pairs, cs, 1)

    def _pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(folded key, tunnel slot, inner pair) of every pair held, as arrays."""
        c = self._pair_chunks
        if len(c) != 1:
            if not c:
                return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
            c[:] = [tuple(np.concatenate(x) for x in zip(*c))]
        return c[0]

    def _drop_pairs(self, slots: np.ndarray) -> None:
        """Forget what evicted tunnels left in slots now given to new ones."""
        h, s, k = self._pairs()
        keep = ~np.isin(s, slots)
        self._pair_chunks[:] = [(h[keep], s[keep], k[keep])]
        self._pair_seen = set(h[keep].tolist())

    def _nonzero_per_tunnel(self) -> np.ndarray:
        """Per tunnel slot: the packets of its inner pairs with a non-zero outer sum."""
        out = np.zeros(self.table.cap, dtype=np.int64)
        _, pair_slot, pair_key = self._pairs()
        at = self.nonzero.lookup(pair_key)
        known = at >= 0
        np.add.at(out, pair_slot[known], self.nonzero_count[at[known]])
        return out

    def finish(self) -> list[Symptom]:
        out = []
        per_tunnel = self._nonzero_per_tunnel()
        for slot in self.table.order().tolist():
            t = self._tunnel(slot)
            nonzero = int(per_tunnel[slot])
            v6 = t.flow.ipver == 6
            details = {"tunnel": t.tunnel, "port": t.port, "zero": t.zero, "nonzero": nonzero,
                       "outer_ipver": t.flow.ipver, "impact": "performance", "remedy": REMEDY}  # fmt: skip
            summary = (f"{t.zero} {t.tunnel} packet{'s' * (t.zero != 1)} {t.flow.src} -> {t.flow.dst}:{t.port} with outer "
                       f"UDP checksum 0, {nonzero} with one: receivers without 89e5c58fc1e2 (Linux 5.12, 4.9.268) do not "
                       "GRO them, throughput not loss (KB-016); remedy: udpcsum on the tunnel device, Antrea tunnelCsum, "
                       "or a receiver kernel with the fix")  # fmt: skip
            if v6:
                # RFC 6936: Linux vxlan/geneve drop these unless the receiving device has udp6zerocsumrx.
                summary += "; over IPv6 a zero sum is dropped unless the receiving device has udp6zerocsumrx"
                details["udp6zerocsumrx_needed"] = True
            out.append(Symptom(
                kind=Kind.TUNNEL_ZERO_CSUM,
                severity=Severity.INFO,
                summary=summary,
                flow=t.flow,
                count=t.zero,
                first_ts_ns=t.first[1],
                last_ts_ns=t.last[1],
                first_frame=t.first[0],
                last_frame=t.last[0],
                evidence=tuple(t.evidence),
                likely_causes=causes_for(Kind.TUNNEL_ZERO_CSUM, details, 0),
                details=details,
                depth=0,
            ))  # fmt: skip
        return out

    def _tunnel(self, slot: int) -> _Tunnel:
        o = self.outer[slot]
        ipver, port = int(o["ipver"]), int(o["port"])
        flow = Flow(ipver, addr_text(o["src"], ipver), addr_text(o["dst"], ipver), 17, 0, port)
        evidence = [ev(f, f"outer UDP checksum 0x0000 (no checksum); {_inner_text(f)}")
                    for f in self.evidence[slot, : self.n_evidence[slot]]]  # fmt: skip
        return _Tunnel(flow, TUNNEL_BY_PORT.get(port, "udp-tunnel"), port, int(self.zero[slot]),
                       tuple(self.first[slot].tolist()), tuple(self.last[slot].tolist()), evidence)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Tunnel:
    """One tunnel of the table, read from its slot when the notes are written."""

    flow: Flow
    tunnel: str
    port: int
    zero: int
    first: tuple[int, int]
    last: tuple[int, int]
    evidence: list[Evidence]


def _unique_all(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(keys, return_index=True, return_inverse=True, return_counts=True) of a 1-d array
    (the first occurrence's index, as np.unique's stable sort gives it), without its overhead."""
    o = np.argsort(keys, kind="stable")
    s = keys[o]
    lead = np.empty(len(s), dtype=bool)
    lead[:1] = True
    np.not_equal(s[1:], s[:-1], out=lead[1:])
    starts = np.flatnonzero(lead)
    inverse = np.empty(len(s), dtype=np.intp)
    inverse[o] = np.cumsum(lead) - 1
    return s[starts], o[starts], inverse, np.diff(np.append(starts, len(s)))


def _unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_counts=True) of a non-empty 1-d array."""
    s = np.sort(keys)
    lead = np.empty(len(s), dtype=bool)
    lead[0] = True
    np.not_equal(s[1:], s[:-1], out=lead[1:])
    starts = np.flatnonzero(lead)
    return s[starts], np.diff(np.append(starts, len(s)))


def _sorted_has(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Membership of keys in a sorted array."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys
