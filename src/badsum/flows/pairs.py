""""Ping works, TCP fails": per host pair, ICMP echo answered while TCP connects fail or UDP gets no
reply.

ICMP checksums are always computed in software; TCP and UDP ones are the ones transmit offload
leaves unfinished (KB-005, KB-007), so a path that mangles offloaded packets passes ping and
nothing else. Echo and UDP packets are counted per host pair in a direct-mapped numpy table (one
`np.unique` per batch, no Python per packet or per pair); TCP connect outcomes come from the SYN
detector when it closes a handshake.
"""

from __future__ import annotations

import numpy as np

from badsum.checksum.verdict import Flow
from badsum.flows.base import (
    BatchView,
    Bounded,
    Limits,
    addr_text,
    host_pair_keys,
    take,
)
from badsum.flows.causes import causes_for
from badsum.flows.facts import FACTS_DTYPE, PROTO_ICMP, PROTO_ICMPV6, _mix
from badsum.flows.symptom import Evidence, Kind, Severity, Symptom

# count columns: echo requests sent by direction 0/1, echo replies sent by direction 0/1, UDP by direction 0/1
REQ0, REQ1, REP0, REP1, UDP0, UDP1 = range(6)
_SRC, _DST = FACTS_DTYPE.fields["src"][1], FACTS_DTYPE.fields["dst"][1]


