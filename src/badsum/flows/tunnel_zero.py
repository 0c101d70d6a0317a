"""Performance note: VXLAN/Geneve packets whose outer UDP checksum is 0 (known issue KB-016).

A zero outer UDP checksum is legal (RFC 768 over IPv4; RFC 6935/6936 for tunnels over IPv6), but a
receiving kernel without 89e5c58fc1e2 (Linux 5.12, stable 4.9.268) does not GRO the encapsulated
flow: throughput drops, nothing is lost. flannel's `noudpcsum` VXLAN and Cilium send such packets.

Per tunnel (outer source, destination and tunnel port) the zero sums are counted exactly, from
their `zero-allowed` rows. The non-zero ones leave no row and a fact describes only the inner
packet, so they are counted by the inner host pairs the tunnel was seen carrying: a packet between
the same inner hosts (that direction) with a checksum. One inner pair travels one VTEP pair, so
this is exact for a capture at one point.
"""

from __future__ import annotations

import numpy as np

from badsum.checksum.verdict import Flow, Layer, Status
from badsum.flows.base import (
    BatchView,
    Bounded,
    Limits,
    addr_text,
    addr_words,
    ev,
    flow_of,
    take,
)
from badsum.flows.causes import causes_for
from badsum.flows.facts import IPF_UDP_TUNNEL, PROTO_UDP, _mix
from badsum.flows.overlay import TUNNEL_BY_PORT
from badsum.flows.symptom import Evidence, Kind, Severity, Symptom

#: What the note tells a user to do (known-issues-2 E): any one of these restores GRO.
REMEDY = ("checksum the outer UDP header (`udpcsum` on the VXLAN/Geneve device; flannel without noudpcsum; "
          "Antrea tunnelCsum) or run receivers on Linux >= 5.12 / 4.9.268 (89e5c58fc1e2)")  # fmt: skip


class _Tunnel:
    __slots__ = ("evidence", "first", "flow", "last", "pairs", "port", "tunnel", "zero")

    def __init__(self, flow: Flow, tunnel: str, port: int, frame: int, ts: int) -> None:
        self.flow, self.tunnel, self.port = flow, tunnel, port
        self.zero = 0
        self.first = self.last = (frame, ts)
        self.pairs: set[int] = set()
        self.evidence: list[Evidence] = []


_M1 = np.uint64(0x9E3779B97F4A7C15)
_PORTS = np.array(sorted(TUNNEL_BY_PORT), dtype=np.uint16)


def _fold(*words: np.ndarray) -> np.ndarray:
    """One well-spread uint64 per row from several uint64 columns (splitmix64 rounds)."""
    with np.errstate(over="ignore"):
        k = np.zeros(len(words[0]), dtype=np.uint64)
        for w in words:
            k = _mix(k * _M1 ^ w.astype(np.uint64))
    return k


def _pair_keys(facts: np.ndarray) -> np.ndarray:
    """Directional inner host pairs (source, destination) as uint64 keys."""
    s0, s1 = addr_words(facts, "src")
    d0, d1 = addr_words(facts, "dst")
    return _fold(s0, s1, d0, d1)


def _tunnelled(ip_flags: np.ndarray, depth: np.ndarray, proto: np.ndarray, dport: np.ndarray) -> np.ndarray:
    """Packets carried in a UDP tunnel; also a tunnel packet with no inner IP (ARP inside VXLAN),
    whose fact is the outer UDP packet itself, sent to a tunnel port."""
    inner = ((ip_flags & IPF_UDP_TUNNEL) != 0) & (depth > 0)
    return inner | ((depth == 0) & (proto == PROTO_UDP) & np.isin(dport, _PORTS))


def _inner_text(fact: np.void) -> str:
    if int(fact["depth"]) == 0:
        return "no inner IP packet (ARP or other Ethernet)"
    x = flow_of(fact)
    return f"inner {x.src}:{x.sport} > {x.dst}:{x.dport} proto {x.proto}"


