"""Decode a whole frame: link, IP packets at every tunnel depth, and their L4 headers.

Never raises on untrusted bytes: whatever cannot be decoded stops that branch with a
`DecodeIssue` naming the layer and the absolute offset, and what was decoded so far is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from badsum.wire import icmp, igmp, ipv4, ipv6, sctp, tcp, tunnels, udp
from badsum.wire.cursor import Cursor, DecodeIssue, Short
from badsum.wire import protofacts as pf
from badsum.wire.link import ETH_P_IP, ETH_P_IPV6, ETH_P_TEB, LinkHeader, decode_link, ethernet
from badsum.wire.ports import PortTable, UDPTunnel

#: Tunnel nesting bound (the outermost packet is depth 0).
MAX_DEPTH = pf.MAX_DEPTH

PROTO_ICMP = pf.IPPROTO_ICMP
PROTO_IGMP = pf.IPPROTO_IGMP
PROTO_IPIP = pf.IPPROTO_IPIP
PROTO_TCP = pf.IPPROTO_TCP
PROTO_UDP = pf.IPPROTO_UDP
PROTO_IPV6 = pf.IPPROTO_IPV6
PROTO_GRE = pf.IPPROTO_GRE
PROTO_ICMPV6 = pf.IPPROTO_ICMPV6
PROTO_SCTP = pf.IPPROTO_SCTP
PROTO_UDPLITE = pf.IPPROTO_UDPLITE

ETH_P_MPLS = pf.ETH_P_MPLS
ETH_P_CISCO_METADATA = pf.ETH_P_CISCO_METADATA

L4Header = tcp.TCPHeader | udp.UDPHeader | icmp.ICMPHeader | igmp.IGMPHeader | sctp.SCTPHeader | tunnels.GREHeader
IPHeader = ipv4.IPv4Header | ipv6.IPv6Header


@dataclass(slots=True)
class IPPacket:
    """One IP packet found in a frame, with the bounds its checksums cover."""

    depth: int
    """Tunnel depth: 0 for the outermost IP packet."""
    ip: IPHeader
    """The IP header."""
    proto: int
    """Upper-layer protocol."""
    l4_offset: int
    """Absolute offset of the upper-layer header."""
    l4_length: int | None
    """Upper-layer length from the IP header (None when it cannot be known)."""
    l4: L4Header | None = None
    """The decoded upper-layer header, if captured."""
    quoted: bool = False
    """Inside an ICMP error: decoded for display, never judged."""
    length_from_wire: bool = False
    """IP length 0 (TSO/LSO, BIG TCP): the L4 length was taken from the frame's length."""

    @property
    def l4_end(self) -> int | None:
        return None if self.l4_length is None else self.l4_offset + self.l4_length

    @property
    def is_fragment(self) -> bool:
        return self.ip.is_fragment

    @property
    def ports(self) -> tuple[int, int]:
        h = self.l4
        if isinstance(h, (tcp.TCPHeader, udp.UDPHeader, sctp.SCTPHeader)):
            return h.sport, h.dport
        return 0, 0


@dataclass(slots=True)
class Frame:
    """Everything decoded from one captured frame."""

    data: bytes
    """The captured bytes."""
    wire_len: int
    """Length on the wire (>= len(data) when cut by the snap length)."""
    linktype: int
    """LINKTYPE_* of the frame."""
    link: LinkHeader | None = None
    """The outermost link header (None for an unknown link type)."""
    packets: list[IPPacket] = field(default_factory=list)
    """IP packets, outermost first, in the order found."""
    tunnels: list[object] = field(default_factory=list)
    """Tunnel headers met (VXLAN, Geneve, GRE), outermost first."""
    issues: list[DecodeIssue] = field(default_factory=list)
    """What could not be decoded, with codes and offsets."""

    @property
    def known_link(self) -> bool:
        return self.link is not None

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.wire_len


def decode_frame(data: bytes, linktype: int, wire_len: int | None = None, ports: PortTable | None = None) -> Frame:
    """Decode `data` (one captured frame). Always returns."""
    data = bytes(data)
    frame = Frame(data, max(wire_len or 0, len(data)), linktype)
    d = _Decoder(frame, ports or _DEFAULT_PORTS)
    c = Cursor(data, 0, layer="link")
    try:
        frame.link = decode_link(c, linktype)
    except Short as e:
        frame.issues.append(DecodeIssue("link.truncated", e.offset))
        return frame
    if frame.link is None:
        frame.issues.append(DecodeIssue("link.unknown_linktype", 0, str(linktype)))
        return frame
    d.network(frame.link.ethertype, c.pos, frame.wire_len, 0, quoted=False)
    return frame


