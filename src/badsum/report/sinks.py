"""Row sinks: JSON lines on a stream, and the annotated pcapng (encoded by `report.records`)."""

from __future__ import annotations

from collections import defaultdict
from typing import TextIO

import numpy as np

from badsum.checksum.verdict import ISSUE_DTYPE, Flow, Layer, Status, Verdict, VerdictFlag
from badsum.report.records import annotation, checksum_line, flow_json
from badsum.scan.batch import Batch
from badsum.scan.rows import flow_of_fields, iter_verdicts

_LAYERS = {int(x): x for x in Layer}
_STATUSES = {int(x): x for x in Status}
_FLAGS = [VerdictFlag(i) for i in range(256)]
#: Flows whose JSON is kept between batches; past it the cache starts again (memory stays bounded).
_FLOW_CACHE = 100_000
#: The row layout `late_rows` unpacks (a changed ISSUE_DTYPE must change it too).
_ROW_FIELDS = ("frame", "offset", "stored", "computed", "extra", "layer", "depth", "status", "flags",
               "ipver", "proto", "sport", "dport", "_pad", "src", "dst")  # fmt: skip
assert ISSUE_DTYPE.names == _ROW_FIELDS


class JsonLinesSink:
    """One JSON object per non-ok checksum (`--jsonl`)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.written = 0
        self._flows: dict[tuple, tuple[Flow | None, str]] = {}

    def rows(self, batch: Batch, rows: np.ndarray) -> None:
        self.late_rows(rows)

    def late_rows(self, rows: np.ndarray) -> None:
        # Hot when a capture has many non-ok sums (an offloading host): rows as plain tuples and
        # one Flow and its JSON per flow, cached; the record itself is records.checksum_line.
        if len(rows) == 0:
            return
        flows = self._flows
        lines = []
        for (frame, offset, stored, computed, extra, layer, depth, status, flags,
             ipver, proto, sport, dport, _pad, src, dst) in rows.tolist():  # fmt: skip
            key = (ipver, src, dst, proto, sport, dport)
            cached = flows.get(key)
            if cached is None:
                if len(flows) > _FLOW_CACHE:
                    flows.clear()
                flow = flow_of_fields(*key)
                cached = flows[key] = (flow, flow_json(flow))
            v = Verdict(frame, _LAYERS[layer], depth, offset, stored, computed, _STATUSES[status], _FLAGS[flags],
                        cached[0], extra)  # fmt: skip
            lines.append(checksum_line(v, cached[1]))
        self.out.write("".join(lines))
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
