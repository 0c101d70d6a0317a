"""Row sinks: JSON lines on a stream, and the annotated pcapng (encoded by `report.records`)."""

from __future__ import annotations

from collections import defaultdict
from typing import TextIO

import numpy as np

from badsum.report.records import annotation, checksum_lines
from badsum.scan.batch import Batch
from badsum.scan.rows import iter_verdicts


class JsonLinesSink:
    """One JSON object per non-ok checksum (`--jsonl`)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.written = 0

    def rows(self, batch: Batch, rows: np.ndarray) -> None:
        self.late_rows(rows)

    def late_rows(self, rows: np.ndarray) -> None:
        # Hot when a capture has many non-ok sums (an offloading host): a whole batch is formatted
        # at once, and nothing is kept between batches (a per-flow cache held tens of MB).
        if len(rows) == 0:
            return
        self.out.write(checksum_lines(rows))
        self.written += len(rows)


class AnnotateSink:
    """Copies every packet into a pcapng, with a comment on each non-ok checksum."""

    def __init__(self, writer, interfaces=None) -> None:  # noqa: ANN001 - PcapngWriter, reader.interfaces
        self.writer = writer
        self.interfaces = interfaces
        self.late = 0

    def rows(self, batch: Batch, rows: np.ndarray) -> None:
        comments: dict[int, list[str]] = defaultdict(list)
        for v in iter_verdicts(rows):
            comments[v.frame - batch.first_frame].append(annotation(v))
        self.writer.write_batch(batch, dict(comments), interfaces=self.interfaces)

    def late_rows(self, rows: np.ndarray) -> None:
        # Fragments that never completed are judged after their frames were written.
        self.late += len(rows)
