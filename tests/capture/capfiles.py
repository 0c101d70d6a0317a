"""Build pcap and pcapng files byte by byte, independently of badsum's writer.

Each builder returns bytes plus, where tests need them, the record boundaries, so a test can
say exactly which packets a truncated file must still yield.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "captures"


def corpus_dir() -> Path:
    """The shared capture corpus, or skip the calling test."""
    if not (CORPUS / "manifest.csv").is_file():
        pytest.skip("../shared/captures not found")
    return CORPUS


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 7919 + n).randbytes(n)


# -- pcap -----------------------------------------------------------------------------------


@dataclass
class Built:
    """A built file: its bytes, where each record starts, and what each packet should read as."""

    data: bytes
    record_starts: list[int] = field(default_factory=list)
    record_ends: list[int] = field(default_factory=list)
    packets: list[bytes] = field(default_factory=list)
    origlens: list[int] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)


PCAP_MAGIC = {(False, False): 0xA1B2C3D4, (True, False): 0xA1B23C4D, (False, True): 0xA1B2CD34}


def pcap(
    packets: list[tuple[int, int, bytes, int]],
    *,
    order: str = "<",
    nsec: bool = False,
    kuznetzov: bool = False,
    linktype: int = 1,
    snaplen: int = 65535,
) -> Built:
    """packets: (ts_sec, ts_frac, data, origlen)."""
    magic = PCAP_MAGIC[(nsec, kuznetzov)]
    out = bytearray(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
    built = Built(b"")
    for sec, frac, data, origlen in packets:
        built.record_starts.append(len(out))
        out += struct.pack(order + "IIII", sec, frac, len(data), origlen)
        if kuznetzov:
            out += struct.pack(order + "IHBx", 3, 0x0800, 0)
        out += data
        built.record_ends.append(len(out))
        built.packets.append(data)
        built.origlens.append(origlen)
        built.ts_ns.append(sec * 10**9 + frac * (1 if nsec else 1000))
    built.data = bytes(out)
    return built


def simple_pcap(count: int = 6, **kw: object) -> Built:
    sizes = [60, 0, 1, 1514, 77, 3, 42, 9000]
    lengths = [sizes[i % len(sizes)] for i in range(count)]
    packets = [(1_700_000_000 + i, 1000 * i + 7, payload(n, i), n + i % 2) for i, n in enumerate(lengths)]
    return pcap(packets, **kw)  # type: ignore[arg-type]


# -- pcapng ---------------------------------------------------------------------------------


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def opt(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "HH", code, len(value)) + pad4(value)


def opts(items: list[tuple[int, bytes]], order: str = "<") -> bytes:
    if not items:
        return b""
    return b"".join(opt(c, v, order) for c, v in items) + b"\0\0\0\0"


def block(block_type: int, body: bytes, order: str = "<") -> bytes:
    body = pad4(body)
    total = 12 + len(body)
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def shb(
    order: str = "<", version: tuple[int, int] = (1, 0), options: list[tuple[int, bytes]] | None = None
) -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, *version, -1) + opts(options or [], order)
    return block(0x0A0D0D0A, body, order)


def idb(
    linktype: int, snaplen: int = 0, order: str = "<", options: list[tuple[int, bytes]] | None = None
) -> bytes:
    return block(1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts(options or [], order), order)


def epb(iface: int, ticks: int, data: bytes, origlen: int | None = None, order: str = "<",
        options: list[tuple[int, bytes]] | None = None) -> bytes:  # fmt: skip
    head = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data) if origlen is None else origlen)  # fmt: skip
    return block(6, head + pad4(data) + opts(options or [], order), order)


def pb(iface: int, ticks: int, data: bytes, origlen: int | None = None, order: str = "<",
       options: list[tuple[int, bytes]] | None = None) -> bytes:  # fmt: skip
    """The obsolete Packet Block (type 2)."""
    head = struct.pack(order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data) if origlen is None else origlen)  # fmt: skip
    return block(2, head + pad4(data) + opts(options or [], order), order)


def spb(data: bytes, origlen: int | None = None, order: str = "<") -> bytes:
    return block(3, struct.pack(order + "I", len(data) if origlen is None else origlen) + pad4(data), order)


def u8(v: int) -> bytes:
    return bytes([v])


def q(v: int, order: str = "<") -> bytes:
    return struct.pack(order + "q", v)


def u32(v: int, order: str = "<") -> bytes:
    return struct.pack(order + "I", v)


class PcapngBuilder:
    """Concatenate blocks, remembering where packet blocks start and end."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.built = Built(b"")

    def add(self, blk: bytes) -> PcapngBuilder:
        self.out += blk
        return self

    def packet(self, blk: bytes, data: bytes, origlen: int, ts_ns: int) -> PcapngBuilder:
        self.built.record_starts.append(len(self.out))
        self.out += blk
        self.built.record_ends.append(len(self.out))
        self.built.packets.append(data)
        self.built.origlens.append(origlen)
        self.built.ts_ns.append(ts_ns)
        return self

    def done(self) -> Built:
        self.built.data = bytes(self.out)
        return self.built


