"""Every hop of a journey judged twice: by its bytes (the checksum engine) and by what the kernel
believes about them (ip_summed, csum_start/csum_offset, csum_level, skb->csum).

Bytes alone cannot place the KB-005 fault (the same pseudo-header sum at every hop); the kernel's
state alone cannot see corruption (pwru and retis never check the bytes). Together: a pending sum
is legitimate only while ip_summed is PARTIAL, and "verified" is a lie when the bytes are wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from badsum.checksum import inet
from badsum.checksum.verdict import Layer, Status, Verdict
from badsum.checksum.verify import after_completion, verify_frame
from badsum.follow.journey import Journey, Sighting, predecessor
from badsum.follow.tunnel import UDP_TUNNELS, outer_rewrite_why, outer_udp, tunnel_of
from badsum.follow.model import Hook, IpSummed, KernelEvent
from badsum.trace.hops import addr, byte_changes, field_changes, l4_verdicts
from badsum.trace.keys import stack
from badsum.trace.model import Observation
from badsum.trace.verdict import nat_stale
from badsum.wire.frame import Frame, IPPacket
from badsum.wire.ipv4 import IPv4Header
from badsum.wire.ports import PortTable

PENDING, UNFINISHED, OK, BAD = "pending", "unfinished", "ok", "bad"
MARKED_VERIFIED_BAD, REWRITTEN, UNVERIFIABLE, DROPPED = "marked-verified-bad", "rewritten", "unverifiable", "dropped"
#: Hop kinds that are faults (a drop is the consequence of one, or stands alone: see result.py).
FAULTS = (UNFINISHED, BAD, MARKED_VERIFIED_BAD, REWRITTEN)
KINDS = (PENDING, OK, UNFINISHED, BAD, MARKED_VERIFIED_BAD, REWRITTEN, UNVERIFIABLE, DROPPED)

#: skb->csum is a __wsum as the CPU holds it; x86_64 and arm64 sum 16-bit words little-endian.
HOST_LITTLE_ENDIAN = True

_PROTO = {Layer.TCP: 6, Layer.UDP: 17, Layer.UDPLITE: 136, Layer.ICMPV6: 58, Layer.ICMP: 1, Layer.SCTP: 132,
          Layer.IGMP: 2, Layer.GRE: 47}  # fmt: skip
_PSEUDO = frozenset({Layer.TCP, Layer.UDP, Layer.UDPLITE, Layer.ICMPV6})
#: What CHECKSUM_PARTIAL can leave pending: inet sums, and SCTP's CRC32c (csum_not_inet).
_PENDABLE = _PSEUDO | {Layer.SCTP}
_WRONG = (Status.BAD, Status.ZERO_INVALID)
_TUPLE = frozenset({("ip", "src"), ("ip", "dst"), ("tcp", "sport"), ("tcp", "dport"), ("udp", "sport"), ("udp", "dport")})


@dataclass(frozen=True, slots=True)
class HopVerdict:
    """What one hop's bytes and kernel state say together."""

    kind: str
    """One of KINDS."""
    why: str
    check: Verdict | None
    """The checksum the kind is about (the pending one, the wrong one), where there is one."""
    verdicts: tuple[Verdict, ...]
    """Every checksum of the captured bytes, outermost first."""
    obs: Observation
    """The hop as `badsum trace` sees a capture (for field and byte comparisons)."""
    field: int | None = None
    """Offset in the captured bytes of the field at csum_start + csum_offset (PARTIAL only)."""
    pseudo: int | None = None
    """The pseudo-header sum of `check`'s packet, where it has one."""
    csum_compare: str = ""
    """COMPLETE: whether skb->csum is the sum of these bytes from the L3 header on, or why not compared."""
    notes: tuple[str, ...] = ()
    encapsulated_after: str = ""
    """The hop (label) the packet was last seen at without the outer header `check` belongs to:
    the encapsulation was added between it and this hop (set for outer sums rewritten on the way)."""


def classify(s: Sighting, ports: PortTable | None = None) -> HopVerdict:
    """One hop on its own (no previous hop: `judge_journey` adds `rewritten` and byte changes)."""
    ports = ports or PortTable()
    ev, frame = s.event, s.frame
    verdicts = tuple(verify_frame(frame, 0, ports=ports))
    obs = Observation(0, 0, ev.ts_ns, frame, list(verdicts))
    base = HopVerdict(OK, "", None, verdicts, obs)
    if ev.hook == Hook.DROP:
        return replace(base, kind=DROPPED, why=f"dropped ({drop_reason(ev)}) at {location(ev)}")
    if not stack(frame):
        etype = frame.link.ethertype if frame.link is not None and frame.link.ethertype else ev.protocol
        return replace(base, kind=UNVERIFIABLE, why=f"no IP packet in the captured bytes (ethertype 0x{etype:04x})")
    health = l4_verdicts(obs)
    if ev.ip_summed == IpSummed.PARTIAL:
        return _partial(ev, frame, health, base, ports)
    return _settled(ev, frame, health, base)


