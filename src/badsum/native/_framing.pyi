"""Types of the C framing extension (_framing.c): pcap and pcapng record framing and EPB encoding."""

from typing import TypeAlias

import numpy as np

Buffer: TypeAlias = bytes | bytearray | memoryview | np.ndarray

NEED_MORE: int
FULL: int
BLOCK: int
SHB: int
TOO_LARGE: int
BAD_LENGTH: int
LENGTH_MISMATCH: int
BAD_CAPLEN: int
UNDEFINED_INTERFACE: int

def frame_pcap(
    buf: Buffer,
    start: int,
    end: int,
    swapped: bool,
    nsec: bool,
    hdr_len: int,
    max_caplen: int,
    base: int,
    out_index: int,
    out_offset: Buffer,
    out_caplen: Buffer,
    out_origlen: Buffer,
    out_ts_ns: Buffer,
    out_file_offset: Buffer,
    /,
) -> tuple[int, int, int, int]: ...
def frame_pcapng(
    buf: Buffer,
    start: int,
    end: int,
    swapped: bool,
    ifaces: Buffer,
    if_base: int,
    max_block: int,
    base: int,
    out_index: int,
    /,
    *outputs: Buffer,  # offset, caplen, origlen, ts_ns, file_offset, interface, linktype, tp_status,
    # direction, ncomments: exactly these ten
) -> tuple[int, int, int, int]: ...
def epb_comments(buf: Buffer, pos: int, swapped: bool, /) -> list[str]: ...
def encode_epbs(
    buf: Buffer,
    offset: Buffer,
    caplen: Buffer,
    origlen: Buffer,
    ts_ns: Buffer,
    idb: Buffer,
    direction: Buffer,
    options: list[bytes | None],
    /,
) -> bytes: ...
