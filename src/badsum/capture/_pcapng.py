"""pcapng blocks other than packets: section headers, interface descriptions, options.

These are rare (a few per file), so they are parsed here in Python; the per-packet blocks are
framed in `badsum/native/_framing.c`. Layouts follow draft-ietf-opsawg-pcapng (sections 4.1, 4.2, 3.5).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from badsum.capture.info import Interface, Section

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BYTE_ORDER_MAGIC_LE = b"\x4d\x3c\x2b\x1a"
BYTE_ORDER_MAGIC_BE = b"\x1a\x2b\x3c\x4d"
SHB_MIN_LEN = 28
IDB_MIN_LEN = 20

OPT_COMMENT = 1
SHB_HARDWARE, SHB_OS, SHB_USERAPPL = 2, 3, 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL, IF_FCSLEN, IF_TSOFFSET = 2, 3, 9, 13, 14

BLOCK_NAMES = {
    0x00000001: "IDB",
    0x00000002: "PB",
    0x00000003: "SPB",
    0x00000004: "NRB",
    0x00000005: "ISB",
    0x00000006: "EPB",
    0x00000007: "IRIG_TIMESTAMP",
    0x00000008: "ARINC_429",
    0x00000009: "SYSTEMD_JOURNAL_EXPORT",
    0x0000000A: "DSB",
    0x00000BAD: "CB",
    0x40000BAD: "DCB",
    0x80000001: "DARWIN_PROCESS_EVENT",
}


def block_name(block_type: int) -> str:
    """Short name for statistics (`NRB`, `ISB`, `CB`...); hex for types without one."""
    return BLOCK_NAMES.get(block_type, f"0x{block_type:08x}")


def parse_options(data: bytes, order: str) -> list[tuple[int, bytes]]:
    """(code, value) pairs up to opt_endofopt. A malformed option ends the list quietly: options
    only describe, and the block around them is already known to be well framed."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 4 <= len(data):
        code, length = struct.unpack_from(order + "HH", data, pos)
        if code == 0 or pos + 4 + length > len(data):
            break
        out.append((code, data[pos + 4 : pos + 4 + length]))
        pos += 4 + ((length + 3) & ~3)
    return out


def text(value: bytes) -> str:
    """An option string: UTF-8 per the spec; some writers add a NUL, some write other encodings."""
    return value.rstrip(b"\0").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class ShbHeader:
    """The fixed part of an SHB, enough to frame it."""

    order: str
    """struct prefix: `<` or `>`."""
    total_len: int
    """Block Total Length in the section's byte order."""


def shb_header(head: bytes) -> ShbHeader | None:
    """Byte order and length from the first 12 bytes of an SHB; None if the magic is wrong."""
    magic = head[8:12]
    if magic == BYTE_ORDER_MAGIC_LE:
        order = "<"
    elif magic == BYTE_ORDER_MAGIC_BE:
        order = ">"
    else:
        return None
    return ShbHeader(order, struct.unpack_from(order + "I", head, 4)[0])


def parse_shb(block: bytes, order: str, index: int, first_interface: int) -> Section:
    """A whole, well-framed SHB (length already checked) as a `Section`."""
    major, minor = struct.unpack_from(order + "HH", block, 12)
    opts = parse_options(block[24:-4], order)
    first = _first_text(opts)
    return Section(
        index=index,
        byte_order="little" if order == "<" else "big",
        version=(major, minor),
        first_interface=first_interface,
        hardware=first.get(SHB_HARDWARE),
        os=first.get(SHB_OS),
        userappl=first.get(SHB_USERAPPL),
        comments=tuple(text(v) for c, v in opts if c == OPT_COMMENT),
    )


def parse_idb(block: bytes, order: str, global_id: int, section: int) -> Interface:
    """A whole, well-framed IDB of at least `IDB_MIN_LEN` bytes as an `Interface`."""
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", block, 8)
    opts = parse_options(block[16:-4], order)
    first = _first_text(opts)
    tsresol, tsoffset, fcs_len = 6, 0, None
    for code, value in opts:
        if code == IF_TSRESOL and len(value) >= 1:
            tsresol = value[0]
        elif code == IF_TSOFFSET and len(value) >= 8:
            tsoffset = struct.unpack_from(order + "q", value)[0]
        elif code == IF_FCSLEN and len(value) >= 1:
            fcs_len = value[0]
    return Interface(
        id=global_id,
        section=section,
        linktype=linktype,
        snaplen=snaplen,
        name=first.get(IF_NAME),
        description=first.get(IF_DESCRIPTION),
        tsresol=tsresol,
        tsoffset=tsoffset,
        fcs_len=fcs_len,
    )


def _first_text(opts: list[tuple[int, bytes]]) -> dict[int, str]:
    first: dict[int, str] = {}
    for code, value in opts:
        first.setdefault(code, text(value))
    return first