def _as(base: HopVerdict, kind: str, why: str, **more: object) -> HopVerdict:
    return replace(base, kind=kind, why=why, **more)  # type: ignore[arg-type]


def _wrong(x: Verdict) -> str:
    return f"{_name(x)} wrong (0x{x.stored:04x}, should be 0x{x.computed:04x})"


def _partial(ev: KernelEvent, frame: Frame, health: list[Verdict], base: HopVerdict, ports: PortTable) -> HopVerdict:
    at = ev.csum_start + ev.csum_offset - ev.data_offset
    where = f"csum_start {ev.csum_start} + csum_offset {ev.csum_offset} (byte {at} of the capture)"
    base = replace(base, field=at)
    v = next((x for x in health if x.offset == at and x.layer in _PENDABLE), None)
    if v is None:
        if at < 0 or at + 2 > len(ev.data):
            return _as(base, UNVERIFIABLE, f"ip_summed PARTIAL; the pending field ({where}) is outside the captured bytes")
        return _as(base, UNVERIFIABLE, f"ip_summed PARTIAL, but {where} is no TCP/UDP checksum field of the packet")
    pseudo = pseudo_of(frame, v)
    base = replace(base, check=v, pseudo=pseudo)
    name = _name(v)
    seeded = v.status == Status.PARTIAL or (v.status == Status.UNVERIFIABLE and pseudo is not None and v.stored == pseudo)
    if v.layer == Layer.SCTP:
        seeded = v.stored == 0 and v.status != Status.OK  # SCTP CRC offload: the field is left 0
    if not seeded:
        if v.status == Status.UNVERIFIABLE and pseudo is None:
            return _as(base, UNVERIFIABLE, f"ip_summed PARTIAL; {name} at byte {at} not captured whole ({_incomplete(ev)})")
        if ev.gso:
            return _as(base, UNVERIFIABLE, f"GSO super-frame (gso_size {ev.gso_size}) whose pending {name} field "
                       f"0x{v.stored:04x} is not the pseudo-header sum of its length: the segments' sums cannot be told here")
        if v.status == Status.OK:
            # skb_checksum_help() sums the field in too: a complete sum there comes out as the pseudo-header sum.
            return _as(base, BAD, f"a pending checksum seeded with the complete sum: {name} 0x{v.stored:04x} is already "
                       "right, and completing it again will leave the pseudo-header sum")
        want = f"nor the complete sum 0x{v.computed:04x}" if v.status == Status.BAD else "(payload not captured)"
        return _as(base, BAD, f"a pending checksum seeded with a wrong value: {name} 0x{v.stored:04x} is neither the "
                   f"pseudo-header sum 0x{pseudo or 0:04x} {want}")
    notes: list[str] = []
    for x in health:
        if x is v:
            continue
        if x.status in _WRONG:
            filled = after_completion(frame, v, x, ports) if x.layer == Layer.UDP and x.depth < v.depth and v.status == Status.PARTIAL else None
            if filled is not None and filled.status in (Status.OK, Status.ZERO_ALLOWED):
                # Local checksum offload (checksum-offloads.rst): the outer UDP sum was computed as if
                # the inner one were filled in, so it verifies only once the device completes the inner.
                notes.append(f"{_name(x)} verifies once the pending {name} is completed (LCO)")
                continue
            if filled is not None:
                x = replace(x, computed=filled.computed)  # what it must be once the inner one is completed
            return _as(base, BAD, f"{_wrong(x)} while {name} is pending", check=x, pseudo=pseudo_of(frame, x))
        if x.status == Status.PARTIAL:
            if ev.gso:
                notes.append(f"{_name(x)} holds the pseudo-header sum: GSO completes it per segment")
                continue
            return _as(base, UNFINISHED, f"{_name(x)} holds the pseudo-header sum 0x{x.stored:04x} alone, and the kernel's "
                       f"pending checksum is {name}: nothing will complete it", check=x, pseudo=x.stored)
    what = "the pseudo-header sum" if v.layer != Layer.SCTP else "0 (CRC32c offload)"
    why = f"{name} pending: the field at {where} holds {what}; the device or skb_checksum_help() completes it"
    if v.status == Status.UNVERIFIABLE:
        why += f" (payload not captured: {_incomplete(ev)})"
    return _as(base, PENDING, why, notes=tuple(notes))


