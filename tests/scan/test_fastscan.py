"""The C fast path (`badsum.native._fastscan`) against packets built by scapy, an independent builder.

Expected checksums come from scapy (the same packet built with the checksum left to scapy) and
pseudo-header sums from the plain-integer RFC 1071 code below, never from badsum code.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scapy.all import (
    ARP,
    ICMP,
    IP,
    TCP,
    UDP,
    VXLAN,
    Dot1AD,
    Dot1Q,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    IPerror,
    IPerror6,
    IPv6,
    IPv6ExtHdrFragment,
    IPOption_NOP,
    IPOption_RR,
    Raw,
    TCPerror,
    raw,
)

from badsum.checksum.verdict import (
    ISSUE_DTYPE,
    MAX_DEPTH,
    N_LAYERS,
    N_STATUS,
    TP_STATUS_CSUM_VALID,
    TP_STATUS_CSUMNOTREADY,
    TP_STATUS_UNKNOWN,
    Layer,
    Status,
    VerdictFlag,
)
from badsum.native import _fastscan
from badsum.scan.batch import Batch
from badsum.scan.fast import FastResult, FastScanner, port_table
from badsum.wire.ports import UDPTunnel

V4S, V4D = "192.0.2.1", "198.51.100.7"
V6S, V6D = "2001:db8::1", "2001:db8:0:1::2"
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}

# ---- independent RFC 1071 arithmetic (plain integers) ----


def ones_sum(data: bytes) -> int:
    """16-bit one's complement sum, folded, not complemented."""
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo_v4(src: str, dst: str, proto: int, length: int) -> int:
    """RFC 793/768 pseudo-header: the value Linux stores for CHECKSUM_PARTIAL."""
    return ones_sum(socket.inet_aton(src) + socket.inet_aton(dst) + bytes([0, proto]) + length.to_bytes(2, "big"))


def pseudo_v6(src: str, dst: str, nh: int, length: int) -> int:
    """RFC 8200 section 8.1 pseudo-header."""
    a = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return ones_sum(a + length.to_bytes(4, "big") + b"\0\0\0" + bytes([nh]))


# ---- running the scanner ----


@dataclass
class Rec:
    data: bytes
    linktype: int = 1
    caplen: int | None = None
    origlen: int | None = None
    tp_status: int = TP_STATUS_UNKNOWN


def batch_of(recs: list[Rec], first_frame: int = 1) -> Batch:
    bufs = [r.data for r in recs]
    n = len(recs)
    offset = np.zeros(n, np.int64)
    if n:
        offset[1:] = np.cumsum([len(b) for b in bufs[:-1]])
    caplen = np.array([len(r.data) if r.caplen is None else r.caplen for r in recs], np.uint32)
    origlen = np.array([len(r.data) if r.origlen is None else r.origlen for r in recs], np.uint32)
    return Batch(
        buf=b"".join(bufs),
        first_frame=first_frame,
        offset=offset,
        caplen=caplen,
        origlen=origlen,
        ts_ns=np.zeros(n, np.int64),
        linktype=np.array([r.linktype for r in recs], np.uint16),
        interface=np.zeros(n, np.uint32),
        tp_status=np.array([r.tp_status for r in recs], np.uint32),
        direction=np.zeros(n, np.uint8),
        file_offset=np.zeros(n, np.int64),
    )


def scan(*items: Rec | bytes | object, ports: np.ndarray | None = None) -> FastResult:
    recs = [i if isinstance(i, Rec) else Rec(i if isinstance(i, bytes) else raw(i)) for i in items]
    result = FastScanner(ports).scan(batch_of(recs))
    check_invariants(result, len(recs))
    return result


def check_invariants(r: FastResult, n: int) -> None:
    assert r.counts.shape == (MAX_DEPTH, N_LAYERS, N_STATUS)
    assert (r.counts >= 0).all()
    assert r.stats[0] + r.stats[2] == n
    assert len(r.deferred) == r.stats[2]
    assert (r.stats[4:] == 0).all()
    # every issue row is counted, every non-ok count has its row
    non_ok = r.counts.copy()
    non_ok[:, :, Status.OK] = 0
    assert non_ok.sum() == len(r.issues)
    assert (r.issues["status"] != Status.OK).all()


def rows(r: FastResult) -> list[dict[str, object]]:
    out = []
    for row in r.issues:
        ipver = int(row["ipver"])
        n = 4 if ipver == 4 else 16
        fam = socket.AF_INET if ipver == 4 else socket.AF_INET6
        out.append(
            {
                "frame": int(row["frame"]),
                "layer": Layer(int(row["layer"])),
                "depth": int(row["depth"]),
                "status": Status(int(row["status"])),
                "flags": VerdictFlag(int(row["flags"])),
                "offset": int(row["offset"]),
                "stored": int(row["stored"]),
                "computed": int(row["computed"]),
                "extra": int(row["extra"]),
                "ipver": ipver,
                "proto": int(row["proto"]),
                "sport": int(row["sport"]),
                "dport": int(row["dport"]),
                "src": socket.inet_ntop(fam, bytes(row["src"])[:n]),
                "dst": socket.inet_ntop(fam, bytes(row["dst"])[:n]),
            }
        )
    return out


def one_row(r: FastResult) -> dict[str, object]:
    (row,) = rows(r)
    return row


def counted(r: FastResult) -> dict[tuple[int, Layer, Status], int]:
    return {(int(d), Layer(int(lay)), Status(int(s))): int(r.counts[d, lay, s]) for d, lay, s in zip(*np.nonzero(r.counts))}


