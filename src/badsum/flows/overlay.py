"""Overlay symptoms: VXLAN/Geneve outer UDP checksums that are bad, and Weave fastdp heartbeats
(UDP 6784) that the peer never answers.

A bad outer UDP checksum on a tunnel packet is what a second SNAT of the VXLAN packet leaves behind
(KB-004: the kernel "updated" a checksum that was 0) or a vmxnet3 offload bug (KB-006); the
receiver drops the whole tunnel packet, so the inner connection sees loss.
"""

from __future__ import annotations

import numpy as np

from badsum.checksum.verdict import Flow, Layer, Status
from badsum.flows.base import (
    BatchView,
    Bounded,
    Limits,
    add_evidence,
    addr_text,
    ev,
    flow_of,
    host_pair_keys,
    take,
    take_rows,
)
from badsum.flows.causes import causes_for
from badsum.flows.facts import IPF_UDP_TUNNEL
from badsum.flows.symptom import Evidence, Kind, Severity, Symptom
from badsum.wire.ports import NEXT_BY_UDP_PORT, UDPTunnel

#: The default ports of the tunnels that carry Ethernet or IP over UDP, by name.
TUNNEL_BY_PORT = {p: k.name.lower() for p, k in NEXT_BY_UDP_PORT.items() if k in (UDPTunnel.VXLAN, UDPTunnel.GENEVE)}
#: Weave fastdp heartbeats and encapsulated traffic (weaveworks/weave router/fastdp.go).
HEARTBEAT_PORT = 6784


class _Tunnel:
    __slots__ = ("count", "evidence", "first", "flow", "inner_depth", "last", "port", "tunnel")

    def __init__(self, flow: Flow, tunnel: str, port: int, frame: int, ts: int, inner_depth: int) -> None:
        self.flow, self.tunnel, self.port, self.inner_depth = flow, tunnel, port, inner_depth
        self.count = 0
        self.first = self.last = (frame, ts)
        # (inner fact, stored, computed), kept as add_evidence keeps Evidence: made text at finish
        self.evidence: list = []


class TunnelChecksums:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.table: Bounded[tuple, _Tunnel] = Bounded(limits.tunnels, self._evicted)
        self.done: list[_Tunnel] = []

    def _evicted(self, k: tuple, t: _Tunnel) -> None:
        if len(self.done) < self.limits.symptoms:
            self.done.append(t)

    def feed(self, v: BatchView) -> None:
        rows = v.rows
        if not len(rows):
            return
        m = (rows["depth"] == 0) & (rows["layer"] == Layer.UDP) & (rows["status"] == Status.BAD)
        if not m.any():
            return
        r = take_rows(rows, m)
        idx = v.index_of_frames(r["frame"])
        f = take(v.facts, np.maximum(idx, 0))
        keep = (idx >= 0) & (f["depth"] > 0) & ((f["ip_flags"] & IPF_UDP_TUNNEL) != 0)
        r, f = take_rows(r, keep), take(f, keep)
        # the fields as Python lists first: reading them record by record cost more than the rest
        cols = zip(f, r["src"].tolist(), r["dst"].tolist(), r["sport"].tolist(), r["dport"].tolist(), r["ipver"].tolist(),
                   r["proto"].tolist(), r["stored"].tolist(), r["computed"].tolist(), f["frame"].tolist(),
                   f["ts_ns"].tolist(), f["depth"].tolist())  # fmt: skip
        for fact, src, dst, sport, dport, ipver, proto, stored, computed, frame, ts, depth in cols:
            key = (src, dst, sport, dport)
            t = self.table.get(key)
            if t is None:
                port = dport if dport in TUNNEL_BY_PORT or sport not in TUNNEL_BY_PORT else sport
                flow = Flow(ipver, addr_text(src, ipver), addr_text(dst, ipver), proto, sport, dport)
                t = _Tunnel(flow, TUNNEL_BY_PORT.get(port, "udp-tunnel"), port, frame, ts, depth)
                self.table.put(key, t)
            t.count += 1
            t.last = (frame, ts)
            add_evidence(t.evidence, (fact, stored, computed))  # type: ignore[arg-type]

    def finish(self) -> list[Symptom]:
        out = []
        for t in self.done + self.table.values():
            details = {"tunnel": t.tunnel, "port": t.port}
            evidence = tuple(ev(fact, f"outer UDP checksum bad (stored 0x{stored:04x}, should be 0x{computed:04x}); "
                                      f"inner {flow_of(fact)}") for fact, stored, computed in t.evidence)  # fmt: skip
            out.append(Symptom(
                kind=Kind.TUNNEL_OUTER_CSUM,
                severity=Severity.FAIL,
                summary=f"{t.count} {t.tunnel} packet{'s' * (t.count != 1)} with a bad outer UDP checksum: the receiver drops them, inner connections stall",
                flow=t.flow,
                count=t.count,
                first_ts_ns=t.first[1],
                last_ts_ns=t.last[1],
                first_frame=t.first[0],
                last_frame=t.last[0],
                evidence=evidence,
                likely_causes=causes_for(Kind.TUNNEL_OUTER_CSUM, details, 0),
                details=details,
                depth=0,
            ))  # fmt: skip
        return out


