"""Row sinks: JSON lines on a stream, and the annotated pcapng."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TextIO

import numpy as np

from badsum.capture.batch import Batch
from badsum.scan.rows import iter_verdicts

#: Prefix of the comments `--annotate` writes (docs/pcapng-encoding.md).
ANNOTATION_PREFIX = "badsum:"


class JsonLinesSink:
    """One JSON object per non-ok checksum (`--jsonl`)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.written = 0

    def rows(self, batch: Batch, rows: np.ndarray) -> None:
        self.late_rows(rows)

    def late_rows(self, rows: np.ndarray) -> None:
        write = self.out.write
        for v in iter_verdicts(rows):
            write(json.dumps(v.as_record(), separators=(",", ":")) + "\n")
        self.written += len(rows)


def annotation(v) -> str:  # noqa: ANN001 - a Verdict
    return f"{ANNOTATION_PREFIX}{v.layer.label}[{v.depth}] {v.status.label}: {v.reason}"


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