def scapy_sum(pkt, layer, offset: int) -> int:
    """The checksum scapy writes for `layer` of `pkt` (rebuilt with the field left to scapy),
    read back at the field's frame offset."""
    clone = pkt.copy()
    lay = clone[layer]
    setattr(lay, "cksum" if any(f.name == "cksum" for f in lay.fields_desc) else "chksum", None)
    return int.from_bytes(raw(clone)[offset : offset + 2], "big")


# ---- good packets ----

GOOD = {
    "tcp4": Ether(**MAC) / IP(src=V4S, dst=V4D) / TCP(sport=40000, dport=443) / Raw(b"a" * 101),
    "udp4": Ether(**MAC) / IP(src=V4S, dst=V4D) / UDP(sport=5353, dport=53) / Raw(b"q" * 33),
    "icmp4": Ether(**MAC) / IP(src=V4S, dst=V4D) / ICMP() / Raw(b"ping" * 9),
    "tcp6": Ether(**MAC) / IPv6(src=V6S, dst=V6D) / TCP(sport=1, dport=2) / Raw(b"b" * 7),
    "udp6": Ether(**MAC) / IPv6(src=V6S, dst=V6D) / UDP(sport=3, dport=4) / Raw(b"c" * 8),
    "icmp6": Ether(**MAC) / IPv6(src=V6S, dst=V6D) / ICMPv6EchoRequest(data=b"d" * 13),
}
L4_LAYER = {"tcp": Layer.TCP, "udp": Layer.UDP, "icmp4": Layer.ICMP, "icmp6": Layer.ICMPV6}


def l4_of(name: str) -> Layer:
    return L4_LAYER.get(name, L4_LAYER.get(name[:3], Layer.TCP))


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_packets_count_ok_and_write_no_rows(name: str) -> None:
    r = scan(GOOD[name])
    assert len(r.issues) == 0 and len(r.deferred) == 0
    want = {(0, l4_of(name), Status.OK): 1}
    if name.endswith("4"):
        want[(0, Layer.IPV4, Status.OK)] = 1
    assert counted(r) == want
    assert r.stats[0] == 1 and r.stats[1] == len(raw(GOOD[name]))


# (packet, layer class, field name, checksum field offset in the frame)
BAD = {
    "tcp4": (Ether(**MAC) / IP(src=V4S, dst=V4D) / TCP(sport=40000, dport=443, chksum=0x1234) / Raw(b"a" * 101), TCP, 14 + 20 + 16),
    "udp4": (Ether(**MAC) / IP(src=V4S, dst=V4D) / UDP(sport=5353, dport=53, chksum=0xBEEF) / Raw(b"q" * 33), UDP, 14 + 20 + 6),
    "icmp4": (Ether(**MAC) / IP(src=V4S, dst=V4D) / ICMP(chksum=0x0101) / Raw(b"ping" * 9), ICMP, 14 + 20 + 2),
    "tcp6": (Ether(**MAC) / IPv6(src=V6S, dst=V6D) / TCP(sport=1, dport=2, chksum=0xFFFF) / Raw(b"b" * 7), TCP, 14 + 40 + 16),
    "udp6": (Ether(**MAC) / IPv6(src=V6S, dst=V6D) / UDP(sport=3, dport=4, chksum=0x0001) / Raw(b"c" * 8), UDP, 14 + 40 + 6),
    "icmp6": (Ether(**MAC) / IPv6(src=V6S, dst=V6D) / ICMPv6EchoRequest(cksum=0x7777, data=b"d" * 13), ICMPv6EchoRequest, 14 + 40 + 2),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_l4_checksum_row_matches_scapy(name: str) -> None:
    pkt, layer, offset = BAD[name]
    r = scan(pkt)
    row = one_row(r)
    stored = pkt[layer].chksum if hasattr(pkt[layer], "chksum") else pkt[layer].cksum
    assert row["status"] == Status.BAD
    assert row["layer"] == l4_of(name)
    assert row["offset"] == offset
    assert raw(pkt)[offset : offset + 2] == stored.to_bytes(2, "big")
    assert row["stored"] == stored
    assert row["computed"] == scapy_sum(pkt, layer, row["offset"])
    assert row["flags"] == 0 and row["depth"] == 0 and row["frame"] == 1
    v6 = name.endswith("6")
    assert row["ipver"] == (6 if v6 else 4)
    assert (row["src"], row["dst"]) == ((V6S, V6D) if v6 else (V4S, V4D))
    if layer in (TCP, UDP):
        assert (row["sport"], row["dport"]) == (pkt[layer].sport, pkt[layer].dport)
    else:
        assert (row["sport"], row["dport"]) == (0, 0)


def test_bad_ipv4_header_checksum() -> None:
    pkt = Ether(**MAC) / IP(src=V4S, dst=V4D, chksum=0xABCD) / TCP(sport=7, dport=8)
    row = one_row(scan(pkt))
    assert row["layer"] == Layer.IPV4 and row["status"] == Status.BAD
    assert row["offset"] == 24 and row["stored"] == 0xABCD
    assert row["computed"] == scapy_sum(pkt, IP, row["offset"])
    assert (row["proto"], row["sport"], row["dport"]) == (6, 7, 8)


def test_ipv4_header_with_options_is_judged() -> None:
    pkt = Ether(**MAC) / IP(src=V4S, dst=V4D, options=[IPOption_NOP(), IPOption_RR()], chksum=1) / UDP(chksum=2)
    r = scan(pkt)
    ip_row, udp_row = rows(r)
    assert (ip_row["layer"], ip_row["computed"]) == (Layer.IPV4, scapy_sum(pkt, IP, ip_row["offset"]))
    assert udp_row["layer"] == Layer.UDP and udp_row["offset"] == 14 + (raw(pkt)[14] & 15) * 4 + 6 == 14 + 24 + 6
    assert udp_row["computed"] == scapy_sum(pkt, UDP, udp_row["offset"])


def test_frame_numbers_and_row_order() -> None:
    bad = BAD["tcp4"][0]
    recs = [Rec(raw(GOOD["udp4"])), Rec(raw(bad)), Rec(raw(bad))]
    r = FastScanner().scan(batch_of(recs, first_frame=100))
    assert [x["frame"] for x in rows(r)] == [101, 102]


# ---- link layers ----


def sll(proto: int) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", proto)


def sll2(proto: int) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 3, 1, 0, 6, b"\x02" * 6 + b"\0\0")