class PairDetector:
    """Host pairs in a direct-mapped table of plain numpy columns (a colliding pair replaces the old)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        size = 1 << max(int(limits.host_pairs - 1).bit_length(), 4)
        self.mask = np.uint64(size - 1)
        self.key = np.zeros(size, dtype=np.uint64)  # host-pair key | 1 (0: empty slot)
        self.counts = np.zeros((size, 6), dtype=np.int64)
        self.a_dir = np.zeros(size, dtype=np.int8)  # host-pair direction of the echo initiator's packets
        self.ipver = np.zeros(size, dtype=np.uint8)
        self.depth = np.zeros(size, dtype=np.uint8)
        self.first = np.zeros((size, 2), dtype=np.int64)  # frame, ts of the first echo
        self.last = np.zeros((size, 2), dtype=np.int64)  # frame, ts of the last echo
        self.addr = np.zeros((size, 2, 16), dtype=np.uint8)  # the sender in direction 0 and in direction 1
        self.created = self.evicted = 0
        self.tcp: Bounded[int, list[int]] = Bounded(limits.host_pairs)  # host pair -> [connects, failed]

    def tcp_result(self, hp: int, failed: bool) -> None:
        """A closed handshake between the pair (from the SYN detector): connects and failures."""
        hp |= 1  # as in the table
        cur = self.tcp.get(hp)
        if cur is None:
            self.tcp.put(hp, [1, int(failed)])
        else:
            cur[0] += 1
            cur[1] += int(failed)

    def feed(self, v: BatchView) -> None:
        icmp = v.icmp_idx
        if len(icmp):
            p = v.col("proto")[icmp]
            t = v.facts["icmp_type"][icmp]
            req = ((p == PROTO_ICMP) & (t == 8)) | ((p == PROTO_ICMPV6) & (t == 128))
            rep = ((p == PROTO_ICMP) & (t == 0)) | ((p == PROTO_ICMPV6) & (t == 129))
            echo = req | rep
            if echo.any():
                self._echo(take(v.facts, icmp[echo]), req[echo])
        if self.created:
            udp = np.flatnonzero(v.udp)
            if len(udp):
                self._udp(v.facts, udp)

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (_mix(keys) & self.mask).astype(np.int64)

    def _echo(self, sub: np.ndarray, req: np.ndarray) -> None:
        keys, dirs = host_pair_keys(sub)
        keys |= np.uint64(1)  # 0 marks an empty slot
        uk, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        last = np.zeros(len(uk), dtype=np.int64)
        last[inv] = np.arange(len(sub))  # the last write wins: each pair's last packet in this batch
        slot = self._slots(uk)
        cur = self.key[slot]
        new = cur != uk
        if new.any():
            self.evicted += int((cur[new] != 0).sum())
            self.created += int(new.sum())
            s, i = slot[new], first[new]
            fd = dirs[i].astype(np.int64)
            self.key[s] = uk[new]
            self.counts[s] = 0
            # the initiator: the sender of the pair's first echo request (or the receiver of its first reply)
            self.a_dir[s] = np.where(req[i], fd, 1 - fd)
            self.ipver[s], self.depth[s] = sub["ipver"][i], sub["depth"][i]
            self.first[s, 0], self.first[s, 1] = sub["frame"][i], sub["ts_ns"][i]
            raw = sub.view(np.uint8).reshape(len(sub), -1)
            self.addr[s, fd] = raw[i, _SRC : _SRC + 16]
            self.addr[s, 1 - fd] = raw[i, _DST : _DST + 16]
        self.last[slot, 0], self.last[slot, 1] = sub["frame"][last], sub["ts_ns"][last]
        cols = np.where(req, REQ0, REP0) + dirs
        self.counts[slot] += np.bincount(inv * 6 + cols, minlength=6 * len(uk)).reshape(-1, 6)

    def _udp(self, facts: np.ndarray, udp: np.ndarray) -> None:
        """UDP per direction, for pairs that already exchanged echo (UDP before the first echo is not counted)."""
        keys, dirs = host_pair_keys(facts, udp)
        keys |= np.uint64(1)
        slot = self._slots(keys)
        known = self.key[slot] == keys
        if known.any():
            np.add.at(self.counts, (slot[known], UDP0 + dirs[known].astype(np.int64)), 1)

    def finish(self) -> list[Symptom]:
        out = []
        # only pairs that could be a symptom reach Python: echo answered, and some TCP result or
        # unanswered UDP (the exact test follows, per pair)
        occ = np.flatnonzero(self.key != 0)
        a_dir = self.a_dir[occ].astype(np.int64)
        c, rows = self.counts[occ], np.arange(len(occ))
        udp_silent = (c[rows, UDP0 + a_dir] >= 2) & (c[rows, UDP0 + 1 - a_dir] == 0)
        tcp_known = np.isin(self.key[occ], np.fromiter(self.tcp.data, dtype=np.uint64, count=len(self.tcp.data)))
        for i in occ[(c[rows, REP0 + 1 - a_dir] > 0) & (udp_silent | tcp_known)].tolist():
            a = int(self.a_dir[i])
            counts = self.counts[i].tolist()
            requests, replies = counts[REQ0 + a], counts[REP0 + 1 - a]
            if not replies:
                continue
            udp_sent, udp_answered = counts[UDP0 + a], counts[UDP0 + 1 - a]
            connects, failed = self.tcp.data.get(int(self.key[i]), [0, 0])
            tcp_ok = connects - failed
            tcp_bad = failed > 0 and tcp_ok == 0
            udp_bad = udp_sent >= 2 and udp_answered == 0 and tcp_ok == 0
            if not (tcp_bad or udp_bad):
                continue
            details = {"echo_requests": requests, "echo_replies": replies, "tcp_connects": connects,
                       "tcp_failed": failed, "udp_sent": udp_sent, "udp_answered": udp_answered}  # fmt: skip
            v = int(self.ipver[i])
            src, dst = addr_text(self.addr[i, a].tobytes(), v), addr_text(self.addr[i, 1 - a].tobytes(), v)
            fails = []
            if tcp_bad:
                fails.append(f"{failed} of {connects} TCP connect{'s' * (connects != 1)} failed")
            if udp_bad:
                fails.append(f"{udp_sent} UDP datagrams got no reply")
            (f0, t0), (f1, t1) = self.first[i].tolist(), self.last[i].tolist()
            evidence = (Evidence(f0, t0, f"first ICMP echo between {src} and {dst}"), Evidence(f1, t1, "last ICMP echo"))
            depth = int(self.depth[i])
            out.append(Symptom(
                kind=Kind.ICMP_ONLY,
                severity=Severity.FAIL if tcp_bad else Severity.WARN,
                summary=f"ping answered ({replies} replies to {requests} echo requests) but " + " and ".join(fails),
                flow=Flow(v, src, dst, 0, 0, 0),
                count=failed if tcp_bad else udp_sent,
                first_ts_ns=t0,
                last_ts_ns=t1,
                first_frame=f0,
                last_frame=f1,
                evidence=evidence,
                likely_causes=causes_for(Kind.ICMP_ONLY, details, depth),
                details=details,
                depth=depth,
            ))  # fmt: skip
        return out
