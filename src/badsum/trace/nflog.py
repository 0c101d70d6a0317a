"""LINKTYPE_NFLOG records (`tcpdump -i nflog:N`): the IP packet inside, as a raw-IP frame."""

from __future__ import annotations

from badsum.wire.protofacts import LINKTYPE_NFLOG

__all__ = ["LINKTYPE_NFLOG", "NFULA_PAYLOAD", "payload"]

NFULA_PAYLOAD = 9


def payload(record: bytes) -> tuple[int, bytes] | None:
    """(offset of the IP packet in the record, the packet), or None when there is none.

    Layout: family, version, resource id (4 bytes), then TLVs of (length, type) in the capturing
    host's byte order, each padded to 4 bytes; type 9 carries the packet.
    """
    for order in ("little", "big"):
        pos = 4
        while pos + 4 <= len(record):
            length = int.from_bytes(record[pos : pos + 2], order)
            kind = int.from_bytes(record[pos + 2 : pos + 4], order) & 0x7FFF
            if length < 4 or pos + length > len(record) + 3:
                break
            if kind == NFULA_PAYLOAD:
                return pos + 4, bytes(record[pos + 4 : pos + length])
            pos += (length + 3) & ~3
    return None