IP4_BAD = IP(src=V4S, dst=V4D) / TCP(sport=1, dport=2, chksum=0x4242) / Raw(b"z" * 20)
IP6_BAD = IPv6(src=V6S, dst=V6D) / TCP(sport=1, dport=2, chksum=0x4242) / Raw(b"z" * 20)

LINKS = {
    "vlan": (1, raw(Ether(**MAC) / Dot1Q(vlan=10) / IP4_BAD), 18),
    "qinq": (1, raw(Ether(**MAC) / Dot1AD(vlan=10) / Dot1Q(vlan=20) / IP4_BAD), 22),
    "four-tags": (1, raw(Ether(**MAC, type=0x9100) / Dot1Q(vlan=1, type=0x88A8) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / Dot1Q(vlan=4) / IP4_BAD), 30),
    "vlan6": (1, raw(Ether(**MAC) / Dot1Q(vlan=10) / IP6_BAD), 18),
    "tpid-9200": (1, raw(Ether(**MAC, type=0x9200) / Dot1Q(vlan=10) / IP4_BAD), 18),
    "sll": (113, sll(0x0800) + raw(IP4_BAD), 16),
    # libpcap re-inserts a stripped VLAN tag at the SLL protocol field
    "sll-vlan": (113, sll(0x8100) + struct.pack("!HH", 5, 0x86DD) + raw(IP6_BAD), 20),
    "sll2": (276, sll2(0x86DD) + raw(IP6_BAD), 20),
    "raw101-4": (101, raw(IP4_BAD), 0),
    "raw101-6": (101, raw(IP6_BAD), 0),
    "raw12": (12, raw(IP4_BAD), 0),
    "raw14": (14, raw(IP6_BAD), 0),
    "ipv4": (228, raw(IP4_BAD), 0),
    "ipv6": (229, raw(IP6_BAD), 0),
    "null-le": (0, struct.pack("<I", 2) + raw(IP4_BAD), 4),
    "null-be": (0, struct.pack(">I", 2) + raw(IP4_BAD), 4),
    "null-24": (0, struct.pack("<I", 24) + raw(IP6_BAD), 4),
    "null-28": (0, struct.pack("<I", 28) + raw(IP6_BAD), 4),
    "loop-30": (108, struct.pack(">I", 30) + raw(IP6_BAD), 4),
    "loop-2": (108, struct.pack(">I", 2) + raw(IP4_BAD), 4),
}


@pytest.mark.parametrize("name", sorted(LINKS))
def test_link_layers_reach_the_tcp_checksum(name: str) -> None:
    linktype, data, l3 = LINKS[name]
    ip_hdr = 40 if data[l3] >> 4 == 6 else 20
    row = one_row(scan(Rec(data, linktype)))
    assert (row["layer"], row["status"], row["stored"]) == (Layer.TCP, Status.BAD, 0x4242)
    assert row["offset"] == l3 + ip_hdr + 16
    assert row["computed"] == scapy_sum(IP6_BAD if ip_hdr == 40 else IP4_BAD, TCP, ip_hdr + 16)


@pytest.mark.parametrize(
    "linktype, data",
    [
        (1, raw(Ether(**MAC) / ARP())),
        (1, raw(Ether(**MAC, type=0x88CC) / Raw(b"\0" * 40))),  # LLDP
        (113, sll(0x0806) + raw(ARP())),
        (0, struct.pack("<I", 7) + raw(IP4_BAD)),  # not an IP family
    ],
)
def test_non_ip_frames_count_nothing_and_are_not_deferred(linktype: int, data: bytes) -> None:
    r = scan(Rec(data, linktype))
    assert r.counts.sum() == 0 and len(r.deferred) == 0 and r.stats[0] == 1


@pytest.mark.parametrize(
    "linktype, data",
    [
        (147, raw(IP4_BAD)),  # a link type the scanner does not know
        (1, raw(Ether(**MAC) / Dot1Q() / Dot1Q() / Dot1Q() / Dot1Q() / Dot1Q() / IP4_BAD)),  # 5 tags
        (1, raw(Ether(**MAC, type=0x8847) / Raw(b"\0\0\x01\x40") / IP4_BAD)),  # MPLS
        (1, raw(Ether(**MAC))[:10]),  # cut inside the Ethernet header
        (101, b"\x50" + raw(IP4_BAD)[1:]),  # raw IP, version 5
        (228, raw(IP6_BAD)),  # version mismatch
        (229, raw(IP4_BAD)),
    ],
)
def test_frames_the_decoder_must_see_are_deferred(linktype: int, data: bytes) -> None:
    r = scan(Rec(data, linktype))
    assert list(r.deferred) == [0] and r.counts.sum() == 0 and len(r.issues) == 0


