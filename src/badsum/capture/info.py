"""What a capture says about itself: its sections and interfaces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Interface:
    """One capture interface: the pcap file header, or one pcapng IDB."""

    id: int
    """Global id, as in `Batch.interface`: section-local index + interfaces of earlier sections."""
    section: int
    """Index of the section (pcapng SHB) that defined it; 0 for pcap."""
    linktype: int
    """LINKTYPE_* value (see `linktypes.name`)."""
    snaplen: int
    """Largest captured length promised by the writer; 0 means no limit (pcapng)."""
    name: str | None = None
    """pcapng if_name (`eth0`); None for pcap."""
    description: str | None = None
    """pcapng if_description."""
    tsresol: int = 6
    """Raw if_tsresol byte: 6 = microseconds (the default), 9 = nanoseconds, 0x80|n = 2^-n s."""
    tsoffset: int = 0
    """pcapng if_tsoffset: seconds added to every timestamp (already applied in `Batch.ts_ns`)."""
    fcs_len: int | None = None
    """Bytes of frame check sequence at the end of each frame, when the file says (pcap FCS bits,
    pcapng if_fcslen); a checksum verifier must not count them as payload."""

    @property
    def ticks_per_second(self) -> int:
        """Timestamp units per second that `tsresol` encodes."""
        exponent = self.tsresol & 0x7F
        return int(2**exponent if self.tsresol & 0x80 else 10**exponent)


@dataclass(frozen=True, slots=True)
class Section:
    """A pcapng section (SHB) or the pcap file header."""

    index: int
    """0-based position in the file."""
    byte_order: str
    """`little` or `big`: the writer's byte order."""
    version: tuple[int, int]
    """(major, minor) from the header: (2, 4) for pcap, (1, 0) for pcapng."""
    first_interface: int
    """Global id of this section's first interface (what its section-local ids are offset by)."""
    hardware: str | None = None
    """shb_hardware."""
    os: str | None = None
    """shb_os."""
    userappl: str | None = None
    """shb_userappl: the program that wrote the section."""
    comments: tuple[str, ...] = ()
    """opt_comment strings of the SHB."""
