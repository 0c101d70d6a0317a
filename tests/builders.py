"""Captures built with scapy, an independent packet builder, for tests that must not use badsum's
own code to make their inputs. Each case says what badsum must conclude, from first principles."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from scapy.all import (
    GRE,
    ICMP,
    IP,
    SCTP,
    TCP,
    UDP,
    VXLAN,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    IPv6,
    IPOption_LSRR,
    IPv6ExtHdrFragment,
    Raw,
    fragment,
    wrpcap,
)
from scapy.contrib.geneve import GENEVE
from scapy.layers.igmp import IGMP

A4, B4, C4, D4 = "192.0.2.1", "192.0.2.2", "198.51.100.1", "198.51.100.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def ones_sum(data: bytes) -> int:
    """RFC 1071, written out independently of badsum.checksum."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo4(src: str, dst: str, proto: int, length: int) -> int:
    import socket

    return ones_sum(socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, length))


def pseudo6(src: str, dst: str, proto: int, length: int) -> int:
    import socket

    raw = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return ones_sum(raw + struct.pack("!I3xB", length, proto))


def with_l4_checksum(pkt, layer, value: int):  # noqa: ANN001
    """Rebuild `pkt` with the checksum of `layer` forced to `value`."""
    p = pkt.__class__(bytes(pkt))
    p[layer].chksum = value
    return p


@dataclass(frozen=True)
class Case:
    name: str
    frame: bytes
    expect: dict[str, str]  # "layer@depth" -> status


def _b(p) -> bytes:  # noqa: ANN001
    return bytes(p)