def _row_words(rows: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(rows[name]).view("<u8").reshape(-1, 2)
    return w[:, 0], w[:, 1]


class TunnelZeroSums:
    """Counts zero outer UDP checksums per tunnel and the packets of the same inner pairs with one."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.table: Bounded[int, _Tunnel] = Bounded(limits.tunnels)
        #: directional inner host pair -> tunnel packets with a non-zero outer sum
        self.nonzero: Bounded[int, list[int]] = Bounded(limits.tunnel_pairs)

    def feed(self, v: BatchView) -> None:
        tun = np.flatnonzero(_tunnelled(v.col("ip_flags"), v.col("depth"), v.col("proto"), v.col("dport")))
        if not len(tun):
            return
        zero_frames = np.zeros(0, dtype=np.uint64)
        rows = v.rows
        if len(rows):
            m = (rows["depth"] == 0) & (rows["layer"] == Layer.UDP) & (rows["status"] == Status.ZERO_ALLOWED)
            if m.any():
                zero_frames = rows["frame"][m]
                self._zero(v, rows[m])
        sub = take(v.facts, tun)
        rest = sub[~np.isin(sub["frame"], zero_frames)]
        if not len(rest):
            return
        keys, counts = np.unique(_pair_keys(rest), return_counts=True)
        for k, c in zip(keys.tolist(), counts.tolist()):
            n = self.nonzero.get(k)
            if n is None:
                self.nonzero.put(k, [c])
            else:
                n[0] += c

    def _zero(self, v: BatchView, r: np.ndarray) -> None:
        idx = v.index_of_frames(r["frame"])
        f = take(v.facts, np.maximum(idx, 0))
        keep = (idx >= 0) & _tunnelled(f["ip_flags"], f["depth"], f["proto"], f["dport"])
        r, f = r[keep], f[keep]
        if not len(r):
            return
        sport, dport = r["sport"], r["dport"]
        port = np.where(np.isin(dport, _PORTS) | ~np.isin(sport, _PORTS), dport, sport)
        tkeys = _fold(*_row_words(r, "src"), *_row_words(r, "dst"), port, r["ipver"])
        pairs = _pair_keys(f)
        uniq, first, inverse, counts = np.unique(tkeys, return_index=True, return_inverse=True, return_counts=True)
        inverse = inverse.ravel()
        last = np.zeros(len(uniq), dtype=np.int64)
        last[inverse] = np.arange(len(r))  # the later index wins
        for u, key in enumerate(uniq.tolist()):
            t = self.table.get(key)
            if t is None:
                i = int(first[u])
                row, ipver, tport = r[i], int(r["ipver"][i]), int(port[i])
                flow = Flow(ipver, addr_text(row["src"], ipver), addr_text(row["dst"], ipver), 17, 0, tport)
                t = _Tunnel(flow, TUNNEL_BY_PORT.get(tport, "udp-tunnel"), tport, int(f["frame"][i]), int(f["ts_ns"][i]))
                self.table.put(key, t)
            t.zero += int(counts[u])
            j = int(last[u])
            t.last = (int(f["frame"][j]), int(f["ts_ns"][j]))
            mine = np.flatnonzero(inverse == u) if len(uniq) > 1 else np.arange(len(r))
            room = self.limits.tunnel_pairs - len(t.pairs)
            if room > 0:
                t.pairs.update(np.unique(pairs[mine]).tolist()[:room])
            for i in mine[: 3 - len(t.evidence)].tolist():  # every packet of a tunnel looks the same: a few show it
                t.evidence.append(ev(f[i], f"outer UDP checksum 0x0000 (no checksum); {_inner_text(f[i])}"))

    def finish(self) -> list[Symptom]:
        out = []
        for t in self.table.values():
            nonzero = sum((self.nonzero.data.get(p) or [0])[0] for p in t.pairs)
            v6 = t.flow.ipver == 6
            details = {"tunnel": t.tunnel, "port": t.port, "zero": t.zero, "nonzero": nonzero,
                       "outer_ipver": t.flow.ipver, "impact": "performance", "remedy": REMEDY}  # fmt: skip
            summary = (f"{t.zero} {t.tunnel} packet{'s' * (t.zero != 1)} {t.flow.src} -> {t.flow.dst}:{t.port} with outer "
                       f"UDP checksum 0, {nonzero} with one: receivers without 89e5c58fc1e2 (Linux 5.12, 4.9.268) do not "
                       "GRO them, throughput not loss (KB-016); remedy: udpcsum on the tunnel device, Antrea tunnelCsum, "
                       "or a receiver kernel with the fix")  # fmt: skip
            if v6:
                # RFC 6936: Linux vxlan/geneve drop these unless the receiving device has udp6zerocsumrx.
                summary += "; over IPv6 a zero sum is dropped unless the receiving device has udp6zerocsumrx"
                details["udp6zerocsumrx_needed"] = True
            out.append(Symptom(
                kind=Kind.TUNNEL_ZERO_CSUM,
                severity=Severity.INFO,
                summary=summary,
                flow=t.flow,
                count=t.zero,
                first_ts_ns=t.first[1],
                last_ts_ns=t.last[1],
                first_frame=t.first[0],
                last_frame=t.last[0],
                evidence=tuple(t.evidence),
                likely_causes=causes_for(Kind.TUNNEL_ZERO_CSUM, details, 0),
                details=details,
                depth=0,
            ))  # fmt: skip
        return out
