"""The first hop where one packet went bad, and the kind of fault.

Kinds: `partial` (a pending checksum left a point that should have completed it), `nat-stale`
(the checksum is right for the tuple before NAT, or a zero UDP checksum was "updated"),
`corruption` (bytes changed; the offsets are given) and `dropped` (seen at a point, then at no
later point although the flow's other packets were).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from badsum.checksum import inet
from badsum.checksum.verdict import (
    TP_STATUS_CSUMNOTREADY,
    Layer,
    Status,
    Verdict,
    VerdictFlag,
)
from badsum.trace.align import Chain
from badsum.trace.hops import ByteChange, byte_changes, field_changes, l4_verdicts
from badsum.trace.keys import innermost, stack
from badsum.trace.model import Observation, Point
from badsum.trace.topology import RECREATES, SAME_BUFFER, Topology
from badsum.wire import tcp, udp
from badsum.wire.frame import IPPacket
from badsum.wire.protofacts import CSUM_AT, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE

PARTIAL, NAT_STALE, CORRUPTION, DROPPED = "partial", "nat-stale", "corruption", "dropped"
_PROTO = {Layer.TCP: IPPROTO_TCP, Layer.UDP: IPPROTO_UDP, Layer.UDPLITE: IPPROTO_UDPLITE}


@dataclass(slots=True)
class BadHop:
    """Where one packet went bad."""

    after: str | None
    """Label of the last point where it was good (None: bad at the first point it was seen)."""
    before: str
    """Label of the first point where it was bad (for `dropped`: the next point, where it is missing)."""
    kind: str
    why: str
    position: int
    """Index of `before` in the packet's direction of travel."""
    packets: list[dict[str, object]] = field(default_factory=list)
    """The bad sightings at `before`: frame, ip id, seq, layer, stored/computed, changed bytes."""
    offsets: list[ByteChange] = field(default_factory=list)


@dataclass(slots=True)
class PacketJudgement:
    bad: BadHop | None
    unconfirmed_partial: list[str] = field(default_factory=list)
    """Points where a pending checksum was seen and neither the kernel nor the snapshot could
    tell whether that is legitimate."""


def judge_chain(chain: Chain, points: list[Point], topo: Topology, flow_reach: set[int], order: list[int]) -> PacketJudgement:
    """`order`: point indexes in this packet's direction of travel; `flow_reach`: where the flow was seen."""
    j = PacketJudgement(None)
    prev: int | None = None
    for pos, p in enumerate(order):
        obs = chain.at.get(p)
        if not obs:
            continue
        bad = _judge_point(obs, p, prev, chain, points, topo, j)
        if bad is not None:
            bad.position = pos
            j.bad = bad
            return j
        prev = p
    if prev is not None and not _multicast(chain.at[prev][0]):
        last = order.index(prev)
        later = [q for q in order[last + 1 :] if q in flow_reach]
        if later:
            nxt = order[last + 1]
            j.bad = BadHop(points[prev].label, points[nxt].label, DROPPED,
                           f"seen at {points[prev].label}, and at no later point although the flow's other packets are",
                           last + 1)  # fmt: skip
    return j


def _judge_point(obs: list[Observation], p: int, prev: int | None, chain: Chain, points: list[Point],
                 topo: Topology, j: PacketJudgement) -> BadHop | None:  # fmt: skip
    after = points[prev].label if prev is not None else None
    here = points[p].label
    ref = chain.at.get(prev, []) if prev is not None else []
    for o in obs:
        for v in l4_verdicts(o):
            if v.status == Status.BAD:
                return _explain_bad(o, v, ref, after, here)
            if v.status == Status.PARTIAL and prev is not None:
                fault = _partial_fault(o, v, points[prev], points[p], topo, ref)
                if fault is None:
                    if here not in j.unconfirmed_partial:
                        j.unconfirmed_partial.append(here)
                elif fault:
                    return BadHop(after, here, PARTIAL, fault, 0, [_sighting(o, v)])
    return None


def _multicast(o: Observation) -> bool:
    pkt = innermost(o.frame)
    if pkt is None:
        return True
    dst = pkt.ip.dst
    return dst[0] >= 224 if len(dst) == 4 else dst[0] == 0xFF


def _partial_fault(o: Observation, v: Verdict, a: Point, b: Point, topo: Topology, ref: list[Observation]) -> str | None | bool:
    """A reason when the pending checksum is a fault here, False when legitimate, None when unknown."""
    if o.kernel_known:
        if v.flags & VerdictFlag.KERNEL or o.tp_status & TP_STATUS_CSUMNOTREADY:
            return False
        return (f"{v.layer.label} checksum still pending at {b.label} although the kernel had no checksum to "
                "complete (TP_STATUS_CSUMNOTREADY clear): the packet was re-created with the sum unfinished")  # fmt: skip
    if not any(_is_partial(r) for r in ref):
        return None  # completed earlier and pending again: only the kernel can say
    hop = topo.hop(a, b)
    if hop.kind == RECREATES:
        return f"{v.layer.label} checksum pending (pseudo-header sum only) at {a.label} and still at {b.label}: {hop.why}"
    if hop.kind == SAME_BUFFER:
        return False
    return None