def _settled(ev: KernelEvent, frame: Frame, health: list[Verdict], base: HopVerdict) -> HopVerdict:
    """NONE, UNNECESSARY or COMPLETE: nothing is pending, so every field must be final."""
    summed = summed_name(ev.ip_summed)
    for x in health:
        p = pseudo_of(frame, x)
        if x.status == Status.PARTIAL or (x.status == Status.UNVERIFIABLE and p is not None and x.stored == p and x.stored):
            # KB-005/KB-007: a forwarder re-read the bytes and re-sent them as a new skb, dropping
            # the "complete me" instruction (the vnet header, CHECKSUM_PARTIAL) on the way.
            return _as(base, UNFINISHED, f"{_name(x)} holds the pseudo-header sum 0x{x.stored:04x} alone with ip_summed "
                       f"{summed}: nothing is pending, so nothing will complete it (the packet was re-created unfinished)",
                       check=x, pseudo=p)
    if ev.gso:
        return _as(base, UNVERIFIABLE, f"GSO/GRO super-frame (gso_size {ev.gso_size}, {ev.gso_segs} segments) with "
                   f"ip_summed {summed}: its checksum fields belong to the segments, not to these bytes")
    wrong = [x for x in health if x.status in _WRONG]
    if not ev.complete:
        hdr = [x for x in wrong if x.layer == Layer.IPV4]
        if hdr:
            return _bad(base, hdr[0], frame, summed)
        return _as(base, UNVERIFIABLE, f"not every byte captured ({_incomplete(ev)})")
    if ev.ip_summed == IpSummed.UNNECESSARY:
        # csum_level + 1 checksums from the outermost count as verified; each validation consumes
        # one (__skb_decr_checksum_unnecessary), a zero UDP sum included.
        covered = [x for x in sorted(health, key=lambda y: y.depth) if x.layer != Layer.IPV4][: ev.csum_level + 1]
        lied = [x for x in covered if x.status in _WRONG]
        if lied:
            x = lied[0]
            return _as(base, MARKED_VERIFIED_BAD, f"ip_summed UNNECESSARY (csum_level {ev.csum_level}: the {len(covered)} "
                       f"outermost checksum(s) taken as verified) while {_wrong(x)}: the stack will deliver these bytes "
                       "unchecked", check=x, pseudo=pseudo_of(frame, x))
        if wrong:
            hv = _bad(base, wrong[0], frame, summed)
            return replace(hv, notes=(f"not covered by csum_level {ev.csum_level}: the stack verifies it and drops it",))
        return _as(base, OK, f"every checksum right (ip_summed {summed})")
    if ev.ip_summed == IpSummed.COMPLETE:
        text, agrees = compare_complete(ev, frame)
        base = replace(base, csum_compare=text)
        if wrong:
            x = wrong[0]
            if agrees is False:
                return _as(base, MARKED_VERIFIED_BAD, f"ip_summed COMPLETE with skb->csum {text}, and {_wrong(x)}: the "
                           "stack validates against the stale sum, and corrupt data can be delivered",
                           check=x, pseudo=pseudo_of(frame, x))
            return _bad(base, x, frame, summed)
        note = () if agrees is not False else ("skb->csum disagrees with right bytes: the stack logs 'hw csum failure' "
                                               "and verifies in software",)  # fmt: skip
        return _as(base, OK, f"every checksum right (ip_summed {summed}; skb->csum {text})", notes=note)
    if wrong:
        return _bad(base, wrong[0], frame, summed)
    return _as(base, OK, f"every checksum right (ip_summed {summed})")


def _bad(base: HopVerdict, x: Verdict, frame: Frame, summed: str) -> HopVerdict:
    return _as(base, BAD, f"{_wrong(x)} with ip_summed {summed}", check=x, pseudo=pseudo_of(frame, x))


def judge_journey(j: Journey, ports: PortTable | None = None) -> tuple[HopVerdict, ...]:
    """Every hop of `j`, each also compared with the hop it came from (journey.predecessor: the
    same branch where a super-frame was cut into segments)."""
    ports = ports or PortTable()
    out: list[HopVerdict] = []
    for i, s in enumerate(j.hops):
        hv = classify(s, ports)
        k = predecessor(j.hops, i)
        if k is not None and hv.kind == BAD and hv.check is not None and stack(j.hops[k].frame):
            hv = _against(s, hv, j.hops[k], out[k])
        out.append(hv)
    return tuple(out)


