"""Judge every checksum of a decoded frame, with evidence (docs/verdicts.md).

Pure: bytes and decoded headers in, `Verdict`s out.
"""

from __future__ import annotations

import socket

from badsum.checksum import inet
from badsum.checksum.crc32c import crc32c
from badsum.checksum.verdict import (
    TP_STATUS_CSUM_VALID,
    TP_STATUS_CSUMNOTREADY,
    TP_STATUS_UNKNOWN,
    Flow,
    Layer,
    Status,
    Verdict,
    VerdictFlag,
)
from badsum.wire import frame as fr
from badsum.wire.ipv4 import IPv4Header
from badsum.wire.ports import PortTable, UDPTunnel
from badsum.wire.protofacts import CSUM_AT

#: A packet longer than this is a GSO/TSO/GRO super-frame when its checksum is partial.
STANDARD_MTU = 1500

_L4_LAYER = {
    fr.PROTO_TCP: Layer.TCP,
    fr.PROTO_UDP: Layer.UDP,
    fr.PROTO_UDPLITE: Layer.UDPLITE,
    fr.PROTO_ICMP: Layer.ICMP,
    fr.PROTO_ICMPV6: Layer.ICMPV6,
    fr.PROTO_IGMP: Layer.IGMP,
    fr.PROTO_SCTP: Layer.SCTP,
    fr.PROTO_GRE: Layer.GRE,
}
#: Where each layer's checksum field sits in its header (wire/protofacts.CSUM_AT).
_FIELD = {layer: CSUM_AT[proto] for proto, layer in _L4_LAYER.items()}
_PSEUDO = frozenset({Layer.TCP, Layer.UDP, Layer.UDPLITE, Layer.ICMPV6})
#: Checksums that transmit offload may leave pending (the kernel's CHECKSUM_PARTIAL).
_OFFLOADABLE = frozenset({Layer.TCP, Layer.UDP, Layer.UDPLITE, Layer.ICMPV6})


def flow_of(pkt: fr.IPPacket) -> Flow:
    ip = pkt.ip
    fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    sport, dport = pkt.ports
    return Flow(ip.version, socket.inet_ntop(fam, ip.src), socket.inet_ntop(fam, ip.dst), pkt.proto, sport, dport)


def verify_frame(
    frame: fr.Frame,
    frame_no: int,
    *,
    tp_status: int = TP_STATUS_UNKNOWN,
    ports: PortTable | None = None,
    extra_flags: VerdictFlag = VerdictFlag.NONE,
    skip_ip_header: bool = False,
) -> list[Verdict]:
    """All verdicts for one frame, outermost first. Fragments' L4 sums are left to reassembly."""
    ports = ports or PortTable()
    out: list[Verdict] = []
    for pkt in frame.packets:
        if pkt.quoted:
            continue
        flow = flow_of(pkt)
        l4v: Verdict | None = None
        if not pkt.is_fragment:
            l4v = _verify_l4(frame.data, pkt, frame_no, flow, ports, extra_flags)
        if isinstance(pkt.ip, IPv4Header) and not skip_ip_header:
            out.append(_verify_ipv4_header(frame.data, pkt, frame_no, flow, l4v))
        if l4v is not None:
            out.append(l4v)
    if tp_status != TP_STATUS_UNKNOWN:
        out = apply_kernel_status(out, tp_status, superframes(frame))
    return out


def superframes(frame: fr.Frame) -> frozenset[tuple[int, Layer]]:
    """(depth, layer) of the L4 checksums that sit in GSO/TSO super-frames."""
    return frozenset(
        (p.depth, _L4_LAYER[p.proto]) for p in frame.packets if not p.quoted and p.proto in _L4_LAYER and _is_superframe(p)
    )