def zoo() -> list[Case]:
    """One frame per situation; expectations follow docs/verdicts.md."""
    pay = Raw(b"badsum-test-payload-" * 10)
    cases: list[Case] = []
    tcp4 = Ether(**MAC) / IP(src=A4, dst=B4) / TCP(sport=40000, dport=80, flags="PA") / pay
    cases.append(Case("tcp4-ok", _b(tcp4), {"ipv4@0": "ok", "tcp@0": "ok"}))
    good = Ether(_b(tcp4))
    cases.append(Case("tcp4-bad", _b(with_l4_checksum(good, TCP, good[TCP].chksum ^ 0x0100)), {"ipv4@0": "ok", "tcp@0": "bad"}))
    tlen = len(good[TCP])
    cases.append(Case("tcp4-partial", _b(with_l4_checksum(good, TCP, pseudo4(A4, B4, 6, tlen))), {"ipv4@0": "ok", "tcp@0": "partial"}))
    ipbad = Ether(_b(tcp4))
    ipbad[IP].chksum ^= 0x0001
    cases.append(Case("ipv4-bad", _b(ipbad), {"ipv4@0": "bad", "tcp@0": "ok"}))
    udp4 = Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=5353, dport=53) / pay
    cases.append(Case("udp4-ok", _b(udp4), {"ipv4@0": "ok", "udp@0": "ok"}))
    cases.append(Case("udp4-zero", _b(with_l4_checksum(Ether(_b(udp4)), UDP, 0)), {"ipv4@0": "ok", "udp@0": "zero-allowed"}))
    ulen = len(Ether(_b(udp4))[UDP])
    cases.append(Case("udp4-partial", _b(with_l4_checksum(Ether(_b(udp4)), UDP, pseudo4(A4, B4, 17, ulen))), {"ipv4@0": "ok", "udp@0": "partial"}))
    tcp6 = Ether(**MAC) / IPv6(src=A6, dst=B6) / TCP(sport=40000, dport=443, flags="S")
    cases.append(Case("tcp6-ok", _b(tcp6), {"tcp@0": "ok"}))
    t6 = Ether(_b(tcp6))
    cases.append(Case("tcp6-partial", _b(with_l4_checksum(t6, TCP, pseudo6(A6, B6, 6, len(t6[TCP])))), {"tcp@0": "partial"}))
    udp6 = Ether(**MAC) / IPv6(src=A6, dst=B6) / UDP(sport=1000, dport=2000) / pay
    cases.append(Case("udp6-zero", _b(with_l4_checksum(Ether(_b(udp6)), UDP, 0)), {"udp@0": "zero-invalid"}))
    cases.append(Case("icmp4-ok", _b(Ether(**MAC) / IP(src=A4, dst=B4) / ICMP(id=7, seq=1) / pay), {"ipv4@0": "ok", "icmp@0": "ok"}))
    icmpbad = Ether(_b(Ether(**MAC) / IP(src=A4, dst=B4) / ICMP(id=7, seq=2) / pay))
    cases.append(Case("icmp4-bad", _b(with_l4_checksum(icmpbad, ICMP, icmpbad[ICMP].chksum ^ 0xFFFF if icmpbad[ICMP].chksum not in (0, 0xFFFF) else 0x1234)), {"ipv4@0": "ok", "icmp@0": "bad"}))
    cases.append(Case("icmp6-ok", _b(Ether(**MAC) / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(id=1, seq=1)), {"icmpv6@0": "ok"}))
    cases.append(Case("vlan-qinq", _b(Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / IP(src=A4, dst=B4) / TCP(sport=1, dport=2)), {"ipv4@0": "ok", "tcp@0": "ok"}))
    inner = Ether(**MAC) / IP(src=C4, dst=D4) / TCP(sport=1234, dport=8080, flags="S")
    vx = Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=50000, dport=4789) / VXLAN(vni=42) / inner
    cases.append(Case("vxlan-ok", _b(vx), {"ipv4@0": "ok", "udp@0": "ok", "ipv4@1": "ok", "tcp@1": "ok"}))
    vxb = Ether(_b(vx))
    vxb[VXLAN][TCP].chksum ^= 0x0040
    vxb[UDP].chksum = None  # outer sum recomputed over the corrupted inner bytes: only the inner is bad
    cases.append(Case("vxlan-inner-bad", _b(Ether(_b(vxb))), {"ipv4@0": "ok", "udp@0": "ok", "ipv4@1": "ok", "tcp@1": "bad"}))
    vx0 = with_l4_checksum(Ether(_b(vx)), UDP, 0)
    cases.append(Case("vxlan-zero-outer", _b(vx0), {"ipv4@0": "ok", "udp@0": "zero-allowed", "ipv4@1": "ok", "tcp@1": "ok"}))
    fl = Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=50000, dport=8472) / VXLAN(vni=1) / inner
    cases.append(Case("vxlan-8472", _b(fl), {"ipv4@0": "ok", "udp@0": "ok", "ipv4@1": "ok", "tcp@1": "ok"}))
    gre = Ether(**MAC) / IP(src=A4, dst=B4) / GRE(chksum_present=1) / IP(src=C4, dst=D4) / UDP(sport=1, dport=2) / pay
    cases.append(Case("gre-csum", _b(gre), {"ipv4@0": "ok", "gre@0": "ok", "ipv4@1": "ok", "udp@1": "ok"}))
    cases.append(Case("ipip", _b(Ether(**MAC) / IP(src=A4, dst=B4) / IP(src=C4, dst=D4) / TCP(sport=5, dport=6)), {"ipv4@0": "ok", "ipv4@1": "ok", "tcp@1": "ok"}))
    cases.append(Case("sctp", _b(Ether(**MAC) / IP(src=A4, dst=B4) / SCTP(sport=9, dport=9) / pay), {"ipv4@0": "ok", "sctp@0": "ok"}))
    cases.append(Case("igmp", _b(Ether(**MAC) / IP(src=A4, dst="224.0.0.1", ttl=1) / IGMP(type=0x16, gaddr="224.0.0.251")), {"ipv4@0": "ok", "igmp@0": "ok"}))
    # ICMP error quoting a TCP header with a bad checksum: only the ICMP sum is judged.
    quoted = IP(src=B4, dst=A4) / TCP(sport=80, dport=40000, chksum=0xDEAD)
    err = Ether(**MAC) / IP(src=C4, dst=B4) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(_b(quoted)[:28])
    cases.append(Case("icmp-frag-needed-quoting-bad-tcp", _b(err), {"ipv4@0": "ok", "icmp@0": "ok"}))
    # IPv4 loose source route: the sender's pseudo-header uses the route's last hop (RFC 791).
    lsrr = Ether(**MAC) / IP(src=A4, dst=C4, options=[IPOption_LSRR(routers=[C4, D4])]) / TCP(sport=7, dport=8) / pay
    cases.append(Case("ipv4-lsrr", _b(lsrr), {"ipv4@0": "ok", "tcp@0": "ok"}))
    cases.append(Case("udplite-coverage", udplite_frame(cover=8 + 16, good=True), {"ipv4@0": "ok", "udplite@0": "ok"}))
    cases.append(Case("udplite-bad", udplite_frame(cover=0, good=False), {"ipv4@0": "ok", "udplite@0": "bad"}))
    sctp = Ether(_b(Ether(**MAC) / IP(src=A4, dst=B4) / SCTP(sport=9, dport=9) / pay))
    sctp[SCTP].chksum ^= 0x00010000
    cases.append(Case("sctp-bad", _b(Ether(_b(sctp))), {"ipv4@0": "ok", "sctp@0": "bad"}))
    gb = bytearray(_b(gre))
    gb[14 + 20 + 4] ^= 0x01  # GRE checksum field (C bit set): first byte of the checksum
    cases.append(Case("gre-csum-bad", bytes(gb), {"ipv4@0": "ok", "gre@0": "bad", "ipv4@1": "ok", "udp@1": "ok"}))
    gen = Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=50001, dport=6081) / GENEVE(vni=7, proto=0x6558) / inner
    cases.append(Case("geneve", _b(gen), {"ipv4@0": "ok", "udp@0": "ok", "ipv4@1": "ok", "tcp@1": "ok"}))
    v6vx = Ether(**MAC) / IPv6(src=A6, dst=B6) / UDP(sport=50000, dport=4789) / VXLAN(vni=9) / inner
    cases.append(Case("vxlan-over-ipv6-zero", _b(with_l4_checksum(Ether(_b(v6vx)), UDP, 0)), {"udp@0": "zero-allowed", "ipv4@1": "ok", "tcp@1": "ok"}))
    return cases


