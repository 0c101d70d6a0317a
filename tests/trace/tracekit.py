"""Helpers for the trace tests: frames built with scapy (an independent builder), judged the way
`badsum trace` judges captured ones, and traced."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builders import pseudo4
from scapy.all import IP, TCP, UDP, Ether, Raw

from badsum.checksum.detailed import DetailedJudge
from badsum.checksum.verdict import TP_STATUS_UNKNOWN
from badsum.trace.build import to_data, trace
from badsum.trace.model import Observation, Point
from badsum.trace.topology import Topology
from badsum.wire.link import LINKTYPE_ETHERNET

MAC1 = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
MAC2 = {"src": "02:00:00:00:00:03", "dst": "02:00:00:00:00:04"}


def tcp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes, *, seq: int = 1000, ack: int = 1, ip_id: int = 7,
              ttl: int = 64, mac: dict | None = None, partial: bool = False, chksum: int | None = None) -> bytes:  # fmt: skip
    pkt = Ether(**(mac or MAC1)) / IP(src=src, dst=dst, id=ip_id, ttl=ttl, flags="DF") / TCP(
        sport=sport, dport=dport, seq=seq, ack=ack, flags="PA") / Raw(payload)  # fmt: skip
    pkt = Ether(bytes(pkt))
    if partial:
        pkt[TCP].chksum = pseudo4(src, dst, 6, 20 + len(payload))
    elif chksum is not None:
        pkt[TCP].chksum = chksum
    return bytes(pkt)


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes, *, ip_id: int = 9, chksum: int | None = None) -> bytes:
    pkt = Ether(**MAC1) / IP(src=src, dst=dst, id=ip_id) / UDP(sport=sport, dport=dport) / Raw(payload)
    pkt = Ether(bytes(pkt))
    if chksum is not None:
        pkt[UDP].chksum = chksum
    return bytes(pkt)


def run(points: list[tuple[str, list[bytes | tuple[bytes, int]]]], snapshot=None, order: str = "given",
        delays: list[int] | None = None) -> dict:
    """Trace frames given per point (a frame, or (frame, tp_status)); 1 ms apart in path order."""
    pts, obs = [], []
    for p, (label, frames) in enumerate(points):
        pts.append(Point.parse(label))
        judge = DetailedJudge()
        for n, item in enumerate(frames, 1):
            data, status = item if isinstance(item, tuple) else (item, TP_STATUS_UNKNOWN)
            ts = n * 1_000_000_000 + (delays[p] if delays else p) * 1_000_000
            res = judge.judge(n, ts, data, len(data), LINKTYPE_ETHERNET, status)
            obs.append(Observation(p, n, ts, res.frame, res.verdicts, status))
    topo = Topology(snapshot)
    return to_data(trace(pts, obs, topo, order), topo, [label for label, _ in points])


def only_flow(data: dict) -> dict:
    fwd = [f for f in data["flows"] if f["direction"] == "forward"]
    assert len(fwd) == 1, [f["text"] for f in data["flows"]]
    return fwd[0]