def apply_kernel_status(
    verdicts: list[Verdict], tp_status: int, superframes: frozenset[tuple[int, Layer]] = frozenset(),
    frame: fr.Frame | None = None, ports: PortTable | None = None,
) -> list[Verdict]:  # fmt: skip
    """The kernel's own per-packet status decides over inference (docs/verdicts.md).

    `superframes` names the (depth, layer) checksums that sit in GSO super-frames: a partial
    made by the kernel's word gets the GSO flag there too. With the `frame`, an outer UDP checksum
    of a tunnel whose inner sum is pending is judged as it will be once that sum is filled in.
    """
    out = list(verdicts)
    if tp_status & TP_STATUS_CSUMNOTREADY:
        idx = [i for i, v in enumerate(out) if v.layer in _OFFLOADABLE and v.status in (Status.BAD, Status.PARTIAL)]
        if idx:
            i = max(idx, key=lambda j: (out[j].depth, j))
            v = out[i]
            gso = VerdictFlag.GSO if (v.depth, v.layer) in superframes else VerdictFlag.NONE
            out[i] = _replace(v, Status.PARTIAL, v.flags | VerdictFlag.KERNEL | gso)
            if frame is not None:
                for j, x in enumerate(out):
                    if x.layer == Layer.UDP and x.depth < v.depth and x.status == Status.BAD and \
                            lco_verifies(frame, out[i], x, ports or PortTable()):  # fmt: skip
                        out[j] = _replace(x, Status.PARTIAL, x.flags | VerdictFlag.KERNEL)
    if tp_status & TP_STATUS_CSUM_VALID:
        for i, v in enumerate(out):
            if v.layer in (Layer.TCP, Layer.UDP, Layer.UDPLITE) and v.status in (Status.BAD, Status.PARTIAL):
                out[i] = _replace(v, Status.OK, v.flags | VerdictFlag.KERNEL)
    return out


def after_completion(frame: fr.Frame, pending: Verdict, outer: Verdict, ports: PortTable) -> Verdict | None:
    """`outer` judged again once the `pending` field holds its complete sum (None: it cannot be
    filled in). Local checksum offload (Documentation/networking/checksum-offloads.rst, "LCO")
    computes a tunnel's outer UDP sum for the packet as it will leave, so until the inner sum is
    filled in the outer one only looks wrong."""
    if pending.stored == pending.computed or pending.offset + 2 > len(frame.data):
        return None
    data = bytearray(frame.data)
    data[pending.offset : pending.offset + 2] = pending.computed.to_bytes(2, "big")
    filled = fr.decode_frame(bytes(data), frame.linktype, frame.wire_len, ports)
    return next((x for x in verify_frame(filled, 0, ports=ports) if x.offset == outer.offset and x.layer == outer.layer),
                None)  # fmt: skip


def lco_verifies(frame: fr.Frame, pending: Verdict, outer: Verdict, ports: PortTable) -> bool:
    """Whether the outer (tunnel UDP) checksum verifies once the pending inner one is filled in."""
    x = after_completion(frame, pending, outer, ports)
    return x is not None and x.status in (Status.OK, Status.ZERO_ALLOWED)


def _replace(v: Verdict, status: Status, flags: VerdictFlag) -> Verdict:
    return Verdict(v.frame, v.layer, v.depth, v.offset, v.stored, v.computed, status, flags, v.flow, v.extra)


def _verify_ipv4_header(data: bytes, pkt: fr.IPPacket, frame_no: int, flow: Flow, l4v: Verdict | None) -> Verdict:
    ip = pkt.ip
    assert isinstance(ip, IPv4Header)
    off = ip.offset + 10
    if not ip.header_captured:
        return Verdict(frame_no, Layer.IPV4, pkt.depth, off, ip.checksum, 0, Status.UNVERIFIABLE, VerdictFlag.TRUNCATED, flow)
    hdr = bytearray(data[ip.offset : ip.offset + ip.header_length])
    total = inet.ones_sum(hdr)
    hdr[10:12] = b"\0\0"
    computed = inet.complement(inet.ones_sum(hdr))
    if inet.verifies(total):
        return Verdict(frame_no, Layer.IPV4, pkt.depth, off, ip.checksum, computed, Status.OK, VerdictFlag.NONE, flow)
    if ip.checksum == 0 and (ip.total_length == 0 or (l4v is not None and l4v.status == Status.PARTIAL)):
        flags = VerdictFlag.HDR_OFFLOAD | (VerdictFlag.LSO_LEN0 if ip.total_length == 0 else VerdictFlag.NONE)
        return Verdict(frame_no, Layer.IPV4, pkt.depth, off, 0, computed, Status.PARTIAL, flags, flow)
    return Verdict(frame_no, Layer.IPV4, pkt.depth, off, ip.checksum, computed, Status.BAD, VerdictFlag.NONE, flow)


