"""SCTP common header (RFC 9260); the checksum is CRC32c (appendix A)."""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire.cursor import Cursor
from badsum.wire.protofacts import CSUM_AT, IPPROTO_SCTP

CHECKSUM_OFFSET = CSUM_AT[IPPROTO_SCTP]


@dataclass(frozen=True, slots=True)
class SCTPHeader:
    """An SCTP common header."""

    offset: int
    """Absolute offset of the header."""
    sport: int
    """Source port."""
    dport: int
    """Destination port."""
    vtag: int
    """Verification tag."""
    checksum: int
    """CRC32c as stored (the 32-bit field read little-endian, as RFC 9260 appendix A transmits it)."""


def decode(c: Cursor) -> SCTPHeader:
    start = c.pos
    sport, dport, vtag = c.pull_u16(), c.pull_u16(), c.pull_u32()
    raw = c.pull_bytes(4)
    return SCTPHeader(start, sport, dport, vtag, int.from_bytes(raw, "little"))
