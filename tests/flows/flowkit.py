"""Helpers for the symptom-detector tests: synthetic fact records, a capture turned into (facts, rows)
batches with the reference extractor, and tshark as the oracle."""

from __future__ import annotations

import dataclasses
import ipaddress
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support import RowCollector, need_tool

from badsum.analyze import ScanConfig, Scanner
from badsum.capture import open_capture
from badsum.checksum.verdict import ISSUE_DTYPE, Layer, Status
from badsum.flows.analyzer import FlowAnalyzer, Limits
from badsum.flows.facts import FACTS_DTYPE, IPF_DF, fact_of_frame
from badsum.flows.symptom import Kind, Symptom
from badsum.wire.frame import decode_frame

SYN, ACK, RST, PSH, FIN = 0x02, 0x10, 0x04, 0x08, 0x01
S = 1_000_000_000  # ns per second


def ip(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


class Facts:
    """Builds a FACTS_DTYPE array packet by packet; frame numbers count from 1."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.bad: list[tuple[int, int, int, int]] = []  # (frame, layer, depth, status)

    def add(self, src: str, dst: str, *, t: float, proto: int = 6, sport: int = 0, dport: int = 0, flags: int = 0,
            seq: int = 0, ack: int = 0, payload: int = 0, ip_len: int | None = None, df: bool = True, depth: int = 0,
            ip_flags: int = 0, status: Status | None = None, **extra: int | bytes) -> int:  # fmt: skip
        r = np.zeros(1, dtype=FACTS_DTYPE)
        frame = len(self.rows) + 1
        v6 = ":" in src
        r["frame"], r["ts_ns"] = frame, round(t * S)
        r["valid"], r["ipver"], r["proto"], r["depth"] = 1, 6 if v6 else 4, proto, depth
        r["src"], r["dst"] = np.void(ip(src)), np.void(ip(dst))
        r["sport"], r["dport"], r["tcp_flags"], r["seq"], r["ack"], r["payload"] = sport, dport, flags, seq, ack, payload
        hdr = (40 if v6 else 20) + (20 if proto == 6 else 8)
        r["ip_len"] = ip_len if ip_len is not None else hdr + payload
        r["outer_len"] = r["ip_len"]
        r["ip_flags"] = ip_flags | (IPF_DF if df or v6 else 0)
        for k, val in extra.items():
            r[k] = np.void(ip(val)) if k in ("q_src", "q_dst") else val
        self.rows.append(r)
        if status is not None:
            layer = Layer.TCP if proto == 6 else Layer.UDP
            self.bad.append((frame, int(layer), depth, int(status)))
        return frame

    def outer_bad(self, frame: int, src: str, dst: str, sport: int, dport: int) -> None:
        """A bad outer UDP checksum row (depth 0) for a tunnelled packet."""
        self.bad.append((frame, int(Layer.UDP), 0, int(Status.BAD), ip(src), ip(dst), sport, dport))  # type: ignore[arg-type]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        facts = np.concatenate(self.rows) if self.rows else np.zeros(0, FACTS_DTYPE)
        rows = np.zeros(len(self.bad), dtype=ISSUE_DTYPE)
        for i, b in enumerate(self.bad):
            rows[i]["frame"], rows[i]["layer"], rows[i]["depth"], rows[i]["status"] = b[:4]
            f = facts[b[0] - 1]
            rows[i]["ipver"], rows[i]["proto"] = f["ipver"], f["proto"]
            rows[i]["src"], rows[i]["dst"], rows[i]["sport"], rows[i]["dport"] = f["src"], f["dst"], f["sport"], f["dport"]
            if len(b) > 4:
                rows[i]["proto"] = 17
                rows[i]["src"], rows[i]["dst"], rows[i]["sport"], rows[i]["dport"] = np.void(b[4]), np.void(b[5]), b[6], b[7]
        return facts, rows


def analyze(facts: np.ndarray, rows: np.ndarray | None = None, *, batch: int = 0, limits: Limits | None = None,
            direction: int | None = None, tp_status: int | None = None) -> list[Symptom]:
    """Feed in one batch (or batches of `batch` packets, rows split with them) and finish; every
    packet with this pcapng `direction` and kernel `tp_status` when given."""
    rows = np.zeros(0, ISSUE_DTYPE) if rows is None else rows
    a = FlowAnalyzer(limits)
    step = batch or max(len(facts), 1)
    for lo in range(0, max(len(facts), 1), step):
        part = facts[lo : lo + step].copy()
        if not len(part):
            break
        hi = int(part["frame"][-1])
        r = rows[(rows["frame"] >= int(part["frame"][0])) & (rows["frame"] <= hi)]
        d = None if direction is None else np.full(len(part), direction, dtype=np.uint8)
        tp = None if tp_status is None else np.full(len(part), tp_status, dtype=np.uint32)
        a.feed(part, r, d, tp)
    analyze.last = a  # type: ignore[attr-defined]
    return a.finish()


def of_kind(symptoms: list[Symptom], kind: Kind) -> list[Symptom]:
    return [s for s in symptoms if s.kind is kind]


def capture_batches(path: Path, chunk_size: int = 1 << 16) -> list[tuple[np.ndarray, ...]]:
    """(facts, rows, direction, tp_status) per batch: facts from the reference extractor, rows from
    the scanner, the rest as the capture recorded them."""
    sink = RowCollector()
    fields = {f.name for f in dataclasses.fields(ScanConfig)}
    config = ScanConfig(symptoms=False) if "symptoms" in fields else ScanConfig()  # type: ignore[call-arg]
    out = []

    class Keep(RowCollector):
        def rows(self, batch, rows) -> None:
            facts = np.zeros(len(batch), dtype=FACTS_DTYPE)
            for i in range(len(batch)):
                frame = decode_frame(batch.packet(i), int(batch.linktype[i]), int(batch.origlen[i]))
                facts[i] = fact_of_frame(frame, batch.first_frame + i, int(batch.ts_ns[i]))
            out.append((facts, rows.copy(), batch.direction.copy(), batch.tp_status.copy()))

    with open_capture(path, chunk_size=chunk_size) as reader:
        Scanner(config, [Keep(), sink]).run(reader)
    return out


def analyze_capture(path: Path, limits: Limits | None = None) -> list[Symptom]:
    a = FlowAnalyzer(limits)
    for facts, rows, direction, tp_status in capture_batches(path):
        a.feed(facts, rows, direction, tp_status)
    return a.finish()


def tshark(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    """Rows of tshark -T fields (an independent decoder): one list of field strings per packet."""
    exe = need_tool("tshark")
    argv = [exe, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "separator=/t"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]