# ---- VXLAN ----


def vxlan(port: int, inner, *, outer6: bool = False, udp_chksum: int | None = None, flags: str | int = "Instance"):
    outer_ip = IPv6(src=V6S, dst=V6D) if outer6 else IP(src=V4S, dst=V4D)
    return Ether(**MAC) / outer_ip / UDP(sport=50000, dport=port, chksum=udp_chksum) / VXLAN(vni=42, flags=flags) / inner


INNER_BAD = Ether(**MAC) / IP(src="10.1.1.1", dst="10.2.2.2") / TCP(sport=1111, dport=2222, chksum=0x5555) / Raw(b"i" * 50)


@pytest.mark.parametrize("port", [4789, 8472])
def test_vxlan_inner_tcp_is_judged_at_depth_1(port: int) -> None:
    pkt = vxlan(port, INNER_BAD)
    r = scan(pkt)
    row = one_row(r)
    assert (row["layer"], row["depth"], row["status"]) == (Layer.TCP, 1, Status.BAD)
    assert row["offset"] == 14 + 20 + 8 + 8 + 14 + 20 + 16
    assert row["computed"] == scapy_sum(pkt, TCP, row["offset"])
    assert (row["src"], row["dst"], row["sport"], row["dport"]) == ("10.1.1.1", "10.2.2.2", 1111, 2222)
    assert counted(r) == {
        (0, Layer.IPV4, Status.OK): 1,
        (0, Layer.UDP, Status.OK): 1,
        (1, Layer.IPV4, Status.OK): 1,
        (1, Layer.TCP, Status.BAD): 1,
    }


def test_vxlan_good_inner_and_bad_outer() -> None:
    inner = Ether(**MAC) / IPv6(src=V6S, dst=V6D) / UDP(sport=9, dport=10) / Raw(b"x" * 9)
    pkt = vxlan(4789, inner, udp_chksum=0x0BAD)
    row = one_row(scan(pkt))
    assert (row["layer"], row["depth"], row["status"]) == (Layer.UDP, 0, Status.BAD)
    assert row["computed"] == scapy_sum(pkt, UDP, row["offset"])
    assert (row["sport"], row["dport"]) == (50000, 4789)


def test_vxlan_nested_and_depth_bound() -> None:
    def nest(levels: int):
        pkt = INNER_BAD
        for _ in range(levels):
            pkt = vxlan(4789, pkt)
        return pkt

    r = scan(nest(7))
    assert one_row(r)["depth"] == 7
    assert scan(nest(8)).deferred.tolist() == [0]


def test_vxlan_extra_port_and_unknown_ports() -> None:
    pkt = vxlan(9999, INNER_BAD)
    assert len(scan(pkt).issues) == 0  # plain UDP to 9999: the payload is not looked at
    row = one_row(scan(pkt, ports=port_table(extra_vxlan=(9999,))))
    assert (row["layer"], row["depth"]) == (Layer.TCP, 1)


@pytest.mark.parametrize("port", [6081, 4754, 6635])
def test_other_udp_tunnels_are_deferred(port: int) -> None:
    pkt = Ether(**MAC) / IP(src=V4S, dst=V4D) / UDP(sport=1, dport=port) / Raw(b"\0" * 30)
    assert scan(pkt).deferred.tolist() == [0]


@pytest.mark.parametrize(
    "pkt",
    [
        vxlan(4789, INNER_BAD, flags=0),  # I flag clear
        vxlan(4789, Ether(**MAC) / IP(flags="MF") / Raw(b"f" * 30)),  # inner fragment
        Ether(**MAC) / IP() / UDP(dport=4789) / Raw(b"\x08\0\0\0"),  # no room for a VXLAN header
    ],
)
def test_vxlan_the_decoder_must_see_is_deferred_whole(pkt) -> None:
    r = scan(pkt)
    assert r.deferred.tolist() == [0] and r.counts.sum() == 0


def test_vxlan_inner_non_ip_counts_outer_only() -> None:
    r = scan(vxlan(4789, Ether(**MAC) / ARP()))
    assert counted(r) == {(0, Layer.IPV4, Status.OK): 1, (0, Layer.UDP, Status.OK): 1}


# ---- partial (CHECKSUM_PARTIAL), HDR_OFFLOAD, GSO ----


def test_partial_tcp_over_ipv4() -> None:
    payload = b"p" * 100
    l4len = 20 + len(payload)
    ph = pseudo_v4(V4S, V4D, 6, l4len)
    pkt = Ether(**MAC) / IP(src=V4S, dst=V4D) / TCP(sport=5, dport=6, chksum=ph) / Raw(payload)
    row = one_row(scan(pkt))
    assert (row["layer"], row["status"], row["flags"]) == (Layer.TCP, Status.PARTIAL, 0)
    assert (row["stored"], row["extra"]) == (ph, l4len)
    assert row["computed"] == scapy_sum(pkt, TCP, row["offset"])


