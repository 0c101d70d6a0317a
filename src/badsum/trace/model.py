"""What trace works on: capture points and the packets observed at them."""

from __future__ import annotations

from dataclasses import dataclass, field

from badsum.checksum.verdict import TP_STATUS_UNKNOWN, Verdict
from badsum.wire.frame import Frame


@dataclass(frozen=True, slots=True)
class Point:
    """One capture point, in path order."""

    label: str
    """As given (`c1:eth0`, `host:br0`, a file's name)."""
    ns: str | None
    """The namespace part of an `NS:IFNAME` label (`host` is the host namespace); None otherwise."""
    ifname: str | None
    """The interface part of an `NS:IFNAME` label."""

    @classmethod
    def parse(cls, label: str) -> Point:
        ns, sep, ifname = label.partition(":")
        if sep and ns and ifname:
            return cls(label, ns, ifname)
        return cls(label, None, None)


@dataclass(slots=True)
class Observation:
    """One frame seen at one point, decoded and judged."""

    point: int
    """Index of the point in path order."""
    frame_no: int
    """1-based frame number in its capture."""
    ts_ns: int
    """Capture time, nanoseconds."""
    frame: Frame
    """The decoded frame."""
    verdicts: list[Verdict] = field(default_factory=list)
    """Every checksum judged in it (the kernel's status already applied)."""
    tp_status: int = TP_STATUS_UNKNOWN
    """The kernel's tp_status where recorded."""
    direction: int = 0
    """0 unknown, 1 inbound, 2 outbound."""

    @property
    def kernel_known(self) -> bool:
        return self.tp_status != TP_STATUS_UNKNOWN