class _Beat:
    __slots__ = ("counts", "evidence", "facts", "first", "last")

    def __init__(self) -> None:
        self.facts: list[np.void | None] = [None, None]
        self.counts = [0, 0]
        self.first: list[tuple[int, int] | None] = [None, None]
        self.last: list[tuple[int, int] | None] = [None, None]
        self.evidence: list[list[Evidence]] = [[], []]


class Heartbeats:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.table: Bounded[int, _Beat] = Bounded(limits.heartbeats, self._evicted)
        self.done: list[_Beat] = []

    def _evicted(self, k: int, b: _Beat) -> None:
        if len(self.done) < self.limits.symptoms:
            self.done.append(b)

    def feed(self, v: BatchView) -> None:
        u = v.udp_idx
        if not len(u):
            return
        hb = u[(v.at("sport", u) == HEARTBEAT_PORT) | (v.at("dport", u) == HEARTBEAT_PORT)]
        if not len(hb):
            return
        sub = take(v.facts, hb)
        keys, dirs = host_pair_keys(sub)
        for f, k, d in zip(sub, keys.tolist(), dirs.tolist()):
            b = self.table.get(k)
            if b is None:
                b = _Beat()
                self.table.put(k, b)
            if b.facts[d] is None:
                b.facts[d] = f.copy()
                b.first[d] = (int(f["frame"]), int(f["ts_ns"]))
            b.counts[d] += 1
            b.last[d] = (int(f["frame"]), int(f["ts_ns"]))
            add_evidence(b.evidence[d], ev(f, f"heartbeat {b.counts[d]} ({int(f['payload'])} bytes)"))

    def finish(self) -> list[Symptom]:
        out = []
        for b in self.done + self.table.values():
            for d in (0, 1):
                sent, answered = b.counts[d], b.counts[1 - d]
                if sent < self.limits.heartbeat_min or answered:
                    continue
                f = b.facts[d]
                details = {"sent": sent, "answered": answered}
                depth = int(f["depth"])
                out.append(Symptom(
                    kind=Kind.HEARTBEAT_UNANSWERED,
                    severity=Severity.FAIL,
                    summary=f"{sent} overlay heartbeats (UDP {HEARTBEAT_PORT}) to {addr_text(f['dst'], int(f['ipver']))} and none back",
                    flow=flow_of(f),
                    count=sent,
                    first_ts_ns=b.first[d][1],
                    last_ts_ns=b.last[d][1],
                    first_frame=b.first[d][0],
                    last_frame=b.last[d][0],
                    evidence=tuple(b.evidence[d]),
                    likely_causes=causes_for(Kind.HEARTBEAT_UNANSWERED, details, depth),
                    details=details,
                    depth=depth,
                ))  # fmt: skip
        return out
