"""Thin wrapper over the C scanner `_fastscan`: one batch in, counts, issue rows and deferrals out.

The scanner judges the common packets exactly as docs/verdicts.md says and defers every other
packet, whole, to the detailed decoder: a deferred packet adds nothing to `counts` or `issues`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from badsum.checksum.verdict import ISSUE_DTYPE, MAX_DEPTH, N_LAYERS, N_STATUS
from badsum.native import _fastscan
from badsum.scan.batch import Batch
from badsum.wire.ports import PortTable


#: Slots of `FastResult.stats`.
STAT_PACKETS, STAT_BYTES, STAT_DEFERRED, STAT_KERNEL_OVERRIDES = 0, 1, 2, 3

#: The most issue rows one packet can add (an IPv4 header and an L4 row per tunnel level).
MAX_ROWS_PER_PACKET: int = _fastscan.MAX_ROWS_PER_PACKET


def port_kinds(ports: PortTable) -> np.ndarray:
    """The uint8[65536] table the C kernels read (UDP destination port -> UDPTunnel value), made
    from the very PortTable the detailed decoder uses, so both paths follow the same tunnels."""
    table = np.zeros(65536, dtype=np.uint8)
    for port, kind in ports.by_port.items():
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"UDP port out of range: {port}")
        table[port] = int(kind)
    return table


def port_table(extra_vxlan: Iterable[int] = ()) -> np.ndarray:
    """`port_kinds` of the default tunnel ports (wire/protofacts.py) plus VXLAN on `extra_vxlan`."""
    return port_kinds(PortTable.with_vxlan_ports(tuple(extra_vxlan)))


@dataclass(frozen=True, slots=True)
class FastResult:
    """What the fast path found in one batch."""

    counts: np.ndarray
    """int64[MAX_DEPTH][N_LAYERS][N_STATUS]: checksums judged, by depth, Layer and Status."""
    issues: np.ndarray
    """ISSUE_DTYPE rows, one per checksum whose status is not ok, in frame order."""
    deferred: np.ndarray
    """uint32 batch indices of the packets left, whole, to the detailed decoder."""
    stats: np.ndarray
    """int64[8]: packets judged, bytes judged, deferred, kernel overrides, 4 reserved."""


class FastScanner:
    """Scans batches with one port table; safe to share between threads (`--jobs`)."""

    def __init__(self, ports: np.ndarray | None = None) -> None:
        table = port_table() if ports is None else np.ascontiguousarray(ports, dtype=np.uint8)
        if table.shape != (65536,):
            raise ValueError("port table must be uint8[65536]")
        self._ports = table

    def scan(self, batch: Batch) -> FastResult:
        n = len(batch)
        counts = np.zeros((MAX_DEPTH, N_LAYERS, N_STATUS), dtype=np.int64)
        stats = np.zeros(8, dtype=np.int64)
        issues = np.empty(max(64, n // 16), dtype=ISSUE_DTYPE)
        deferred = np.empty(n, dtype=np.uint32)
        arrays = (
            np.ascontiguousarray(batch.offset, dtype=np.int64),
            np.ascontiguousarray(batch.caplen, dtype=np.uint32),
            np.ascontiguousarray(batch.origlen, dtype=np.uint32),
            np.ascontiguousarray(batch.linktype, dtype=np.uint16),
            np.ascontiguousarray(batch.tp_status, dtype=np.uint32),
        )
        index = n_issues = n_deferred = 0
        while True:
            index, k, d = _fastscan.scan(
                batch.buf, *arrays, batch.first_frame, index, self._ports, counts,
                issues[n_issues:], deferred[n_deferred:], stats,
            )  # fmt: skip
            n_issues += k
            n_deferred += d
            if index >= n:
                break
            # Out of room for packet `index`: grow and resume there.
            grown = np.empty(max(2 * len(issues), n_issues + MAX_ROWS_PER_PACKET), dtype=ISSUE_DTYPE)
            grown[:n_issues] = issues[:n_issues]
            issues = grown
        return FastResult(counts, issues[:n_issues].copy(), deferred[:n_deferred].copy(), stats)