@pytest.mark.parametrize(
    "l4, nh",
    [
        (UDP(sport=1, dport=2) / Raw(b"u" * 11), 17),
        (TCP(sport=1, dport=2) / Raw(b"t" * 3), 6),
        (ICMPv6EchoRequest(data=b"e" * 4), 58),
    ],
)
def test_partial_over_ipv6(l4, nh: int) -> None:
    l4len = len(raw(l4))
    ph = pseudo_v6(V6S, V6D, nh, l4len)
    built = IPv6(src=V6S, dst=V6D) / l4
    data = bytearray(raw(Ether(**MAC) / built))
    field = 14 + 40 + {17: 6, 6: 16, 58: 2}[nh]
    data[field : field + 2] = ph.to_bytes(2, "big")
    row = one_row(scan(bytes(data)))
    assert (row["status"], row["stored"], row["extra"], row["offset"]) == (Status.PARTIAL, ph, l4len, field)


def test_icmpv4_never_partial() -> None:
    icmp = ICMP() / Raw(b"x" * 12)
    ph = pseudo_v4(V4S, V4D, 1, len(raw(icmp)))
    pkt = Ether(**MAC) / IP(src=V4S, dst=V4D) / ICMP(chksum=ph) / Raw(b"x" * 12)
    assert one_row(scan(pkt))["status"] == Status.BAD


def test_ipv4_header_offload_follows_the_l4_verdict() -> None:
    payload = b"h" * 40
    ph = pseudo_v4(V4S, V4D, 6, 20 + len(payload))
    partial = Ether(**MAC) / IP(src=V4S, dst=V4D, chksum=0) / TCP(chksum=ph) / Raw(payload)
    ip_row, tcp_row = rows(scan(partial))
    assert (ip_row["layer"], ip_row["status"], ip_row["flags"]) == (Layer.IPV4, Status.PARTIAL, VerdictFlag.HDR_OFFLOAD)
    assert ip_row["computed"] == scapy_sum(partial, IP, ip_row["offset"])
    assert tcp_row["status"] == Status.PARTIAL

    bad = Ether(**MAC) / IP(src=V4S, dst=V4D, chksum=0) / TCP(chksum=ph ^ 1) / Raw(payload)
    ip_row, tcp_row = rows(scan(bad))
    assert (ip_row["status"], ip_row["flags"], tcp_row["status"]) == (Status.BAD, 0, Status.BAD)


def test_gso_flag_on_partial_super_frames() -> None:
    payload = b"g" * 3000
    ph = pseudo_v4(V4S, V4D, 6, 20 + len(payload))
    pkt = Ether(**MAC) / IP(src=V4S, dst=V4D) / TCP(chksum=ph) / Raw(payload)
    row = one_row(scan(pkt))
    assert (row["status"], row["flags"]) == (Status.PARTIAL, VerdictFlag.GSO)

    # exactly 1500 bytes of IPv6 packet: not a super-frame; 1501: one
    for total, gso in ((1500, False), (1501, True)):
        plen = total - 40
        ph6 = pseudo_v6(V6S, V6D, 17, plen)
        pkt6 = Ether(**MAC) / IPv6(src=V6S, dst=V6D) / UDP(chksum=ph6) / Raw(b"x" * (plen - 8))
        row = one_row(scan(pkt6))
        assert row["status"] == Status.PARTIAL
        assert bool(row["flags"] & VerdictFlag.GSO) is gso


# ---- UDP checksum zero ----


def test_udp_zero_over_ipv4_is_allowed() -> None:
    pkt = Ether(**MAC) / IP(src=V4S, dst=V4D) / UDP(sport=1, dport=2, chksum=0) / Raw(b"z" * 5)
    row = one_row(scan(pkt))
    assert (row["status"], row["flags"], row["stored"]) == (Status.ZERO_ALLOWED, 0, 0)
    assert row["computed"] == scapy_sum(pkt, UDP, row["offset"])


def test_udp_zero_over_ipv6() -> None:
    pkt = Ether(**MAC) / IPv6(src=V6S, dst=V6D) / UDP(sport=1, dport=2, chksum=0) / Raw(b"z" * 5)
    row = one_row(scan(pkt))
    assert (row["status"], row["computed"]) == (Status.ZERO_INVALID, scapy_sum(pkt, UDP, row["offset"]))

    inner = Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP() / Raw(b"k")
    r = scan(vxlan(4789, inner, outer6=True, udp_chksum=0))
    row = one_row(r)
    assert (row["status"], row["flags"], row["dport"]) == (Status.ZERO_ALLOWED, VerdictFlag.TUNNEL_ZERO, 4789)
    assert counted(r)[(1, Layer.TCP, Status.OK)] == 1


def test_udp_computed_zero_is_written_ffff() -> None:
    # choose payload so that the full UDP sum is 0xffff (computed 0 -> 0xffff)
    base = IPv6(src=V6S, dst=V6D) / UDP(sport=1, dport=2) / Raw(b"\0\0")
    want = scapy_sum(Ether(**MAC) / base, UDP, 14 + 40 + 6)
    # add `want` into the payload word: the new sum is then 0 before complement, i.e. computed 0
    pkt = Ether(**MAC) / IPv6(src=V6S, dst=V6D) / UDP(sport=1, dport=2, chksum=0x1111) / Raw(want.to_bytes(2, "big"))
    row = one_row(scan(pkt))
    assert row["computed"] == 0xFFFF == scapy_sum(pkt, UDP, row["offset"])
    ok = Ether(**MAC) / IPv6(src=V6S, dst=V6D) / UDP(sport=1, dport=2, chksum=0xFFFF) / Raw(want.to_bytes(2, "big"))
    assert len(scan(ok).issues) == 0


# ---- truncation, padding, malformed lengths ----


