"""Packet facts for whole batches: the C extractor for the common packets, the reference for the rest.

`badsum.native._fastscan.facts` reads only headers and fills most rows; every packet it cannot
describe exactly (GRE, Geneve, IPIP, MPLS, UDP-Lite, PPP, unknown link types, deep nesting) it
lists as deferred, and those go through `fact_of_frame(decode_frame(...))`, which is exact.
Both give the same row for any packet (tests/flows/test_facts.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from badsum.flows.facts import FACTS_DTYPE, fact_of_frame
from badsum.native import _fastscan
from badsum.scan.batch import Batch
from badsum.scan.fast import port_kinds
from badsum.wire.frame import decode_frame
from badsum.wire.ports import PortTable

assert _fastscan.FACT_SIZE == FACTS_DTYPE.itemsize, "the C fact_row and FACTS_DTYPE drifted apart"


class FactExtractor:
    """One FACTS_DTYPE row per packet of a batch, in batch order.

    Holds no per-call state: one instance may serve several threads at once (`--jobs`); the C
    part runs without the GIL.
    """

    def __init__(self, vxlan_ports: tuple[int, ...] = (), fast: bool = True, ports: PortTable | None = None) -> None:
        """`ports`: the caller's PortTable (the Scanner shares its own), else the defaults plus
        VXLAN on `vxlan_ports`."""
        for p in vxlan_ports:
            if not 0 <= int(p) <= 0xFFFF:
                raise ValueError(f"UDP port out of range: {p}")
        self._ports = ports if ports is not None else PortTable.with_vxlan_ports(tuple(vxlan_ports))
        self._table = port_kinds(self._ports)
        self.fast = fast

    def extract(self, batch: Batch) -> np.ndarray:
        if not self.fast:
            out = np.zeros(len(batch), dtype=FACTS_DTYPE)
            self._reference(batch, range(len(batch)), out)
            return out
        out, deferred = self.extract_fast(batch)
        self._reference(batch, deferred.tolist(), out)
        return out

    def extract_fast(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """The C extractor alone: (rows, deferred batch indices); a deferred row holds only frame
        and ts_ns. For tests and measurements; `extract` fills those rows too."""
        n = len(batch)
        out = np.empty(n, dtype=FACTS_DTYPE)
        deferred = np.empty(n, dtype=np.uint32)
        k = _fastscan.facts(
            batch.buf,
            np.ascontiguousarray(batch.offset, dtype=np.int64),
            np.ascontiguousarray(batch.caplen, dtype=np.uint32),
            np.ascontiguousarray(batch.origlen, dtype=np.uint32),
            np.ascontiguousarray(batch.linktype, dtype=np.uint16),
            np.ascontiguousarray(batch.ts_ns, dtype=np.int64),
            batch.first_frame, self._table, out, deferred,
        )  # fmt: skip
        return out, deferred[:k]

    def _reference(self, batch: Batch, indices: Iterable[int], out: np.ndarray) -> None:
        for i in indices:
            frame = decode_frame(batch.packet(i), int(batch.linktype[i]), int(batch.origlen[i]), self._ports)
            out[i] = fact_of_frame(frame, batch.first_frame + i, int(batch.ts_ns[i]))