_DEFAULT_PORTS = PortTable()


class _Decoder:
    __slots__ = ("f", "ports")

    def __init__(self, frame: Frame, ports: PortTable) -> None:
        self.f = frame
        self.ports = ports

    def issue(self, code: str, offset: int, detail: str = "") -> None:
        self.f.issues.append(DecodeIssue(code, offset, detail))

    def network(self, ethertype: int, pos: int, limit: int, depth: int, quoted: bool) -> None:
        """Decode what an ethertype names at `pos`; `limit` is where the enclosing packet ends."""
        if depth >= MAX_DEPTH:
            self.issue("tunnel.too_deep", pos, f"depth {depth}")
            return
        data = self.f.data
        if ethertype in ETH_P_MPLS:
            pos = self._skip_mpls(pos)
            if pos is None or pos >= len(data):
                return
            nibble = data[pos] >> 4
            if nibble == 0:
                # RFC 4385 pseudowire control word, then an Ethernet frame (tshark's pwethheuristic).
                self.inner_ethernet(pos + 4, limit, depth)
                return
            ethertype = ETH_P_IP if nibble == 4 else ETH_P_IPV6 if nibble == 6 else 0
        if ethertype == ETH_P_CISCO_METADATA and pos + 8 <= len(data):
            # Cisco MetaData (SGT), 8 bytes: on Ethernet the next ethertype comes last; inside GRE
            # it comes first (as in tcpdump's various_gre.pcap). Take whichever names IP.
            first = int.from_bytes(data[pos : pos + 2], "big")
            last = int.from_bytes(data[pos + 6 : pos + 8], "big")
            ethertype, pos = (first if first in (ETH_P_IP, ETH_P_IPV6) else last), pos + 8
        if ethertype == ETH_P_IP:
            self.ip4(pos, limit, depth, quoted)
        elif ethertype == ETH_P_IPV6:
            self.ip6(pos, limit, depth, quoted)

    def _skip_mpls(self, pos: int) -> int | None:
        c = Cursor(self.f.data, pos, layer="mpls")
        try:
            for _ in range(16):
                if c.pull_u32() & 0x100:  # bottom of stack
                    return c.pos
        except Short:
            self.issue("mpls.truncated", c.pos)
            return None
        self.issue("mpls.too_many_labels", pos)
        return None

    def ip4(self, pos: int, limit: int, depth: int, quoted: bool) -> None:
        c = Cursor(self.f.data, pos, layer="ipv4")
        try:
            h = ipv4.decode(c, self.f.issues)
        except Short as e:
            self.issue("ipv4.truncated", e.offset)
            return
        if h is None:
            return
        hlen = h.header_length
        from_wire = False
        if h.total_length == 0 and not quoted:
            # TSO/LSO: the NIC fills in the length; the frame's own length is the packet's.
            end, from_wire = limit, True
        elif h.total_length < hlen:
            end = pos + hlen
        else:
            end = pos + h.total_length
            if end > limit and not quoted:
                self.issue("ipv4.total_length_exceeds_frame", pos + 2, f"{h.total_length} > {limit - pos}")
        pkt = IPPacket(depth, h, h.proto, pos + hlen, max(0, end - pos - hlen), quoted=quoted, length_from_wire=from_wire)
        self.f.packets.append(pkt)
        if h.frag_offset == 0:
            self.transport(pkt, min(end, limit) if not quoted else end)

    def ip6(self, pos: int, limit: int, depth: int, quoted: bool) -> None:
        c = Cursor(self.f.data, pos, layer="ipv6")
        try:
            h = ipv6.decode(c, self.f.issues)
        except Short as e:
            self.issue("ipv6.truncated", e.offset)
            return
        if h is None:
            return
        total = h.packet_length()
        from_wire = False
        if total is None:
            # Payload length 0 without a jumbo option: a BIG TCP/GSO super-frame as captured.
            end, from_wire = (limit, True) if not quoted else (len(self.f.data), False)
        else:
            end = pos + total
        l4_len = end - h.upper_offset
        if l4_len < 0:
            self.issue("ipv6.payload_length_too_small", pos + 4, str(h.payload_length))
            l4_len = 0
        pkt = IPPacket(depth, h, h.proto, h.upper_offset, l4_len, quoted=quoted, length_from_wire=from_wire)
        self.f.packets.append(pkt)
        if h.fragment is None or h.fragment.frag_offset == 0:
            self.transport(pkt, min(end, limit) if not quoted else end)

    def transport(self, pkt: IPPacket, end: int) -> None:
        """Decode the L4 header and follow tunnels; `end` bounds the payload."""
        data, pos, proto = self.f.data, pkt.l4_offset, pkt.proto
        c = Cursor(data, pos, end, layer=_PROTO_NAMES.get(proto, "l4"))
        try:
            if proto == PROTO_TCP:
                pkt.l4 = tcp.decode(c)
            elif proto in (PROTO_UDP, PROTO_UDPLITE):
                pkt.l4 = u = udp.decode(c, lite=proto == PROTO_UDPLITE)
                if not pkt.quoted and not pkt.is_fragment:
                    self.udp_tunnel(u, c.pos, end, pkt.depth)
            elif proto == PROTO_ICMP and pkt.ip.version == 4 or proto == PROTO_ICMPV6 and pkt.ip.version == 6:
                pkt.l4 = m = icmp.decode(c, v6=proto == PROTO_ICMPV6)
                if m.is_error and not pkt.quoted and c.remaining:
                    # RFC 792/4443: the offending packet's header, quoted; decoded, never judged.
                    self.network(ETH_P_IP if not m.v6 else ETH_P_IPV6, c.pos, end, pkt.depth + 1, quoted=True)
            elif proto == PROTO_IGMP:
                pkt.l4 = igmp.decode(c)
            elif proto == PROTO_SCTP:
                pkt.l4 = sctp.decode(c)
            elif proto == PROTO_GRE:
                pkt.l4 = g = tunnels.gre(c)
                if not pkt.quoted and not pkt.is_fragment:
                    self.gre_payload(g, c, end, pkt.depth)
            elif proto in (PROTO_IPIP, PROTO_IPV6) and not pkt.quoted and not pkt.is_fragment:
                self.network(ETH_P_IP if proto == PROTO_IPIP else ETH_P_IPV6, pos, end, pkt.depth + 1, quoted=False)
        except Short as e:
            if not pkt.quoted:
                self.issue(f"{e.layer}.truncated", e.offset)

    def udp_tunnel(self, u: udp.UDPHeader, pos: int, end: int, depth: int) -> None:
        kind = self.ports.kind(u.dport)
        if kind == UDPTunnel.NONE:
            return
        c = Cursor(self.f.data, pos, end, layer=kind.name.lower())
        if kind == UDPTunnel.VXLAN:
            v = tunnels.vxlan(c)
            self.f.tunnels.append(v)
            self.inner_ethernet(c.pos, end, depth + 1)
        elif kind == UDPTunnel.GENEVE:
            g = tunnels.geneve(c)
            self.f.tunnels.append(g)
            if g.protocol == ETH_P_TEB:
                self.inner_ethernet(c.pos, end, depth + 1)
            else:
                self.network(g.protocol, c.pos, end, depth + 1, quoted=False)
        elif kind == UDPTunnel.GRE_IN_UDP:
            self.gre_payload(tunnels.gre(c), c, end, depth)
        elif kind == UDPTunnel.MPLS_IN_UDP:
            self.network(pf.ETH_P_MPLS_UC, pos, end, depth + 1, quoted=False)

    def gre_payload(self, g: tunnels.GREHeader, c: Cursor, end: int, depth: int) -> None:
        self.f.tunnels.append(g)
        if g.protocol in (tunnels.ETH_P_ERSPAN2, tunnels.ETH_P_ERSPAN3):
            c.skip(tunnels.erspan_length(c, g.protocol, g.seq is not None))
            self.inner_ethernet(c.pos, end, depth + 1)
        elif g.protocol == ETH_P_TEB:
            self.inner_ethernet(c.pos, end, depth + 1)
        else:
            self.network(g.protocol, c.pos, end, depth + 1, quoted=False)

    def inner_ethernet(self, pos: int, end: int, depth: int) -> None:
        c = Cursor(self.f.data, pos, end, layer="ethernet")
        try:
            inner = ethernet(c)
        except Short as e:
            self.issue("ethernet.truncated", e.offset)
            return
        self.network(inner.ethertype, c.pos, end, depth, quoted=False)


_PROTO_NAMES = pf.IPPROTO_NAMES