def test_truncated_tcp_is_unverifiable() -> None:
    pkt = GOOD["tcp4"]
    data = raw(pkt)
    r = scan(Rec(data[:70], origlen=len(data)))
    row = one_row(r)
    assert (row["layer"], row["status"], row["flags"]) == (Layer.TCP, Status.UNVERIFIABLE, VerdictFlag.TRUNCATED)
    assert (row["stored"], row["computed"], row["extra"], row["offset"]) == (int.from_bytes(data[50:52], "big"), 0, 0, 50)
    assert counted(r)[(0, Layer.IPV4, Status.OK)] == 1


def test_truncated_before_the_checksum_field() -> None:
    data = raw(GOOD["udp6"])
    row = one_row(scan(Rec(data[: 14 + 40 + 5], origlen=len(data))))
    assert (row["status"], row["stored"], row["offset"]) == (Status.UNVERIFIABLE, 0, 14 + 40 + 6)
    # ports count as known only with the header captured through the checksum field
    assert (row["sport"], row["dport"]) == (0, 0)
    row = one_row(scan(Rec(data[: 14 + 40 + 8], origlen=len(data))))
    assert (row["stored"], row["sport"], row["dport"]) == (int.from_bytes(data[60:62], "big"), 3, 4)


def test_ethernet_padding_is_not_covered() -> None:
    data = raw(Ether(**MAC) / IP(src=V4S, dst=V4D) / UDP(sport=1, dport=2)) + b"\xff" * 18
    r = scan(data)
    assert len(r.issues) == 0 and counted(r)[(0, Layer.UDP, Status.OK)] == 1


@pytest.mark.parametrize(
    "rec",
    [
        Rec(raw(GOOD["tcp4"])[:30], origlen=200),  # cut inside the IPv4 header
        Rec(raw(GOOD["tcp6"])[:50], origlen=200),  # cut inside the IPv6 header
        Rec(raw(Ether(**MAC) / IP(len=400) / TCP())),  # total length beyond the wire length
        Rec(raw(Ether(**MAC) / IPv6(plen=400) / TCP())),
        Rec(raw(Ether(**MAC) / IP(len=10) / TCP())),  # total length < header
        Rec(raw(Ether(**MAC) / IP(ihl=4) / TCP())),
        Rec(raw(Ether(**MAC) / IP() / UDP(len=99) / Raw(b"x" * 20))),  # UDP length != IP's
        Rec(raw(Ether(**MAC) / IP() / TCP(dataofs=2))),
        Rec(raw(GOOD["tcp4"]), caplen=10_000, origlen=10_000),  # record beyond the buffer
        Rec(raw(GOOD["tcp4"]), origlen=20),  # caplen > origlen
    ],
)
def test_malformed_records_are_deferred(rec: Rec) -> None:
    r = scan(rec)
    assert r.deferred.tolist() == [0] and r.counts.sum() == 0


# ---- what the decoder judges: deferred whole ----


def test_windows_lso_and_fragments_are_deferred() -> None:
    payload = b"w" * 64
    lso = bytearray(raw(Ether(**MAC) / IP(src=V4S, dst=V4D) / TCP(chksum=pseudo_v4(V4S, V4D, 6, 0)) / Raw(payload)))
    lso[16:18] = b"\0\0"  # IPv4 total length 0
    frags = [
        Ether(**MAC) / IP(src=V4S, dst=V4D, flags="MF") / UDP() / Raw(b"a" * 40),
        Ether(**MAC) / IP(src=V4S, dst=V4D, frag=3, proto=17) / Raw(b"a" * 40),
        Ether(**MAC) / IPv6(src=V6S, dst=V6D) / IPv6ExtHdrFragment(m=1) / UDP() / Raw(b"a" * 40),
    ]
    r = scan(bytes(lso), *frags)
    assert r.deferred.tolist() == [0, 1, 2, 3] and r.counts.sum() == 0


@pytest.mark.parametrize(
    "pkt",
    [
        Ether(**MAC) / IP(options=b"\x83\x07\x04\x0a\x00\x00\x01\x00") / TCP(),  # LSRR
        Ether(**MAC) / IP(options=b"\x89\x07\x04\x0a\x00\x00\x01\x00") / TCP(),  # SSRR
        Ether(**MAC) / IP(options=b"\x07\x09\x04\x00") / TCP(),  # option longer than the header
        Ether(**MAC) / IP(proto=47) / Raw(b"\0" * 8),  # GRE
        Ether(**MAC) / IP(proto=132) / Raw(b"\0" * 16),  # SCTP
        Ether(**MAC) / IP(proto=58) / ICMPv6EchoRequest(),  # ICMPv6 over IPv4
        Ether(**MAC) / IPv6(nh=1) / ICMP(),  # ICMP over IPv6
        Ether(**MAC) / IPv6(nh=0) / Raw(b"\x06\0\0\0\0\0\0\0") / TCP(),  # hop-by-hop header
        Ether(**MAC) / IPv6(plen=0) / TCP(),  # jumbogram / BIG TCP
    ],
)
def test_what_the_decoder_judges_is_deferred(pkt) -> None:
    r = scan(pkt)
    assert r.deferred.tolist() == [0] and r.counts.sum() == 0 and len(r.issues) == 0


