"""Packet facts: one fixed-size record per captured packet, the input of the symptom detectors.

A fact describes the innermost IP packet of a frame (inside VXLAN/Geneve/GRE/IPIP, never a packet
quoted inside an ICMP error) with what the detectors need: TCP flags, sequence and
acknowledgement numbers, payload length, DF, ICMP type/code/MTU and, for an ICMP error, the
packet it quotes. The C extractor (`badsum.native._fastscan.facts`) fills the common packets; the
others go through `fact_of_frame`, the reference built on the full decoder. Both must agree
field for field (tests/flows/test_facts.py).
"""

from __future__ import annotations

import numpy as np

from badsum.wire import icmp, ipv4, ipv6, tcp, udp
from badsum.wire.frame import Frame, IPPacket
from badsum.wire.protofacts import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE

#: bit values of `ip_flags`
IPF_DF = 0x01  # innermost packet has DF (IPv6: always, routers never fragment it)
IPF_FRAGMENT = 0x02  # innermost packet is a fragment (MF set or offset != 0, or an IPv6 fragment header)
IPF_OUTER_DF = 0x04  # outermost IP packet has DF (IPv6: always)
IPF_UDP_TUNNEL = 0x08  # the packet was carried in a UDP tunnel (VXLAN, Geneve)
IPF_LATER_FRAGMENT = 0x10  # a non-first fragment: no L4 header, ports/flags are 0
#: bit values of `q_flags`
QF_DF = 0x01  # the quoted packet had DF

FACTS_DTYPE = np.dtype(
    [
        ("frame", "<u8"),  # frame number (1-based, as tshark counts)
        ("ts_ns", "<i8"),  # capture time
        ("seq", "<u4"),  # TCP sequence number
        ("ack", "<u4"),  # TCP acknowledgement number
        ("payload", "<u4"),  # L4 payload bytes per the headers' lengths (not the snap length)
        ("ip_len", "<u4"),  # innermost IP packet length (v4 total length, v6 40 + payload length)
        ("outer_len", "<u4"),  # outermost IP packet length (== ip_len when depth is 0)
        ("icmp_mtu", "<u4"),  # MTU of ICMP frag-needed (3/4) or ICMPv6 Packet Too Big (2), else 0
        ("q_seq", "<u4"),  # ICMP error: TCP sequence number of the quoted packet
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("ipid", "<u2"),  # IPv4 identification (0 for IPv6)
        ("q_sport", "<u2"),  # ICMP error: quoted packet's ports
        ("q_dport", "<u2"),
        ("q_ipid", "<u2"),  # ICMP error: quoted IPv4 identification
        ("q_len", "<u2"),  # ICMP error: quoted packet's IP length (the size that did not fit)
        ("win", "<u2"),  # TCP window (unscaled)
        ("valid", "u1"),  # 1 when an IP packet was found; every other field is 0 otherwise
        ("ipver", "u1"),  # 4 or 6
        ("proto", "u1"),  # upper-layer protocol after IPv6 extension headers
        ("depth", "u1"),  # tunnel depth of the innermost packet (0: not tunnelled)
        ("tcp_flags", "u1"),  # FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 ...
        ("ip_flags", "u1"),  # IPF_* bits
        ("icmp_type", "u1"),
        ("icmp_code", "u1"),
        ("q_proto", "u1"),  # ICMP error: quoted packet's protocol (0: no quote)
        ("q_flags", "u1"),  # QF_* bits
        ("_pad", "V2"),
        ("src", "V16"),  # addresses as in ISSUE_DTYPE: IPv4 in the first 4 bytes, rest zero
        ("dst", "V16"),
        ("q_src", "V16"),  # ICMP error: quoted packet's addresses
        ("q_dst", "V16"),
    ]
)
assert FACTS_DTYPE.itemsize == 136, FACTS_DTYPE.itemsize

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6


def _addr(raw: bytes) -> bytes:
    return bytes(raw).ljust(16, b"\0")[:16]


def _ip_len(ip: ipv4.IPv4Header | ipv6.IPv6Header, frame_len: int) -> int:
    if isinstance(ip, ipv4.IPv4Header):
        # TSO/LSO frames carry total length 0: the packet is what was captured from there on.
        return ip.total_length or max(frame_len - ip.offset, 0)
    if ip.jumbo_length is not None:
        return min(40 + ip.jumbo_length, 0xFFFFFFFF)  # a hostile Jumbo Payload option must not overflow u4
    return 40 + ip.payload_length if ip.payload_length else max(frame_len - ip.offset, 0)


