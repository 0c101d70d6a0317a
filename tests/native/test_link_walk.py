"""The one link walk (native/fs_common.h) in both its modes: the checksum scan judges exactly what
the decoder judges or defers the frame, and the facts extractor gives the decoder's own answer,
over VLAN stacks of every depth, cut headers, and the ethertypes where the two modes part."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from scapy.all import IP, TCP, IPv6, raw

from badsum.analyze import ScanConfig, Scanner
from badsum.checksum.detailed import DetailedJudge
from badsum.flows.extract import FactExtractor
from badsum.flows.facts import FACTS_DTYPE
from badsum.scan.batch import Batch
from badsum.scan.rows import verdicts_to_rows
from badsum.wire import protofacts as pf

KEY = ["frame", "layer", "depth", "status", "offset", "stored", "computed", "flags", "extra", "ipver", "proto", "sport", "dport", "src", "dst"]
MAC = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"


def _ip_bad() -> bytes:
    data = bytearray(raw(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1000, dport=80, flags="PA") / b"data"))
    data[-5] ^= 0x40  # the payload changed after the sum was computed
    return bytes(data)


IP_BAD = _ip_bad()
IP6_BAD = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=1000, dport=80, chksum=0x1234))


def tags(k: int, tpid: int = 0x8100) -> bytes:
    """k VLAN tags, each naming the next; the last names IPv4."""
    out = b""
    for i in range(k):
        out += struct.pack("!HH", i + 1, tpid if i + 1 < k else pf.ETH_P_IP)
    return out


def eth(ethertype: int, rest: bytes) -> bytes:
    return MAC + struct.pack("!H", ethertype) + rest


def sll(proto: int) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6, proto)


FRAMES: dict[str, tuple[int, bytes]] = {
    **{f"eth-{k}-tags": (pf.LINKTYPE_ETHERNET, eth(0x8100 if k else pf.ETH_P_IP, tags(k) + IP_BAD)) for k in range(10)},
    **{f"sll-{k}-tags": (pf.LINKTYPE_LINUX_SLL, sll(0x88A8 if k else pf.ETH_P_IP) + tags(k, 0x88A8) + IP_BAD) for k in (0, 1, 4, 5, 8, 9)},
    "tag-cut": (pf.LINKTYPE_ETHERNET, eth(0x8100, b"\x00\x01")),
    "eth-cut": (pf.LINKTYPE_ETHERNET, MAC + b"\x08"),
    "cisco-metadata": (pf.LINKTYPE_ETHERNET, eth(pf.ETH_P_CISCO_METADATA, b"\x01\x01\x00\x01\x00\x02\x08\x00" + IP_BAD)),
    "pppoe-session": (pf.LINKTYPE_ETHERNET, eth(pf.ETH_P_PPP_SES, b"\x11\x00\x00\x01\x00\x16\x00\x21" + IP_BAD)),
    "nsh": (pf.LINKTYPE_ETHERNET, eth(pf.ETH_P_NSH, bytes(8) + IP_BAD)),
    "802.3-length": (pf.LINKTYPE_ETHERNET, eth(len(IP_BAD) + 3, b"\xaa\xaa\x03" + IP_BAD)),
    "mpls": (pf.LINKTYPE_ETHERNET, eth(pf.ETH_P_MPLS_UC, b"\x00\x00\x01\x40" + IP_BAD)),
    "null-le": (pf.LINKTYPE_NULL, struct.pack("<I", 2) + IP_BAD),
    "loop-be": (pf.LINKTYPE_LOOP, struct.pack(">I", 2) + IP_BAD),
    **{f"null-af{af}": (pf.LINKTYPE_NULL, struct.pack("<I", af) + IP6_BAD) for af in (24, 28, 30, 7)},
    "null-cut": (pf.LINKTYPE_NULL, b"\x02\x00"),
    "raw-v4": (pf.LINKTYPE_RAW, IP_BAD),
    "raw-v5": (pf.LINKTYPE_RAW_12, b"\x50" + IP_BAD[1:]),
    "raw-empty": (pf.LINKTYPE_RAW_14, b""),
    "ipv4-linktype": (pf.LINKTYPE_IPV4, IP_BAD),
    "sll2": (pf.LINKTYPE_LINUX_SLL2, struct.pack("!HHIHBB8s", pf.ETH_P_IP, 0, 1, 1, 0, 6, b"\x02" * 8) + IP_BAD),
    "ppp": (pf.LINKTYPE_PPP, b"\xff\x03\x00\x21" + IP_BAD),
}


def _batch(linktype: int, data: bytes) -> Batch:
    n = np.uint32(len(data))
    return Batch(
        data, 1, np.zeros(1, np.int64), np.array([n], np.uint32), np.array([n], np.uint32), np.zeros(1, np.int64),
        np.array([linktype], np.uint16), np.zeros(1, np.uint32), np.full(1, 0xFFFFFFFF, np.uint32),
        np.zeros(1, np.uint8), np.zeros(1, np.int64),
    )  # fmt: skip


def _rows(a: np.ndarray) -> list[tuple]:
    return sorted(map(tuple, a[KEY].tolist()))


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_the_scan_judges_as_the_decoder_or_defers(name: str) -> None:
    linktype, data = FRAMES[name]
    fast = Scanner(ScanConfig()).fast.scan(_batch(linktype, data))
    slow = DetailedJudge().judge(1, 0, data, len(data), linktype).verdicts
    if len(fast.deferred) == 0:
        assert _rows(fast.issues) == _rows(verdicts_to_rows(slow))
        assert int(fast.counts.sum()) == len(slow)


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_the_facts_walk_gives_the_decoders_answer(name: str) -> None:
    linktype, data = FRAMES[name]
    rows, deferred = FactExtractor().extract_fast(_batch(linktype, data))
    ref = FactExtractor(fast=False).extract(_batch(linktype, data))
    if len(deferred) == 0:
        for field in FACTS_DTYPE.names:
            assert (rows[field] == ref[field]).all(), field


def test_where_the_two_modes_part() -> None:
    """The scan leaves odd link headers to the decoder; the facts walk answers them itself."""
    scan_defers, facts_defers = set(), set()
    for name, (linktype, data) in FRAMES.items():
        if len(Scanner(ScanConfig()).fast.scan(_batch(linktype, data)).deferred):
            scan_defers.add(name)
        if len(FactExtractor().extract_fast(_batch(linktype, data))[1]):
            facts_defers.add(name)
    over_scan_tags = {f"eth-{k}-tags" for k in range(pf.SCAN_VLAN_TAGS + 1, 10)} | {"sll-5-tags", "sll-8-tags", "sll-9-tags"}
    odd = {"tag-cut", "eth-cut", "pppoe-session", "nsh", "802.3-length", "null-cut", "raw-v5", "raw-empty"}
    decoders = {"cisco-metadata", "mpls", "ppp"}
    assert scan_defers == over_scan_tags | odd | decoders
    assert facts_defers == decoders