def test_icmp_error_quoting_a_bad_tcp_header_judges_only_the_icmp() -> None:
    quoted = IPerror(src=V4D, dst=V4S) / TCPerror(sport=80, dport=40000, chksum=0xDEAD)
    pkt = Ether(**MAC) / IP(src=V4S, dst=V4D) / ICMP(type=3, code=4) / quoted
    r = scan(pkt)
    assert len(r.issues) == 0
    assert counted(r) == {(0, Layer.IPV4, Status.OK): 1, (0, Layer.ICMP, Status.OK): 1}

    bad = Ether(**MAC) / IP(src=V4S, dst=V4D) / ICMP(type=3, code=4, chksum=0x0F0F) / quoted
    row = one_row(scan(bad))
    assert (row["layer"], row["computed"]) == (Layer.ICMP, scapy_sum(bad, ICMP, row["offset"]))

    quoted6 = IPerror6(src=V6D, dst=V6S) / TCPerror(chksum=0xDEAD)
    pkt6 = Ether(**MAC) / IPv6(src=V6S, dst=V6D) / ICMPv6DestUnreach() / quoted6
    assert counted(scan(pkt6)) == {(0, Layer.ICMPV6, Status.OK): 1}


# ---- the kernel's tp_status ----


def test_csumnotready_makes_the_innermost_bad_l4_partial() -> None:
    pkt, _, _ = BAD["tcp4"]
    row = one_row(scan(Rec(raw(pkt), tp_status=TP_STATUS_CSUMNOTREADY)))
    assert (row["status"], row["flags"]) == (Status.PARTIAL, VerdictFlag.KERNEL)
    assert row["extra"] == 0  # no pseudo-header length was matched

    outer_bad = vxlan(4789, INNER_BAD, udp_chksum=0x0BAD)
    udp_row, tcp_row = rows(scan(Rec(raw(outer_bad), tp_status=TP_STATUS_CSUMNOTREADY)))
    assert (udp_row["layer"], udp_row["status"], udp_row["flags"]) == (Layer.UDP, Status.BAD, 0)
    assert (tcp_row["depth"], tcp_row["status"], tcp_row["flags"]) == (1, Status.PARTIAL, VerdictFlag.KERNEL)


def test_csumnotready_takes_the_innermost_pending_sum() -> None:
    inner_ok = Ether(**MAC) / IP(src="10.1.1.1", dst="10.2.2.2") / TCP() / Raw(b"i" * 50)
    row = one_row(scan(Rec(raw(vxlan(4789, inner_ok, udp_chksum=0x0BAD)), tp_status=TP_STATUS_CSUMNOTREADY)))
    assert (row["layer"], row["depth"], row["status"], row["flags"]) == (Layer.UDP, 0, Status.PARTIAL, VerdictFlag.KERNEL)


def test_csumnotready_flags_an_already_partial_sum() -> None:
    ph = pseudo_v4(V4S, V4D, 17, 8 + 3000)
    pkt = Ether(**MAC) / IP(src=V4S, dst=V4D) / UDP(chksum=ph) / Raw(b"x" * 3000)
    row = one_row(scan(Rec(raw(pkt), tp_status=TP_STATUS_CSUMNOTREADY)))
    assert (row["status"], row["flags"]) == (Status.PARTIAL, VerdictFlag.KERNEL | VerdictFlag.GSO)


def test_csum_valid_overrides_tcp_udp_only() -> None:
    ph = pseudo_v4(V4S, V4D, 6, 20)
    recs = [
        Rec(raw(BAD["tcp4"][0]), tp_status=TP_STATUS_CSUM_VALID),
        Rec(raw(Ether(**MAC) / IP(src=V4S, dst=V4D) / TCP(chksum=ph)), tp_status=TP_STATUS_CSUM_VALID),
        Rec(raw(BAD["icmp4"][0]), tp_status=TP_STATUS_CSUM_VALID),
        Rec(raw(Ether(**MAC) / IP(chksum=1) / UDP()), tp_status=TP_STATUS_CSUM_VALID),
        Rec(raw(BAD["tcp4"][0]), tp_status=0),
        Rec(raw(BAD["tcp4"][0]), tp_status=TP_STATUS_UNKNOWN),
    ]
    r = scan(*recs)
    assert r.stats[3] == 2
    assert [(x["frame"], x["layer"], x["status"]) for x in rows(r)] == [
        (3, Layer.ICMP, Status.BAD),
        (4, Layer.IPV4, Status.BAD),
        (5, Layer.TCP, Status.BAD),
        (6, Layer.TCP, Status.BAD),
    ]
    assert r.counts[0, Layer.TCP, Status.OK] == 2


# ---- the call itself ----


def _raw_call(batch: Batch, issues: np.ndarray, start: int = 0, ports: np.ndarray | None = None):
    counts = np.zeros((MAX_DEPTH, N_LAYERS, N_STATUS), np.int64)
    stats = np.zeros(8, np.int64)
    deferred = np.zeros(len(batch), np.uint32)
    res = _fastscan.scan(
        batch.buf, batch.offset, batch.caplen, batch.origlen, batch.linktype, batch.tp_status,
        batch.first_frame, start, port_table() if ports is None else ports, counts, issues, deferred, stats,
    )  # fmt: skip
    return res, counts, stats


def test_stops_before_a_packet_whose_rows_do_not_fit() -> None:
    two_rows = raw(Ether(**MAC) / IP(chksum=1) / TCP(chksum=2))
    batch = batch_of([Rec(raw(GOOD["tcp4"])), Rec(two_rows), Rec(two_rows)])
    issues = np.zeros(3, ISSUE_DTYPE)
    (next_index, n_issues, n_deferred), counts, stats = _raw_call(batch, issues)
    assert (next_index, n_issues, n_deferred) == (2, 2, 0)
    assert stats[0] == 2 and counts.sum() == 4
    assert issues[2]["frame"] == 0  # the third packet wrote nothing
    (next_index, n_issues, _), counts, _ = _raw_call(batch, np.zeros(2, ISSUE_DTYPE), start=2)
    assert (next_index, n_issues) == (3, 2) and counts.sum() == 2


