"""What changed between two sightings of a packet: header fields, encapsulation, payload bytes."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from badsum.checksum.verdict import Status, Verdict, VerdictFlag
from badsum.trace.keys import innermost, payload_bounds, stack
from badsum.trace.model import Observation
from badsum.wire import sctp, tcp, tunnels, udp
from badsum.wire.frame import IPPacket
from badsum.wire.protofacts import IPPROTO_NAMES

#: At most this many changed bytes are listed per pair of sightings.
MAX_BYTES = 64


@dataclass(frozen=True, slots=True)
class Change:
    """One header field that differs from the previous point."""

    layer: str
    """`link`, `ip`, `tcp`, `udp`, `encap`, `segmentation`."""
    field: str
    old: str
    new: str
    depth: int = 0
    """Tunnel depth at the later point (0 = outermost)."""

    def as_dict(self) -> dict[str, object]:
        return {"layer": self.layer, "field": self.field, "old": self.old, "new": self.new, "depth": self.depth}

    def __str__(self) -> str:
        where = f"{self.layer}@{self.depth}" if self.depth else self.layer
        return f"{where} {self.field} {self.old} -> {self.new}"


@dataclass(frozen=True, slots=True)
class ByteChange:
    """One payload byte that differs from the previous point's copy."""

    frame: int
    """Offset in the frame at the later point."""
    payload: int
    """Offset in the innermost L4 payload (after the TCP/UDP header) at the later point."""
    old: int
    new: int
    seq: int | None = None
    """TCP sequence number of the byte."""

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"frame": self.frame, "payload": self.payload, "old": self.old, "new": self.new}
        if self.seq is not None:
            d["seq"] = self.seq
        return d


def addr(raw: bytes) -> str:
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return raw.hex()


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def describe(pkt: IPPacket) -> str:
    """One packet's addressing, e.g. `udp 198.51.100.1:40000 > 198.51.100.2:8472`."""
    s, d = addr(pkt.ip.src), addr(pkt.ip.dst)
    name = IPPROTO_NAMES.get(pkt.proto, f"proto {pkt.proto}")
    if isinstance(pkt.l4, (tcp.TCPHeader, udp.UDPHeader, sctp.SCTPHeader)):
        return f"{name} {s}:{pkt.l4.sport} > {d}:{pkt.l4.dport}"
    return f"{name} {s} > {d}"


def _tunnel_names(obs: Observation) -> str:
    names = []
    for t in obs.frame.tunnels:
        if isinstance(t, tunnels.VXLANHeader):
            names.append(f"vxlan vni {t.vni}")
        elif isinstance(t, tunnels.GeneveHeader):
            names.append(f"geneve vni {t.vni}")
        elif isinstance(t, tunnels.GREHeader):
            names.append("gre")
    return ", ".join(names)


def field_changes(a: Observation, b: Observation) -> list[Change]:
    """Header fields of `b` that differ from `a` (stacks aligned from the innermost packet)."""
    out: list[Change] = []
    la, lb = a.frame.link, b.frame.link
    if la is not None and lb is not None and la.kind == lb.kind == "ethernet":
        if la.src != lb.src:
            out.append(Change("link", "src", _mac(la.src), _mac(lb.src)))
        if la.dst != lb.dst:
            out.append(Change("link", "dst", _mac(la.dst), _mac(lb.dst)))
    if la is not None and lb is not None and la.vlans != lb.vlans:
        out.append(Change("link", "vlan", ",".join(map(str, la.vlans)) or "none", ",".join(map(str, lb.vlans)) or "none"))
    sa, sb = stack(a.frame), stack(b.frame)
    for i in range(1, min(len(sa), len(sb)) + 1):
        out += _packet_changes(sa[-i], sb[-i])
    if len(sb) > len(sa):
        outer = "; ".join(describe(p) for p in sb[: len(sb) - len(sa)])
        out.append(Change("encap", "added", "none", f"{outer} ({_tunnel_names(b) or 'ip-in-ip'})"))
    elif len(sa) > len(sb):
        outer = "; ".join(describe(p) for p in sa[: len(sa) - len(sb)])
        out.append(Change("encap", "removed", f"{outer} ({_tunnel_names(a) or 'ip-in-ip'})", "none"))
    return out