TP_COMMENT = b"badsum:tp_status=0x00000108 TP_STATUS_CSUMNOTREADY|TP_STATUS_GSO_TCP"


def rich_pcapng() -> Built:
    """Three sections (LE, BE, LE), several link types and resolutions, SPB, PB, options,
    unknown blocks: most of what the reader handles, in one file."""
    b = PcapngBuilder()
    t = 1_700_000_000
    # Section 0, little-endian: Ethernet (µs default), raw IP (ns), loopback (2^-20 s, offset).
    b.add(shb("<", options=[(4, b"capfiles"), (1, b"section zero")]))
    b.add(idb(1, 65535, "<", [(2, b"eth0"), (3, b"first nic")]))
    b.add(idb(101, 0, "<", [(2, b"tun0"), (9, u8(9))]))
    b.add(block(4, b"\x01\x00\x08\x00\x0a\x00\x00\x01host\x00\x00\x00\x00\x00\x00"))  # NRB
    d = payload(60, 1)
    b.packet(epb(0, t * 10**6 + 5, d), d, 60, t * 10**9 + 5000)
    d = payload(41, 2)
    b.packet(epb(1, t * 10**9 + 123, d, 1500, options=[(1, b"hello"), (2, u32(2)), (1, TP_COMMENT)]),
             d, 1500, t * 10**9 + 123)  # fmt: skip
    b.add(idb(108, 262144, "<", [(9, u8(0x80 | 20)), (14, q(100))]))
    d = payload(33, 3)
    b.packet(epb(2, (t << 20) + (1 << 19), d), d, 33, (t + 100) * 10**9 + 500_000_000)
    b.add(block(5, u32(0) + u32(0) + u32(0)))  # ISB
    b.add(block(0x00000BAD, u32(32473) + b"custom!!"))  # CB
    # Section 1, big-endian: Linux SLL2 with millisecond resolution; SPB and PB.
    b.add(shb(">"))
    b.add(idb(276, 100, ">", [(9, u8(3))]))
    d = payload(150, 4)
    b.packet(spb(d, 150, ">"), d[:100], 150, 0)  # snaplen 100 caps the SPB
    d = payload(20, 5)
    b.packet(pb(0, t * 1000 + 7, d, 20, ">", [(2, u32(1, ">"))]), d, 20, t * 10**9 + 7_000_000)
    d = payload(64, 6)
    b.packet(epb(0, t * 1000 + 8, d, 64, ">", [(1, b"be comment\x00")]), d, 64, t * 10**9 + 8_000_000)
    b.add(block(0x12345678, b"unknown block body", ">"))
    # Section 2, little-endian again: interfaces restart at global id 2.
    b.add(shb("<"))
    b.add(idb(228, 0, "<", [(9, u8(9))]))
    d = payload(28, 7)
    b.packet(epb(0, t * 10**9 + 9, d), d, 28, t * 10**9 + 9)
    b.add(block(10, u32(0x5353484B) + u32(4) + b"keys", "<"))  # DSB
    return b.done()


EXPECTED_RICH = {
    "interface": [0, 1, 2, 3, 3, 3, 4],
    "linktype": [1, 101, 108, 276, 276, 276, 228],
    "direction": [0, 2, 0, 0, 1, 0, 0],
    "tp_status": [0xFFFFFFFF, 0x108, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF],
    "comments": {1: ["hello", TP_COMMENT.decode()], 5: ["be comment"]},
    "frames": [1, 2, 3, 5, 6, 7, 8],
    "skipped": {"NRB": 1, "ISB": 1, "CB": 1, "0x12345678": 1, "DSB": 1},
}