def test_issue_array_grows() -> None:
    bad = BAD["udp6"][0]
    n = 500
    r = scan(*([bad] * n))
    assert len(r.issues) == n and r.issues["frame"].tolist() == list(range(1, n + 1))


def test_empty_batch() -> None:
    r = scan()
    assert r.counts.sum() == 0 and len(r.issues) == 0 and len(r.deferred) == 0


@pytest.mark.parametrize(
    "change, exc",
    [
        ({"offset": np.zeros(1, np.int32)}, TypeError),
        ({"caplen": np.zeros(2, np.uint32)}, ValueError),
        ({"linktype": np.zeros(1, np.int16)}, TypeError),
        ({"ports": np.zeros(100, np.uint8)}, ValueError),
        ({"counts": np.zeros(10, np.int64)}, ValueError),
        ({"issues": np.zeros(10, np.uint8)}, ValueError),
        ({"deferred": np.zeros(0, np.uint32)}, ValueError),
        ({"stats": np.zeros(8, np.uint64)}, TypeError),
        ({"buf": 12}, TypeError),
        ({"start": 5}, ValueError),
        ({"first_frame": -1}, TypeError),
        ({"offset": np.zeros((2, 2), np.int64)[:, 0]}, TypeError),  # not contiguous
    ],
)
def test_arguments_are_checked(change: dict[str, object], exc: type[Exception]) -> None:
    args: dict[str, object] = {
        "buf": b"\0" * 64,
        "offset": np.zeros(1, np.int64),
        "caplen": np.zeros(1, np.uint32),
        "origlen": np.zeros(1, np.uint32),
        "linktype": np.ones(1, np.uint16),
        "tp_status": np.zeros(1, np.uint32),
        "first_frame": 1,
        "start": 0,
        "ports": port_table(),
        "counts": np.zeros((MAX_DEPTH, N_LAYERS, N_STATUS), np.int64),
        "issues": np.zeros(4, ISSUE_DTYPE),
        "deferred": np.zeros(1, np.uint32),
        "stats": np.zeros(8, np.int64),
    }
    args.update(change)
    with pytest.raises(exc):
        _fastscan.scan(*args.values())


def test_read_only_outputs_are_refused() -> None:
    issues = np.zeros(4, ISSUE_DTYPE)
    issues.flags.writeable = False
    batch = batch_of([Rec(raw(GOOD["tcp4"]))])
    with pytest.raises(TypeError, match="issues"):
        _raw_call(batch, issues)


def test_threads_scan_in_parallel_with_the_same_result() -> None:
    recs = [Rec(raw(p)) for p in (*GOOD.values(), *(b[0] for b in BAD.values()))] * 200
    batch = batch_of(recs)
    want = FastScanner().scan(batch)
    results: list[FastResult] = []

    def work() -> None:
        results.append(FastScanner().scan(batch))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        assert (got.counts == want.counts).all() and (got.issues == want.issues).all()


def test_port_table() -> None:
    t = port_table(extra_vxlan=(1234,))
    assert t.dtype == np.uint8 and t.shape == (65536,)
    assert (t[4789], t[8472], t[1234], t[6081], t[4754], t[6635], t[53]) == (
        UDPTunnel.VXLAN, UDPTunnel.VXLAN, UDPTunnel.VXLAN, UDPTunnel.GENEVE, UDPTunnel.GRE_IN_UDP, UDPTunnel.MPLS_IN_UDP, 0,
    )  # fmt: skip
    with pytest.raises(ValueError):
        port_table(extra_vxlan=(70000,))


# ---- hostile input ----

SEEDS = [raw(p) for p in GOOD.values()] + [raw(vxlan(4789, INNER_BAD)), raw(vxlan(8472, GOOD["tcp6"], outer6=True))]
LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=300),
    linktype=st.sampled_from(LINKTYPES),
    tp_status=st.sampled_from([0, 0x8, 0x80, 0x88, TP_STATUS_UNKNOWN]),
)
def test_random_bytes_never_crash(data: bytes, linktype: int, tp_status: int) -> None:
    scan(Rec(data, linktype, tp_status=tp_status))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.integers(0, 2000),
    tail=st.binary(max_size=40),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
    origlen_extra=st.integers(0, 3000),
)
def test_cut_and_mutated_frames_never_crash(seed: bytes, cut: int, tail: bytes, flips, origlen_extra: int) -> None:
    data = bytearray(seed[:cut] + tail)
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    r = scan(Rec(bytes(data), origlen=len(data) + origlen_extra))
    for row in r.issues:
        if row["status"] != Status.UNVERIFIABLE:  # a judged field was captured
            assert row["offset"] + 2 <= len(data)


@settings(max_examples=100, deadline=None)
@given(seed=st.sampled_from(SEEDS))
def test_every_truncation_of_good_frames_returns(seed: bytes) -> None:
    recs = [Rec(seed[:k], origlen=len(seed)) for k in range(len(seed))]
    r = scan(*recs)
    # a cut frame is never called bad: only unverifiable, ok, or deferred
    assert set(r.issues["status"].tolist()) <= {Status.UNVERIFIABLE}