def _verify_l4(
    data: bytes, pkt: fr.IPPacket, frame_no: int, flow: Flow, ports: PortTable, extra: VerdictFlag
) -> Verdict | None:
    layer = _L4_LAYER.get(pkt.proto)
    if layer is None:
        return None
    if layer == Layer.ICMP and pkt.ip.version != 4 or layer == Layer.ICMPV6 and pkt.ip.version != 6:
        return None
    start, length = pkt.l4_offset, pkt.l4_length
    field = start + _FIELD[layer]
    if layer == Layer.GRE:
        if len(data) < start + 2 or not data[start] & 0x80:  # C bit clear: no checksum present
            return None
    width = 4 if layer == Layer.SCTP else 2
    stored = 0
    if field + width <= len(data):
        raw = data[field : field + width]
        stored = int.from_bytes(raw, "little" if layer == Layer.SCTP else "big")
    if length is None or start + length > len(data) or field + width > start + max(length, 0):
        flags = extra | VerdictFlag.TRUNCATED
        return Verdict(frame_no, layer, pkt.depth, field, stored, 0, Status.UNVERIFIABLE, flags, flow, 0)
    seg = bytearray(data[start : start + length])
    rel = _FIELD[layer]
    seg[rel : rel + width] = bytes(width)

    if layer == Layer.SCTP:
        computed = crc32c(seg)
        status = Status.OK if computed == stored else Status.BAD
        return Verdict(frame_no, layer, pkt.depth, field, stored, computed, status, extra, flow)

    if layer == Layer.UDP and stored == 0:
        if pkt.ip.version == 4:
            return Verdict(frame_no, layer, pkt.depth, field, 0, _computed(pkt, seg, layer, length), Status.ZERO_ALLOWED, extra, flow)
        tunnel = ports.kind(flow.dport) != UDPTunnel.NONE
        status = Status.ZERO_ALLOWED if tunnel else Status.ZERO_INVALID
        flags = extra | (VerdictFlag.TUNNEL_ZERO if tunnel else VerdictFlag.NONE)
        return Verdict(frame_no, layer, pkt.depth, field, 0, _computed(pkt, seg, layer, length), status, flags, flow)

    if layer == Layer.UDPLITE:
        cov = int.from_bytes(seg[4:6], "big")
        if cov == 0:
            cov = length
        if cov < 8 or cov > length or stored == 0:
            computed = _computed(pkt, seg[: max(8, min(cov, length))], layer, length)
            return Verdict(frame_no, layer, pkt.depth, field, stored, computed, Status.BAD, extra, flow, cov)
        seg = seg[:cov]

    pseudo = _pseudo(pkt, layer, length)
    body = inet.ones_sum(seg)
    total = inet.add(pseudo, body)
    computed = inet.complement(total)
    if layer in (Layer.UDP, Layer.UDPLITE) and computed == 0:
        computed = 0xFFFF  # RFC 768: a computed zero is transmitted as all ones
    if inet.verifies(inet.add(total, stored)):
        return Verdict(frame_no, layer, pkt.depth, field, stored, computed, Status.OK, extra, flow)
    if layer in _OFFLOADABLE:
        flags = extra
        matched = stored == pseudo
        if not matched and pkt.length_from_wire and pkt.ip.version == 4 and stored == _pseudo(pkt, layer, 0):
            matched, flags = True, flags | VerdictFlag.LSO_LEN0
        if matched:
            if _is_superframe(pkt):
                flags |= VerdictFlag.GSO
            return Verdict(frame_no, layer, pkt.depth, field, stored, computed, Status.PARTIAL, flags, flow, length)
    return Verdict(frame_no, layer, pkt.depth, field, stored, computed, Status.BAD, extra, flow)


def _pseudo(pkt: fr.IPPacket, layer: Layer, length: int) -> int:
    if layer not in _PSEUDO:
        return 0
    ip = pkt.ip
    if isinstance(ip, IPv4Header):
        return inet.pseudo_v4(ip.src, ip.final_dst, pkt.proto, length)
    return inet.pseudo_v6(ip.pseudo_src, ip.pseudo_dst, pkt.proto, length)


def _computed(pkt: fr.IPPacket, seg: bytearray, layer: Layer, length: int) -> int:
    c = inet.complement(inet.add(_pseudo(pkt, layer, length), inet.ones_sum(seg)))
    return 0xFFFF if c == 0 else c


def _is_superframe(pkt: fr.IPPacket) -> bool:
    if pkt.length_from_wire:
        return True
    end = pkt.l4_end
    return end is not None and end - pkt.ip.offset > STANDARD_MTU