def _against(s: Sighting, hv: HopVerdict, ps: Sighting, phv: HopVerdict) -> HopVerdict:
    """A wrong sum at `s`: rewritten by NAT (KB-004), or bytes changed since `ps`."""
    v = hv.check
    assert v is not None
    pv = counterpart(v, s.frame, ps.frame, phv.verdicts)
    was_right = pv is not None and (pv.status in (Status.OK, Status.ZERO_ALLOWED)
                                    or pv.status == Status.PARTIAL and phv.kind == PENDING)  # fmt: skip
    if was_right and pv is not None and v.layer != Layer.IPV4:
        moved = [c for c in field_changes(phv.obs, hv.obs) if (c.layer, c.field) in _TUPLE]
        if pv.status == Status.ZERO_ALLOWED and pv.stored == 0 and v.layer == Layer.UDP and v.stored != 0:
            why = nat_stale(hv.obs, v, phv.obs) or (f"udp checksum 0 (none) at {ps.label} became 0x{v.stored:04x} at "
                                                    f"{s.label}, which is wrong: a zero UDP checksum must stay zero")
            return _as(hv, REWRITTEN, why)
        if moved:
            rewrote = ", ".join(str(c) for c in moved)
            why = nat_stale(hv.obs, v, phv.obs) or (f"NAT rewrote {rewrote} between {ps.label} and {s.label}, and "
                                                    f"{_name(v)} went from {pv.status.label} to {_wrong(v)}")
            return _as(hv, REWRITTEN, why)
    if pv is None and v.layer == Layer.UDP and v.depth < max(p.depth for p in stack(s.frame)):
        # The outer header is new here (encapsulation added since `ps`): the tunnel device left
        # its UDP sum 0 or right (LCO), so a wrong one was written on the way (KB-004's NAT).
        if v.stored != 0 and tunnel_of(s.frame) in UDP_TUNNELS:
            return _as(hv, REWRITTEN, outer_rewrite_why(s, v, ps.label), encapsulated_after=ps.label)
        return _as(hv, hv.kind, f"{hv.why}; the encapsulation was added between {ps.label} and {s.label}, and the "
                   "tunnel device leaves the outer UDP checksum 0 or complete: something rewrote it on the way (NAT?)")
    changed = byte_changes([phv.obs], hv.obs)
    if changed:
        at = ", ".join(f"{c.frame} (payload {c.payload})" for c in changed[:8])
        return _as(hv, hv.kind, f"{hv.why}; {len(changed)} payload byte(s) changed since {ps.label}, sum not updated: "
                   f"frame offsets {at}")
    return hv


def counterpart(v: Verdict, frame: Frame, ref: Frame, ref_verdicts: tuple[Verdict, ...]) -> Verdict | None:
    """The verdict of the same checksum (stacks aligned from the innermost packet) in `ref`."""
    sb, sa = stack(frame), stack(ref)
    idx = next((i for i, p in enumerate(sb) if p.depth == v.depth), None)
    if idx is None or len(sb) - idx > len(sa):
        return None
    depth = sa[len(sa) - (len(sb) - idx)].depth
    return next((x for x in ref_verdicts if x.depth == depth and x.layer == v.layer), None)


def pseudo_of(frame: Frame, v: Verdict) -> int | None:
    """The pseudo-header sum of the packet carrying `v` (RFC 793 3.1, RFC 8200 8.1), from its headers alone."""
    if v.layer not in _PSEUDO:
        return None
    pkt = _packet_of(frame, v)
    if pkt is None or pkt.l4_length is None:
        return None
    ip = pkt.ip
    if isinstance(ip, IPv4Header):
        return inet.pseudo_v4(ip.src, ip.final_dst, pkt.proto, pkt.l4_length)
    return inet.pseudo_v6(ip.pseudo_src, ip.pseudo_dst, pkt.proto, pkt.l4_length)


def _packet_of(frame: Frame, v: Verdict) -> IPPacket | None:
    return next((p for p in stack(frame) if p.depth == v.depth and p.proto == _PROTO.get(v.layer) and p.l4 is not None), None)


