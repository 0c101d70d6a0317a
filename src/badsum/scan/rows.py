"""Issue rows (`ISSUE_DTYPE`) <-> `Verdict`s: one representation for both paths' findings.

Rows are what flows through the pipeline (compact, numpy, batch-sized); `Verdict`s are built only
for what is printed or written.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator

import numpy as np

from badsum.checksum.verdict import (
    ISSUE_DTYPE,
    Flow,
    Layer,
    Status,
    Verdict,
    VerdictFlag,
)

_EMPTY16 = bytes(16)


def _addr_bytes(flow: Flow | None, which: str) -> bytes:
    if flow is None or flow.ipver == 0:
        return _EMPTY16
    text = getattr(flow, which)
    raw = socket.inet_pton(socket.AF_INET if flow.ipver == 4 else socket.AF_INET6, text)
    return raw.ljust(16, b"\0")


def verdicts_to_rows(verdicts: Iterable[Verdict]) -> np.ndarray:
    """Rows for the verdicts that are not `ok`."""
    vs = [v for v in verdicts if v.status != Status.OK]
    rows = np.zeros(len(vs), dtype=ISSUE_DTYPE)
    for i, v in enumerate(vs):
        f = v.flow
        rows[i] = (
            v.frame,
            v.offset,
            v.stored,
            v.computed,
            v.extra,
            int(v.layer),
            min(v.depth, 255),
            int(v.status),
            int(v.flags) & 0xFF,
            f.ipver if f else 0,
            f.proto if f else 0,
            f.sport if f else 0,
            f.dport if f else 0,
            b"\0" * 6,
            _addr_bytes(f, "src"),
            _addr_bytes(f, "dst"),
        )
    return rows


def addr_text(ipver: int, raw: bytes) -> str:
    """The text of an issue row's address field (16 bytes; IPv4 in the first 4)."""
    if ipver == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if ipver == 6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return ""


def flow_of_fields(ipver: int, src: bytes, dst: bytes, proto: int, sport: int, dport: int) -> Flow | None:
    if ipver == 0:
        return None
    return Flow(ipver, addr_text(ipver, bytes(src)), addr_text(ipver, bytes(dst)), int(proto), int(sport), int(dport))


def flow_of_row(r: np.void) -> Flow | None:
    return flow_of_fields(int(r["ipver"]), bytes(r["src"]), bytes(r["dst"]), int(r["proto"]), int(r["sport"]), int(r["dport"]))


def row_to_verdict(r: np.void) -> Verdict:
    return Verdict(
        frame=int(r["frame"]),
        layer=Layer(int(r["layer"])),
        depth=int(r["depth"]),
        offset=int(r["offset"]),
        stored=int(r["stored"]),
        computed=int(r["computed"]),
        status=Status(int(r["status"])),
        flags=VerdictFlag(int(r["flags"])),
        flow=flow_of_row(r),
        extra=int(r["extra"]),
    )


def iter_verdicts(rows: np.ndarray) -> Iterator[Verdict]:
    for r in rows:
        yield row_to_verdict(r)


def merge_sorted(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate row arrays and order them by frame (stable: keeps per-frame layer order)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros(0, dtype=ISSUE_DTYPE)
    rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if len(parts) > 1:
        rows = rows[np.argsort(rows["frame"], kind="stable")]
    return rows
