"""Row sinks: JSON lines on a stream, and the annotated pcapng."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TextIO

import numpy as np

from badsum.capture.batch import Batch
from badsum.checksum.reasons import reason_for
from badsum.checksum.verdict import ISSUE_DTYPE, Layer, Status, Verdict, VerdictFlag
from badsum.scan.rows import flow_of_fields, iter_verdicts

_LAYERS = {int(x): x for x in Layer}
_STATUSES = {int(x): x for x in Status}
_LAYER_LABEL = {x: x.label for x in Layer}  # separate maps: IntEnum members of both compare equal
_STATUS_LABEL = {x: x.label for x in Status}
_FLAGS = [VerdictFlag(i) for i in range(256)]
_GSO, _KERNEL = int(VerdictFlag.GSO), int(VerdictFlag.KERNEL)

#: Prefix of the comments `--annotate` writes (docs/pcapng-encoding.md).
ANNOTATION_PREFIX = "badsum:"


class JsonLinesSink:
    """One JSON object per non-ok checksum (`--jsonl`)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.written = 0
        self._flows: dict[tuple, str] = {}
        self._flow_objs: dict[tuple, object] = {}

    def rows(self, batch: Batch, rows: np.ndarray) -> None:
        self.late_rows(rows)

    def late_rows(self, rows: np.ndarray) -> None:
        # Hot when a capture has many non-ok sums (an offloading host): rows as plain tuples,
        # one cached JSON fragment per flow, and the same Verdict.reason text as everywhere else.
        if len(rows) == 0:
            return
        lines = []
        flows = self._flows
        fields = ISSUE_DTYPE.names
        idx = {n: i for i, n in enumerate(fields)}
        i_frame, i_off, i_st, i_cp, i_ex = idx["frame"], idx["offset"], idx["stored"], idx["computed"], idx["extra"]
        i_layer, i_depth, i_status, i_flags = idx["layer"], idx["depth"], idx["status"], idx["flags"]
        i_ipver, i_proto, i_sport, i_dport, i_src, i_dst = (idx[n] for n in ("ipver", "proto", "sport", "dport", "src", "dst"))
        for r in rows.tolist():
            fkey = (r[i_ipver], r[i_src], r[i_dst], r[i_proto], r[i_sport], r[i_dport])
            frag = flows.get(fkey)
            if frag is None:
                if len(flows) > 100_000:
                    flows.clear()
                flow = flow_of_fields(*fkey)
                # Addresses and numbers only: nothing to escape.
                frag = flows[fkey] = (
                    "null" if flow is None else
                    f'{{"src":"{flow.src}","dst":"{flow.dst}","proto":{flow.proto},"sport":{flow.sport},"dport":{flow.dport}}}'
                )  # fmt: skip
                self._flow_objs[fkey] = flow
            fl = r[i_flags]
            layer, status = _LAYERS[r[i_layer]], _STATUSES[r[i_status]]
            v = Verdict(r[i_frame], layer, r[i_depth], r[i_off], r[i_st], r[i_cp], status, _FLAGS[fl], self._flow_objs[fkey], r[i_ex])
            width = 8 if layer is Layer.SCTP else 4
            extra = (',"gso":true' if fl & _GSO else "") + (',"kernel":true' if fl & _KERNEL else "")
            reason = reason_for(v)
            reason = f'"{reason}"' if '"' not in reason and "\\" not in reason else json.dumps(reason)
            lines.append(
                f'{{"record":"checksum","frame":{r[i_frame]},"layer":"{_LAYER_LABEL[layer]}","depth":{r[i_depth]},"status":"{_STATUS_LABEL[status]}",'
                f'"stored":"0x{r[i_st]:0{width}x}","computed":"0x{r[i_cp]:0{width}x}","offset":{r[i_off]},'
                f'"flow":{frag},"reason":{reason}{extra}}}\n'
            )
        self.out.write("".join(lines))
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