def fact_of_frame(frame: Frame, frame_no: int, ts_ns: int) -> np.void:
    """The reference fact of one decoded frame (slow; for deferred packets and tests)."""
    out = np.zeros((), dtype=FACTS_DTYPE)
    out["frame"], out["ts_ns"] = frame_no, ts_ns
    live = [p for p in frame.packets if not p.quoted]
    if not live:
        return out
    outer, pkt = live[0], live[-1]
    ip = pkt.ip
    v6 = isinstance(ip, ipv6.IPv6Header)
    flags = 0
    if v6:
        flags |= IPF_DF
        if ip.fragment is not None:
            flags |= IPF_FRAGMENT
            if ip.fragment.frag_offset:
                flags |= IPF_LATER_FRAGMENT
    else:
        if ip.dont_fragment:
            flags |= IPF_DF
        if ip.more_fragments or ip.frag_offset:
            flags |= IPF_FRAGMENT
        if ip.frag_offset:
            flags |= IPF_LATER_FRAGMENT
    if isinstance(outer.ip, ipv6.IPv6Header) or outer.ip.dont_fragment:
        flags |= IPF_OUTER_DF
    if pkt.depth > 0 and any(p.depth == pkt.depth - 1 and p.proto == PROTO_UDP for p in live):
        flags |= IPF_UDP_TUNNEL
    out["valid"] = 1
    out["ipver"] = 6 if v6 else 4
    out["proto"] = pkt.proto
    out["depth"] = pkt.depth
    out["ip_flags"] = flags
    out["src"], out["dst"] = _addr(ip.src), _addr(ip.dst)
    out["ipid"] = 0 if v6 else ip.ident
    out["ip_len"] = _ip_len(ip, frame.wire_len)
    out["outer_len"] = _ip_len(outer.ip, frame.wire_len)
    h = pkt.l4
    l4_len = pkt.l4_length if pkt.l4_length is not None else max(frame.wire_len - pkt.l4_offset, 0)
    if isinstance(h, tcp.TCPHeader):
        out["sport"], out["dport"] = h.sport, h.dport
        out["seq"], out["ack"], out["win"] = h.seq, h.ack, h.window
        out["tcp_flags"] = h.flags & 0xFF
        out["payload"] = max(l4_len - h.data_offset, 0)  # data_offset is already in bytes
    elif isinstance(h, udp.UDPHeader):
        out["sport"], out["dport"] = h.sport, h.dport
        out["payload"] = max((h.length or l4_len) - 8, 0)
    elif isinstance(h, icmp.ICMPHeader):
        out["icmp_type"], out["icmp_code"] = h.type, h.code
        out["icmp_mtu"] = h.mtu or 0
        out["payload"] = max(l4_len - 8, 0)
        if h.is_error:
            _quote(frame, pkt, out)
    return out


def _quote(frame: Frame, icmp_pkt: IPPacket, out: np.void) -> None:
    """Fill the q_* fields from the first packet quoted inside this ICMP error."""
    q = next((p for p in frame.packets if p.quoted and p.l4_offset > icmp_pkt.l4_offset), None)
    if q is None:
        return
    ip = q.ip
    out["q_proto"] = q.proto
    out["q_src"], out["q_dst"] = _addr(ip.src), _addr(ip.dst)
    if isinstance(ip, ipv4.IPv4Header):
        out["q_ipid"] = ip.ident
        out["q_len"] = min(ip.total_length, 0xFFFF)
        out["q_flags"] = QF_DF if ip.dont_fragment else 0
    else:
        out["q_len"] = min(40 + ip.payload_length, 0xFFFF)
        out["q_flags"] = QF_DF
    later = ip.frag_offset if isinstance(ip, ipv4.IPv4Header) else ip.fragment is not None and ip.fragment.frag_offset
    if later or q.proto not in _PORTS_FIRST:
        return
    # RFC 792 quotes only the IP header and 64 bits of the datagram (RFC 4443 and RFC 1812 routers
    # more): the ports and TCP's sequence number are there even when the rest of the header is not,
    # so read them from the bytes instead of the decoded header, within the decoder's own bound.
    end = min(len(frame.data), q.l4_offset + (q.l4_length or 0))
    raw = frame.data[q.l4_offset : end]
    if len(raw) >= 4:
        out["q_sport"], out["q_dport"] = int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")
    if q.proto == PROTO_TCP and len(raw) >= 8:
        out["q_seq"] = int.from_bytes(raw[4:8], "big")


#: Upper layers whose header starts with the source and destination ports.
_PORTS_FIRST = frozenset({PROTO_TCP, PROTO_UDP, IPPROTO_SCTP, IPPROTO_UDPLITE})  # ports lead the header


# ---- flow keys, vectorised ----

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)


def _mix(x: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser: cheap, well spread, wraps silently in uint64
    x = x ^ (x >> np.uint64(30))
    x = x * _M2
    x = x ^ (x >> np.uint64(27))
    return x


def _addr_words(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(a).view("<u8").reshape(-1, 2)
    return w[:, 0], w[:, 1]


def endpoint_keys(facts: np.ndarray, src: str = "src", dst: str = "dst",
                  sport: str = "sport", dport: str = "dport") -> tuple[np.ndarray, np.ndarray]:
    """Per-endpoint 64-bit keys (address + port) for both ends."""
    with np.errstate(over="ignore"):
        s0, s1 = _addr_words(facts[src])
        d0, d1 = _addr_words(facts[dst])
        ks = _mix(_mix(s0 * _M1 ^ s1) ^ facts[sport].astype(np.uint64))
        kd = _mix(_mix(d0 * _M1 ^ d1) ^ facts[dport].astype(np.uint64))
    return ks, kd


def flow_keys(facts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(key, direction): the same uint64 key for both directions of a 5-tuple (and its depth is
    not part of it), direction 0 when src is the lower endpoint key, 1 otherwise."""
    ks, kd = endpoint_keys(facts)
    lo, hi = np.minimum(ks, kd), np.maximum(ks, kd)
    with np.errstate(over="ignore"):
        key = _mix(lo * _M1 ^ hi ^ (facts["proto"].astype(np.uint64) << np.uint64(56)))
    return key, (ks > kd).astype(np.uint8)


def host_pair_keys(facts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(key, direction) for the address pair alone (ports and protocol left out)."""
    with np.errstate(over="ignore"):
        s0, s1 = _addr_words(facts["src"])
        d0, d1 = _addr_words(facts["dst"])
        ks, kd = _mix(s0 * _M1 ^ s1), _mix(d0 * _M1 ^ d1)
        lo, hi = np.minimum(ks, kd), np.maximum(ks, kd)
        key = _mix(lo * _M1 ^ hi)
    return key, (ks > kd).astype(np.uint8)
