"""Bounded aggregation of non-ok checksums by flow, layer and status, vectorised with numpy.

Per batch, rows are reduced to unique keys; the table keeps them as parallel arrays and merges
pending batches with one `np.unique` once enough have piled up. No per-row or per-key Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.lib.recfunctions as rfn

from badsum.checksum.verdict import ISSUE_DTYPE, Flow, Layer, Status
from badsum.scan.rows import flow_of_row

_KEY_FIELDS = ["ipver", "proto", "sport", "dport", "src", "dst", "layer", "status", "depth"]


@dataclass(slots=True)
class FlowEntry:
    """Non-ok checksums of one status at one layer in one flow."""

    flow: Flow | None
    """The 5-tuple (None when the checksum had no IP packet around it)."""
    layer: Layer
    """Which checksum."""
    status: Status
    """Its status."""
    depth: int
    """Tunnel depth."""
    count: int
    """How many checksums."""
    first_frame: int
    """First frame where it was seen."""
    last_frame: int
    """Last frame where it was seen."""


def _keys(rows: np.ndarray) -> np.ndarray:
    packed = np.ascontiguousarray(rfn.repack_fields(rows[_KEY_FIELDS]))
    return packed.view(f"V{packed.dtype.itemsize}").ravel()


class FlowTable:
    """Keeps at most `limit` distinct keys (the most frequent); the rest count in `overflow`."""

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self.overflow = 0
        self._keys = np.zeros(0, dtype="V1")
        self._rep = np.zeros(0, dtype=ISSUE_DTYPE)  # one representative row per key
        self._count = np.zeros(0, dtype=np.int64)
        self._first = np.zeros(0, dtype=np.uint64)
        self._last = np.zeros(0, dtype=np.uint64)
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._pending_n = 0

    def add(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        keys = _keys(rows)
        uniq, first_idx, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        frames = rows["frame"]
        inverse = inverse.ravel()
        first = np.full(len(uniq), np.iinfo(np.uint64).max, dtype=np.uint64)
        last = np.zeros(len(uniq), dtype=np.uint64)
        np.minimum.at(first, inverse, frames)
        np.maximum.at(last, inverse, frames)
        self._pending.append((uniq, rows[first_idx], counts.astype(np.int64), first, last))
        self._pending_n += len(uniq)
        # Merging costs about the same whenever it happens; waiting for 2 * limit pending keys
        # made its transient copies the largest peak of a long --jsonl or --json run (60 MB).
        if self._pending_n > self.limit // 2:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        parts = [(self._keys, self._rep, self._count, self._first, self._last), *self._pending]
        self._pending, self._pending_n = [], 0
        width = max(p[0].dtype.itemsize for p in parts if len(p[0]))
        keys = np.concatenate([p[0].astype(f"V{width}") for p in parts if len(p[0])])
        rep = np.concatenate([p[1] for p in parts])
        count = np.concatenate([p[2] for p in parts])
        first = np.concatenate([p[3] for p in parts])
        last = np.concatenate([p[4] for p in parts])
        uniq, idx, inverse = np.unique(keys, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        n = len(uniq)
        c = np.zeros(n, dtype=np.int64)
        f = np.full(n, np.iinfo(np.uint64).max, dtype=np.uint64)
        la = np.zeros(n, dtype=np.uint64)
        np.add.at(c, inverse, count)
        np.minimum.at(f, inverse, first)
        np.maximum.at(la, inverse, last)
        if n > self.limit:
            keep = np.argsort(-c, kind="stable")[: self.limit]
            self.overflow += int(c.sum() - c[keep].sum())
            keep.sort()
            uniq, idx, c, f, la = uniq[keep], idx[keep], c[keep], f[keep], la[keep]
        self._keys, self._rep, self._count, self._first, self._last = uniq, rep[idx], c, f, la

    def top(self, k: int, statuses: tuple[Status, ...] | None = None) -> list[FlowEntry]:
        """The `k` keys with the most checksums (optionally of these statuses only)."""
        self._merge()
        sel = np.arange(len(self._count))
        if statuses is not None:
            sel = sel[np.isin(self._rep["status"], [int(s) for s in statuses])]
        order = sel[np.lexsort((self._first[sel], -self._count[sel]))][:k]
        return [
            FlowEntry(
                flow_of_row(self._rep[i]),
                Layer(int(self._rep[i]["layer"])),
                Status(int(self._rep[i]["status"])),
                int(self._rep[i]["depth"]),
                int(self._count[i]),
                int(self._first[i]),
                int(self._last[i]),
            )
            for i in order.tolist()
        ]

    def count_keys(self, status: Status) -> int:
        """How many distinct (flow, layer, depth) keys have this status."""
        self._merge()
        return int((self._rep["status"] == int(status)).sum())

    def __len__(self) -> int:
        self._merge()
        return len(self._count)
