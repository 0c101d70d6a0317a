"""A batch of captured records: the contract between the readers and the scanners.

It lives with its lowest consumer, the scan, so that `scan/` and `flows/` take batches without
importing `capture/` (whose package imports the readers); the readers in `capture/` produce it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Batch:
    """Packets framed from one read chunk, as parallel arrays over one buffer.

    Nothing here is copied per packet: `offset[i]`/`caplen[i]` locate packet i's bytes in `buf`.
    """

    buf: bytes | bytearray | memoryview
    """The chunk holding the packet bytes."""
    first_frame: int
    """1-based frame number of the first packet in this batch (as tshark counts)."""
    offset: np.ndarray
    """int64[n]: start of each packet's data in `buf`."""
    caplen: np.ndarray
    """uint32[n]: bytes captured."""
    origlen: np.ndarray
    """uint32[n]: length on the wire."""
    ts_ns: np.ndarray
    """int64[n]: capture time, nanoseconds since the epoch."""
    linktype: np.ndarray
    """uint16[n]: LINKTYPE_* of the interface the packet came from."""
    interface: np.ndarray
    """uint32[n]: pcapng interface id (section-local index made global by the reader); 0 for pcap."""
    tp_status: np.ndarray
    """uint32[n]: kernel PACKET_AUXDATA tp_status; 0xFFFFFFFF where none was recorded."""
    direction: np.ndarray
    """uint8[n]: 0 unknown, 1 inbound, 2 outbound (pcapng epb_flags bits 0-1)."""
    file_offset: np.ndarray
    """int64[n]: byte offset of each record (header included) in the (decompressed) file."""
    comments: dict[int, list[str]] = field(default_factory=dict)
    """Batch index -> opt_comment strings of that packet (pcapng only; kept for --annotate)."""

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    def packet(self, i: int) -> bytes:
        """The captured bytes of packet i (slow path only)."""
        o = int(self.offset[i])
        return bytes(self.buf[o : o + int(self.caplen[i])])
