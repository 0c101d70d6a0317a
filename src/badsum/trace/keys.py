"""Packet keys that survive what changes between capture points.

TTL, MACs, VLAN tags, NAT'd addresses and ports and added or removed encapsulation change between
points; the innermost packet's IP id, its protocol, TCP sequence and acknowledgment numbers and
its L4 length do not. TCP data is keyed by its sequence range, so that a TSO/GSO super-frame
matches the segments it was cut into (and a GRO'd frame the segments it was built from).
"""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire import icmp, tcp, udp
from badsum.wire.frame import Frame, IPPacket
from badsum.wire.protofacts import IPPROTO_TCP

#: Largest gap of IP ids between a super-frame and one of its segments (segment index).
MAX_SEGMENTS = 1024
TCP_SYN, TCP_FIN = 0x02, 0x01


@dataclass(frozen=True, slots=True)
class PacketKey:
    """What identifies the innermost packet of a frame at any point."""

    ipver: int
    proto: int
    ident: int | None
    """IPv4 id (None for IPv6)."""
    lo: int
    """TCP: first sequence number covered; others: 0."""
    hi: int
    """TCP: one past the last sequence number (SYN and FIN count one); others: 0."""
    ack: int
    """TCP acknowledgment number; others: 0."""
    extra: tuple[int, ...] = ()
    """Other invariants: TCP flags of an empty segment, L4 length, ICMP type/code, fragment offset."""

    @property
    def is_range(self) -> bool:
        """TCP with data: matched by overlapping sequence ranges."""
        return self.proto == IPPROTO_TCP and self.hi - self.lo > 0 and not self.extra

    def bucket(self) -> tuple:
        return (self.ipver, self.proto, self.ack) if self.is_range else (self.ipver, self.proto, self.ident, self.lo,
                                                                          self.hi, self.ack, self.extra)  # fmt: skip


def stack(frame: Frame) -> list[IPPacket]:
    """The frame's IP packets that carry traffic (not quoted in ICMP errors), outermost first."""
    return sorted((p for p in frame.packets if not p.quoted), key=lambda p: p.depth)


def innermost(frame: Frame) -> IPPacket | None:
    s = stack(frame)
    return s[-1] if s else None


def payload_bounds(pkt: IPPacket, captured: int) -> tuple[int, int] | None:
    """Absolute [start, end) of the L4 payload (after the L4 header), cut to what was captured."""
    h, end = pkt.l4, pkt.l4_end
    if h is None or end is None:
        return None
    if isinstance(h, tcp.TCPHeader):
        start = h.offset + h.data_offset
    elif isinstance(h, (udp.UDPHeader, icmp.ICMPHeader)):
        start = h.offset + 8
    else:
        start = pkt.l4_offset
    return start, max(start, min(end, captured))


def key_of(frame: Frame) -> PacketKey | None:
    """The key of a frame's innermost packet; None for frames without IP."""
    pkt = innermost(frame)
    if pkt is None:
        return None
    ip = pkt.ip
    ident = ip.ident if ip.version == 4 else (ip.fragment.ident if ip.fragment is not None else None)
    if pkt.is_fragment:
        off = ip.frag_offset if ip.version == 4 else ip.fragment.frag_offset
        return PacketKey(ip.version, pkt.proto, ident, 0, 0, 0, ("frag", off, pkt.l4_length or 0))
    h = pkt.l4
    if isinstance(h, tcp.TCPHeader):
        n = max(0, (pkt.l4_length or 0) - h.data_offset) + bool(h.flags & TCP_SYN) + bool(h.flags & TCP_FIN)
        lo = h.seq
        if n and not h.flags & TCP_SYN:
            return PacketKey(ip.version, pkt.proto, ident, lo, lo + n, h.ack)
        # SYN and empty segments: exact (duplicate ACKs told apart by IP id where there is one).
        return PacketKey(ip.version, pkt.proto, ident, lo, lo + n, h.ack, ("flags", h.flags & 0x17, n))
    if isinstance(h, icmp.ICMPHeader):
        extra = (h.type, h.code, pkt.l4_length or 0)
        if ident is None:
            extra += (hash(frame.data[h.offset + 4 : pkt.l4_end]),)
        return PacketKey(ip.version, pkt.proto, ident, 0, 0, 0, extra)
    extra: tuple = (pkt.l4_length or 0,)
    if ident is None:  # IPv6: no id; the payload tells packets apart
        bounds = payload_bounds(pkt, len(frame.data))
        if bounds is not None:
            extra += (hash(frame.data[bounds[0] : bounds[1]]),)
    return PacketKey(ip.version, pkt.proto, ident, 0, 0, 0, extra)


def related(a: PacketKey, b: PacketKey) -> bool:
    """Whether two keys can be the same packet (or a super-frame and one of its segments)."""
    if a.bucket() != b.bucket():
        return False
    if not a.is_range:
        return True
    if a.hi <= b.lo or b.hi <= a.lo:
        return False
    if a.ident is None or b.ident is None:
        return True
    if (a.lo, a.hi) == (b.lo, b.hi):
        return a.ident == b.ident
    if a.lo <= b.lo and b.hi <= a.hi:  # a is the super-frame
        return _segment_of(a, b)
    if b.lo <= a.lo and a.hi <= b.hi:
        return _segment_of(b, a)
    return False


def _segment_of(big: PacketKey, seg: PacketKey) -> bool:
    """Whether `seg` can be segment k of `big`: GSO/TSO give segment k the id `id + k` and the
    bytes from `k * mss`, where mss is at least the segment's own length (the last may be short)."""
    assert big.ident is not None and seg.ident is not None
    k = (seg.ident - big.ident) % 65536
    if k >= MAX_SEGMENTS:
        return False
    gap = seg.lo - big.lo
    if k == 0:
        return gap == 0
    return gap % k == 0 and gap // k >= seg.hi - seg.lo
