"""CRC32c (Castagnoli, RFC 9260 appendix A) for SCTP; table-driven, used on the slow path only."""

from __future__ import annotations


def _table() -> list[int]:
    poly = 0x82F63B78  # reflected 0x1EDC6F41
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        out.append(c)
    return out


_TABLE = _table()


def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC32c of `data` (initial value and final xor 0xffffffff, as SCTP uses)."""
    c = crc ^ 0xFFFFFFFF
    t = _TABLE
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
