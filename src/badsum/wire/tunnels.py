"""Tunnel headers: VXLAN (RFC 7348), Geneve (RFC 8926), GRE (RFC 2784/2890) and ERSPAN."""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire.cursor import Cursor
from badsum.wire.protofacts import VXLAN_FLAG_I

GRE_C = 0x8000
GRE_K = 0x2000
GRE_S = 0x1000
ETH_P_ERSPAN2 = 0x88BE  # ERSPAN type II (and type I without sequence)
ETH_P_ERSPAN3 = 0x22EB


@dataclass(frozen=True, slots=True)
class VXLANHeader:
    """A VXLAN header."""

    offset: int
    """Absolute offset."""
    flags: int
    """Flags byte (I = 0x08 means the VNI is valid)."""
    vni: int
    """VXLAN network identifier."""
    reserved_nonzero: bool
    """Reserved bits set (RFC 7348 says they must be zero; receivers ignore them)."""


def vxlan(c: Cursor) -> VXLANHeader:
    start = c.pos
    w1, w2 = c.pull_u32(), c.pull_u32()
    flags = w1 >> 24
    return VXLANHeader(start, flags, w2 >> 8, bool(w1 & 0x00FFFFFF) or bool(w2 & 0xFF) or bool(flags & ~VXLAN_FLAG_I))


@dataclass(frozen=True, slots=True)
class GeneveHeader:
    """A Geneve header."""

    offset: int
    """Absolute offset."""
    options_length: int
    """Option bytes after the 8-byte base header."""
    protocol: int
    """Ethertype of the payload (0x6558 Ethernet)."""
    vni: int
    """Virtual network identifier."""


def geneve(c: Cursor) -> GeneveHeader:
    start = c.pos
    b0 = c.pull_u8()
    c.skip(1)
    proto = c.pull_u16()
    vni = c.pull_u32() >> 8
    optlen = (b0 & 0x3F) * 4
    c.skip(optlen)
    return GeneveHeader(start, optlen, proto, vni)


@dataclass(frozen=True, slots=True)
class GREHeader:
    """A GRE header."""

    offset: int
    """Absolute offset."""
    flags: int
    """The first 16 bits (C, K, S bits and version)."""
    protocol: int
    """Ethertype of the payload."""
    checksum: int | None
    """Checksum as stored, when the C bit is set."""
    key: int | None
    """Key, when the K bit is set."""
    seq: int | None
    """Sequence number, when the S bit is set."""

    @property
    def version(self) -> int:
        return self.flags & 0x7


def gre(c: Cursor) -> GREHeader:
    start = c.pos
    flags, proto = c.pull_u16(), c.pull_u16()
    cks = key = seq = None
    if flags & GRE_C:
        cks = c.pull_u16()
        c.skip(2)
    if flags & GRE_K:
        key = c.pull_u32()
    if flags & GRE_S:
        seq = c.pull_u32()
    return GREHeader(start, flags, proto, cks, key, seq)


def erspan_length(c: Cursor, proto: int, gre_seq: bool) -> int:
    """Length of the ERSPAN header in front of the mirrored Ethernet frame."""
    if proto == ETH_P_ERSPAN3:
        c.need(12)
        sub = c.data[c.pos + 11] & 0x01  # O bit: an 8-byte platform-specific subheader follows
        return 12 + (8 if sub else 0)
    return 8 if gre_seq else 0  # ERSPAN type I has no header