def _packet_changes(pa: IPPacket, pb: IPPacket) -> list[Change]:
    out, d = [], pb.depth
    ia, ib = pa.ip, pb.ip
    if ia.src != ib.src:
        out.append(Change("ip", "src", addr(ia.src), addr(ib.src), d))
    if ia.dst != ib.dst:
        out.append(Change("ip", "dst", addr(ia.dst), addr(ib.dst), d))
    if ia.version == ib.version == 4:
        if ia.ttl != ib.ttl:
            out.append(Change("ip", "ttl", str(ia.ttl), str(ib.ttl), d))
        if ia.tos != ib.tos:
            out.append(Change("ip", "tos", f"0x{ia.tos:02x}", f"0x{ib.tos:02x}", d))
    elif ia.version == ib.version == 6 and ia.hop_limit != ib.hop_limit:
        out.append(Change("ip", "hop_limit", str(ia.hop_limit), str(ib.hop_limit), d))
    ha, hb = pa.l4, pb.l4
    if type(ha) is type(hb) and isinstance(ha, (tcp.TCPHeader, udp.UDPHeader)):
        name = "tcp" if isinstance(ha, tcp.TCPHeader) else "udp"
        if ha.sport != hb.sport:
            out.append(Change(name, "sport", str(ha.sport), str(hb.sport), d))
        if ha.dport != hb.dport:
            out.append(Change(name, "dport", str(ha.dport), str(hb.dport), d))
        if ha.checksum != hb.checksum and (pa.l4_length == pb.l4_length):
            out.append(Change(name, "checksum", f"0x{ha.checksum:04x}", f"0x{hb.checksum:04x}", d))
    return out


def byte_changes(before: list[Observation], b: Observation) -> list[ByteChange]:
    """Payload bytes of `b`'s innermost packet that differ from the copies in `before`.

    TCP payloads are compared in sequence space (so a segment is compared with the part of a
    super-frame that holds the same bytes); other payloads byte for byte when of equal length.
    """
    pb = innermost(b.frame)
    bb = payload_bounds(pb, len(b.frame.data)) if pb is not None else None
    if pb is None or bb is None:
        return []
    out: list[ByteChange] = []
    done: set[int] = set()
    for a in before:
        pa = innermost(a.frame)
        ab = payload_bounds(pa, len(a.frame.data)) if pa is not None else None
        if pa is None or ab is None or pa.proto != pb.proto:
            continue
        if isinstance(pb.l4, tcp.TCPHeader) and isinstance(pa.l4, tcp.TCPHeader):
            sa, sb = pa.l4.seq, pb.l4.seq
            lo, hi = max(sa, sb), min(sa + ab[1] - ab[0], sb + bb[1] - bb[0])
            if hi <= lo:
                continue
            xa, xb = ab[0] + lo - sa, bb[0] + lo - sb
            seq0: int | None = lo
        else:
            if pa.l4_length != pb.l4_length:
                continue
            lo, hi, xa, xb, seq0 = 0, min(ab[1] - ab[0], bb[1] - bb[0]), ab[0], bb[0], None
        da, db = a.frame.data[xa : xa + hi - lo], b.frame.data[xb : xb + hi - lo]
        if da == db:
            continue
        for k, (x, y) in enumerate(zip(da, db)):
            if x != y and xb + k not in done:
                done.add(xb + k)
                out.append(ByteChange(xb + k, xb + k - bb[0], x, y, None if seq0 is None else (seq0 + k) & 0xFFFFFFFF))
                if len(out) >= MAX_BYTES:
                    return out
    return out


def status_text(v: Verdict) -> str:
    text = f"{v.layer.label}{'@' + str(v.depth) if v.depth else ''} {v.status.label}"
    if v.flags & VerdictFlag.KERNEL:
        text += " (kernel)"
    return text


def kernel_text(tp_status: int) -> str:
    from badsum.checksum.verdict import (
        TP_STATUS_CSUM_VALID,
        TP_STATUS_CSUMNOTREADY,
        TP_STATUS_GSO_TCP,
    )

    names = [n for bit, n in ((TP_STATUS_CSUMNOTREADY, "CSUMNOTREADY"), (TP_STATUS_CSUM_VALID, "CSUM_VALID"),
                              (TP_STATUS_GSO_TCP, "GSO_TCP")) if tp_status & bit]  # fmt: skip
    return "|".join(names) or "none"


def l4_verdicts(obs: Observation) -> list[Verdict]:
    """The verdicts that matter for the packet's health (IP header checksums of partial packets aside)."""
    return [v for v in obs.verdicts if not (v.status == Status.PARTIAL and v.flags & VerdictFlag.HDR_OFFLOAD)]