def wsum_to_sum16(csum: int, little_endian: bool = HOST_LITTLE_ENDIAN) -> int:
    """skb->csum (a 32-bit __wsum in CPU order) folded to the 16-bit sum in network order."""
    s = (csum & 0xFFFF) + (csum >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ((s & 0xFF) << 8 | s >> 8) if little_endian else s


def compare_complete(ev: KernelEvent, frame: Frame) -> tuple[str, bool | None]:
    """Whether skb->csum is the sum of the bytes from the L3 header to the end.

    Only at RX/RECV: there skb->data is at the network header and dev_forward_skb() has pulled the
    MAC header out of the sum (skb_postpull_rcsum, the f8ffad69c9f8 class of fixes: KB-008).
    """
    if ev.hook not in (Hook.RX, Hook.RECV):
        return "not compared: skb->csum is compared at receive (rx/recv) only", None
    if not ev.complete:
        return f"not compared: {_incomplete(ev)}", None
    pkts = stack(frame)
    if not pkts:
        return "not compared: no IP header", None
    have = wsum_to_sum16(ev.csum)
    got = inet.ones_sum(ev.data[pkts[0].ip.offset : ev.wire_len])
    if have % 0xFFFF == got % 0xFFFF:  # 0 and 0xffff are both zero in ones' complement
        return f"0x{ev.csum:08x} agrees with the bytes (sum 0x{got:04x})", True
    return f"0x{ev.csum:08x} (folded 0x{have:04x}) disagrees with the bytes (sum 0x{got:04x})", False


def _incomplete(ev: KernelEvent) -> str:
    why = f"{len(ev.data)} of {ev.wire_len} bytes captured"
    if ev.data_len:
        why += f"; {ev.data_len} bytes in page fragments (nonlinear skb)"
    else:
        why += "; over the capture bound"
    return why


def _name(v: Verdict) -> str:
    return f"{v.layer.label}{'@' + str(v.depth) if v.depth else ''} checksum"


def summed_name(value: int) -> str:
    try:
        return IpSummed(value).name
    except ValueError:
        return str(value)


def drop_reason(ev: KernelEvent) -> str:
    return ev.reason_name or f"reason {ev.reason}"


def location(ev: KernelEvent) -> str:
    return ev.location_name or (f"0x{ev.location:x}" if ev.location else "unknown")


def evidence(s: Sighting, hv: HopVerdict) -> dict[str, object]:
    """The kernel state and the checksum at one hop, for `first_bad_hop.evidence`."""
    ev = s.event
    d: dict[str, object] = {
        "device": s.label, "hook": s.hook_text, "direction": s.direction, "skb": f"0x{ev.skb:x}", "ts_ns": ev.ts_ns,
        "ip_summed": summed_name(ev.ip_summed), "csum_start": ev.csum_start, "csum_offset": ev.csum_offset,
        "csum_level": ev.csum_level, "csum": f"0x{ev.csum:08x}", "len": ev.len, "data_len": ev.data_len,
        "captured": len(ev.data), "wire_len": ev.wire_len, "mark": f"0x{ev.mark:x}", "kind": hv.kind,
    }  # fmt: skip
    if ev.gso:
        d["gso"] = {"size": ev.gso_size, "segs": ev.gso_segs, "type": ev.gso_type}
    if hv.field is not None:
        d["field"] = hv.field
    if hv.check is not None:
        v = hv.check
        width = 8 if v.layer == Layer.SCTP else 4
        d["checksum"] = {"layer": v.layer.label, "depth": v.depth, "offset": v.offset, "status": v.status.label,
                         "stored": f"0x{v.stored:0{width}x}", "computed": f"0x{v.computed:0{width}x}",
                         "pseudo": None if hv.pseudo is None else f"0x{hv.pseudo:04x}"}  # fmt: skip
    if (outer := outer_udp(s.frame)) is not None:
        # The tunnel packet's own header, to pair this hop with a capture (IP id) and see a NAT's port.
        pkt, u = outer
        d["outer"] = {"src": addr(pkt.ip.src), "dst": addr(pkt.ip.dst), "sport": u.sport, "dport": u.dport,
                      "ip_id": pkt.ip.ident if isinstance(pkt.ip, IPv4Header) else None, "udp_checksum": f"0x{u.checksum:04x}",
                      "tunnel": tunnel_of(s.frame)}  # fmt: skip
    if hv.encapsulated_after:
        d["encapsulated_after"] = hv.encapsulated_after
    if hv.csum_compare:
        d["csum_compare"] = hv.csum_compare
    if ev.hook == Hook.DROP:
        d["reason"] = drop_reason(ev)
        d["location"] = location(ev)
    if hv.notes:
        d["notes"] = list(hv.notes)
    return d