def _is_partial(o: Observation) -> bool:
    return any(v.status == Status.PARTIAL for v in l4_verdicts(o))


def _sighting(o: Observation, v: Verdict) -> dict[str, object]:
    pkt = innermost(o.frame)
    d: dict[str, object] = {"frame": o.frame_no, "layer": v.layer.label, "depth": v.depth, "status": v.status.label,
                            "stored": f"0x{v.stored:04x}", "computed": f"0x{v.computed:04x}"}  # fmt: skip
    if pkt is not None and pkt.ip.version == 4:
        d["ip_id"] = pkt.ip.ident
    if pkt is not None and isinstance(pkt.l4, tcp.TCPHeader):
        d["seq"] = pkt.l4.seq
    return d


def _explain_bad(o: Observation, v: Verdict, ref: list[Observation], after: str | None, here: str) -> BadHop:
    sight = _sighting(o, v)
    if not ref:
        return BadHop(after, here, CORRUPTION, f"{v.layer.label} checksum wrong at {here}, the first point it was seen at", 0, [sight])
    changed = byte_changes(ref, o)
    if changed:
        sight["offsets"] = [c.as_dict() for c in changed]
        where = ", ".join(f"{c.frame} (payload {c.payload})" for c in changed[:8])
        return BadHop(after, here, CORRUPTION, f"{len(changed)} payload byte(s) changed between {after} and {here}, "
                      f"checksum not updated: frame offsets {where}", 0, [sight], changed)  # fmt: skip
    stale = nat_stale(o, v, ref[0])
    if stale:
        return BadHop(after, here, NAT_STALE, stale, 0, [sight])
    fields = ", ".join(str(c) for c in field_changes(ref[0], o)) or "no header field changed"
    return BadHop(after, here, CORRUPTION, f"{v.layer.label} checksum wrong at {here} and right at {after}; "
                  f"no payload byte changed ({fields})", 0, [sight])  # fmt: skip


def _counterpart(o: Observation, v: Verdict, ref: Observation) -> tuple[IPPacket, IPPacket] | None:
    """The packet carrying `v` in `o` and the same packet (counted from the innermost) in `ref`."""
    sb, sa = stack(o.frame), stack(ref.frame)
    for i, pb in enumerate(sb):
        if pb.depth == v.depth and pb.proto == _PROTO.get(v.layer) and pb.l4 is not None:
            k = len(sb) - i
            if k <= len(sa):
                return sa[-k], pb
    return None


def nat_stale(o: Observation, v: Verdict, ref: Observation) -> str | None:
    pair = _counterpart(o, v, ref)
    if pair is None:
        return None
    pa, pb = pair
    ha, hb = pa.l4, pb.l4
    if not isinstance(ha, (tcp.TCPHeader, udp.UDPHeader)) or not isinstance(hb, type(ha)):
        return None
    old = (pa.ip.src, pa.ip.dst, ha.sport, ha.dport)
    new = (pb.ip.src, pb.ip.dst, hb.sport, hb.dport)
    if old == new:
        return None
    moved = _tuple_text(pa, pb)
    if isinstance(ha, udp.UDPHeader) and ha.checksum == 0 and hb.checksum != 0:
        return (f"udp checksum 0 (none) before NAT at the previous point; NAT ({moved}) 'updated' it to "
                f"0x{hb.checksum:04x}, which is wrong: a zero UDP checksum must stay zero")  # fmt: skip
    if _sum_with_tuple(o.frame.data, pb, old) == hb.checksum:
        return f"checksum 0x{hb.checksum:04x} is right for the tuple before NAT: NAT rewrote {moved} and not the checksum"
    return None


def _tuple_text(pa: IPPacket, pb: IPPacket) -> str:
    from badsum.trace.hops import describe

    return f"{describe(pa)} -> {describe(pb)}"


def _sum_with_tuple(data: bytes, pkt: IPPacket, tup: tuple[bytes, bytes, int, int]) -> int | None:
    """The checksum `pkt`'s L4 bytes would carry with another (src, dst, sport, dport)."""
    end = pkt.l4_end
    if end is None or end > len(data) or pkt.l4 is None:
        return None
    seg = bytearray(data[pkt.l4_offset : end])
    at = CSUM_AT[pkt.proto]
    if len(seg) < at + 2:
        return None
    seg[0:2], seg[2:4], seg[at : at + 2] = tup[2].to_bytes(2, "big"), tup[3].to_bytes(2, "big"), b"\0\0"
    src, dst = tup[0], tup[1]
    pseudo = inet.pseudo_v4(src, dst, pkt.proto, len(seg)) if len(src) == 4 else inet.pseudo_v6(src, dst, pkt.proto, len(seg))
    c = inet.complement(inet.add(pseudo, inet.ones_sum(bytes(seg))))
    return 0xFFFF if c == 0 and pkt.proto == IPPROTO_UDP else c  # RFC 768