def udplite_frame(cover: int, good: bool) -> bytes:
    """UDP-Lite (RFC 3828): coverage in place of length; the sum covers only `cover` bytes."""
    import socket

    payload = bytes(range(64))
    length = 8 + len(payload)
    cov = cover or length
    head = struct.pack("!HHHH", 3000, 4000, cover, 0)
    pseudo = socket.inet_aton(A4) + socket.inet_aton(B4) + struct.pack("!BBH", 0, 136, length)
    s = ones_sum(pseudo + (head + payload)[:cov])
    csum = (~s) & 0xFFFF or 0xFFFF
    if not good:
        csum ^= 0x0101
    seg = struct.pack("!HHHH", 3000, 4000, cover, csum) + payload
    return _b(Ether(**MAC) / IP(src=A4, dst=B4, proto=136) / Raw(seg))


def fragments_case() -> tuple[list[bytes], dict[str, str]]:
    """A UDP datagram in three IPv4 fragments: the L4 sum is judged once, after reassembly."""
    big = IP(src=A4, dst=B4, id=4242) / UDP(sport=7, dport=9) / Raw(bytes(range(256)) * 8)
    frags = fragment(big, fragsize=800)
    return [_b(Ether(**MAC) / f) for f in frags], {"udp@0": "ok"}


def ipv6_fragments() -> list[bytes]:
    big = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=99) / UDP(sport=7, dport=9) / Raw(bytes(range(200)) * 10)
    from scapy.layers.inet6 import fragment6

    return [_b(Ether(**MAC) / f) for f in fragment6(big, 700)]


def write_zoo(path: Path) -> list[Case]:
    cases = zoo()
    frags, _ = fragments_case()
    pkts = [Ether(c.frame) for c in cases] + [Ether(f) for f in frags] + [Ether(f) for f in ipv6_fragments()]
    wrpcap(str(path), pkts)
    return cases
