"""Bad and partial checksums over the capture's time, for `pcap --html`'s chart. Pure and bounded.

The scan's non-ok rows carry frame numbers, and each batch holds its packets' timestamps: per
batch, the rows' times are one fancy index (`ts_ns[frame - first_frame]`), and the counts one
`np.add.at`, so a big capture costs no per-packet Python. The span is not known until the end, so
the bins are fine ones of a width that grows tenfold (neighbours summed) whenever a packet lands
past the last; at most FINE_BINS of them, whatever the capture. `series` regroups them into at most
`max_bins` of a width of 1, 2 or 5 times a power of ten.

Time is relative to the capture's first packet, as tshark's `frame.time_relative` is; a packet
stamped before it (out-of-order pcapng) counts in the first bin. Rows that come late (fragments
never completed) are `unverifiable`, never bad or partial: nothing here misses them.
"""

from __future__ import annotations

import numpy as np

from badsum.checksum.verdict import N_LAYERS, Layer, Status
from badsum.scan.batch import Batch

#: The statuses counted, in the counts' last axis.
COUNTED = (Status.BAD, Status.PARTIAL)
FINE_BINS = 4000
#: The first fine width: 1 µs (pcap's usual resolution).
FIRST_WIDTH_NS = 1_000


class Timeline:
    """Counts per (fine bin, layer, status in COUNTED)."""

    def __init__(self, fine_bins: int = FINE_BINS, width_ns: int = FIRST_WIDTH_NS) -> None:
        self.width_ns = width_ns
        self.t0_ns: int | None = None
        self.last_ns: int | None = None
        self.counts = np.zeros((fine_bins, N_LAYERS, len(COUNTED)), dtype=np.int64)

    def add(self, batch: Batch, rows: np.ndarray) -> None:
        """One batch and its non-ok rows (frames of this batch, as the scanner hands them on)."""
        if len(batch) == 0:
            return
        if self.t0_ns is None:
            self.t0_ns = int(batch.ts_ns[0])
        last = int(batch.ts_ns.max())
        self.last_ns = last if self.last_ns is None else max(self.last_ns, last)
        self._fit(self.last_ns)
        if len(rows) == 0:
            return
        status = rows["status"]
        which = np.full(len(rows), -1, dtype=np.int64)
        for i, s in enumerate(COUNTED):
            which[status == int(s)] = i
        keep = which >= 0
        if not keep.any():
            return
        idx = rows["frame"][keep].astype(np.int64) - batch.first_frame
        ts = batch.ts_ns[idx]
        b = np.clip((ts - self.t0_ns) // self.width_ns, 0, len(self.counts) - 1)
        np.add.at(self.counts, (b, rows["layer"][keep].astype(np.int64), which[keep]), 1)

    def _fit(self, t_ns: int) -> None:
        n = len(self.counts)
        while t_ns - self.t0_ns >= n * self.width_ns:
            folded = np.zeros_like(self.counts)
            used = n - n % 10
            folded[: used // 10] = self.counts[:used].reshape(used // 10, 10, *self.counts.shape[1:]).sum(axis=1)
            folded[used // 10] += self.counts[used:].sum(axis=0)
            self.counts = folded
            self.width_ns *= 10

    def series(self, max_bins: int = 120) -> dict:
        """The chart's data: bin width and totals per bin, and per layer where any was counted.
        Bin i holds what was stamped in [i * bin_s, (i + 1) * bin_s) after the first packet."""
        if self.t0_ns is None:
            return {"bin_s": 0, "t0_s": None, "span_s": 0, "bins": 0, "bad": [], "partial": [], "layers": {}}
        used = int((self.last_ns - self.t0_ns) // self.width_ns) + 1
        k = next(m * 10**e for e in range(20) for m in (1, 2, 5) if -(-used // (m * 10**e)) <= max_bins)
        n = -(-used // k)
        fine = self.counts[: n * k] if n * k <= len(self.counts) else np.concatenate(
            [self.counts, np.zeros((n * k - len(self.counts), *self.counts.shape[1:]), dtype=np.int64)])  # fmt: skip
        per_bin = fine.reshape(n, k, *fine.shape[1:]).sum(axis=1)  # (bin, layer, counted)
        out = {"bin_s": k * self.width_ns / 1e9, "t0_s": self.t0_ns / 1e9, "span_s": (self.last_ns - self.t0_ns) / 1e9,
               "bins": n, "layers": {}}  # fmt: skip
        for i, s in enumerate(COUNTED):
            out[s.name.lower()] = per_bin[:, :, i].sum(axis=1).tolist()
        for layer in Layer:
            if per_bin[:, int(layer), :].any():
                out["layers"][layer.label] = {s.name.lower(): per_bin[:, int(layer), i].tolist() for i, s in enumerate(COUNTED)}
        return out


__all__ = ["COUNTED", "Timeline"]
