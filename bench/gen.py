#!/usr/bin/env python3
"""Generate the badsum benchmark capture and its ground truth.

    python bench/gen.py --out /tmp/bench.pcap            # 2,000,000 packets, about 1.45 GB
    python bench/gen.py --packets 20000 --out /tmp/small.pcap

Writes FILE (classic pcap, Ethernet, microsecond timestamps) and beside it
FILE.truth.csv (one row per frame/checksum that is not `ok`: frame,layer,depth,status) and
FILE.truth.json (totals: packets, bytes, class mix, status counts, seed).

Packet mix (per packet, drawn with a fixed seed; the output is byte-identical for the same
--packets and --seed):

    70% TCP/IPv4   10% TCP/IPv6   10% UDP (70% IPv4, 30% IPv6)
     5% VXLAN: outer IPv4/UDP dport 4789 (outer UDP checksum 0 in half of them, else valid),
        inner Ethernet/IPv4/TCP
     5% ICMP echo request/reply (IPv4)

Faults: about 1% of packets get one bad L4 checksum, half bit flips (a payload or checksum bit
flipped after the sum was computed -> `bad`) and half `partial` (the TCP/UDP field holds the
folded pseudo-header sum, not complemented: CHECKSUM_PARTIAL); 0.1% get a bad IPv4 header
checksum. In VXLAN packets a fault hits either the inner packet (before encapsulation, so the
outer UDP sum covers the faulty inner bytes and verifies) or the outer packet (after
encapsulation; an inner payload bit flipped on the wire breaks both the inner TCP and the outer
UDP checksum when the outer one is not 0).

The truth is not a record of what was injected: after the capture is built every checksum is
re-verified from the final bytes (independently of badsum's code: vectorised RFC 1071 in numpy)
and classified with the rules of docs/verdicts.md (UDP 0 over IPv4 -> zero-allowed; verifies ->
ok; stored == fold(pseudo-header sum) -> partial; otherwise bad). Outer VXLAN zero checksums are
listed as `zero-allowed`; they are not errors.

All addresses are documentation prefixes (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32); MAC addresses are locally administered.

Everything is vectorised: each chunk of packets is one (n, 16 + 1514) uint8 matrix (the pcap
record header followed by the frame, zero after the frame's end), filled class block by class
block, summed with numpy, shuffled into capture order and written with one boolean gather.
Memory stays bounded by the chunk size (about 0.3 GB with the default).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import struct
import sys
import time

import numpy as np

# ---------------------------------------------------------------------------------------------
# Layout of one matrix row: [pcap record header (16)][frame (<= 1514)][zeros]
R = 16
MAXF = 1514
W = R + MAXF  # 1530: even, so rows can be viewed as 16-bit words
ETH = 14
IP = R + ETH  # 30: IP header (outer)
L4_4 = IP + 20  # 50: L4 header after an IPv4 header
L4_6 = IP + 40  # 70: L4 header after an IPv6 header
VXH = L4_4 + 8  # 58: VXLAN header
IETH = VXH + 8  # 66: inner Ethernet
IIP = IETH + 14  # 80: inner IPv4
IL4 = IIP + 20  # 100: inner TCP

TCP_CSUM, UDP_CSUM, ICMP_CSUM, IP_CSUM = 16, 6, 2, 10  # field offsets within their headers
VXLAN_PORT = 4789
TUNNEL_PORTS = (4789, 8472, 6081, 4754, 6635)

SEED = 20240611
CHUNK = 32768  # packets per chunk; part of the format: changing it changes the output

# Classes, in block order inside a chunk.
TCP4, TCP6, UDP4, UDP6, VXLAN, ICMP = range(6)
CLASS_NAMES = ["tcp4", "tcp6", "udp4", "udp6", "vxlan", "icmp"]
CLASS_P = np.array([0.70, 0.10, 0.07, 0.03, 0.05, 0.05])

# Frame length mixtures (probability, lo, hi inclusive); clipped below to the class's minimum.
MIX_TCP = [(0.43, 64, 128), (0.15, 129, 1399), (0.42, 1400, 1514)]
MIX_UDP = [(0.50, 64, 200), (0.30, 201, 1399), (0.20, 1400, 1514)]
MIX_ICMP = [(0.70, 98, 98), (0.30, 64, 1514)]
MIN_LEN = {TCP4: 64, TCP6: 78, UDP4: 64, UDP6: 64, VXLAN: 110, ICMP: 64}
HDR_LEN = {TCP4: 54, TCP6: 74, UDP4: 42, UDP6: 62, VXLAN: 104, ICMP: 42}  # payload starts here

P_L4_ERR = 0.01  # packets with one faulty L4 checksum
P_IP_ERR = 0.001  # packets with a faulty IPv4 header checksum (among packets with IPv4)
P_VX_ZERO = 0.5  # VXLAN packets whose outer UDP checksum is 0

LAYERS = ["ipv4", "tcp", "udp", "icmp"]
L_IPV4, L_TCP, L_UDP, L_ICMP = range(4)
STATUSES = ["ok", "bad", "partial", "zero-allowed", "zero-invalid"]
S_OK, S_BAD, S_PARTIAL, S_ZERO_ALLOWED, S_ZERO_INVALID = range(5)

COLS = np.arange(W, dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# RFC 1071 arithmetic. Sums are taken over little-endian 16-bit words of the matrix (numpy's
# native view); the one's complement sum is byte-order independent (RFC 1071 section 2(B)), so a
# value computed in this "LE domain" is stored by writing it back through the same LE view.


def fold(s: np.ndarray) -> np.ndarray:
    s = s.astype(np.uint64, copy=False)
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    return s


def bswap16(x: np.ndarray | int) -> np.ndarray | int:
    return ((x & 0xFF) << 8) | ((x >> 8) & 0xFF)


def wsum(words: np.ndarray, c0: int, c1: int) -> np.ndarray:
    """Sum of the words covering byte columns [c0, c1) (both even) of each row."""
    return words[:, c0 // 2 : c1 // 2].sum(axis=1, dtype=np.uint64)


def pseudo_le(words: np.ndarray, ipcol: int, v6: bool, proto: int, l4len: np.ndarray) -> np.ndarray:
    """Pseudo-header sum (unfolded, LE domain), addresses read from the matrix."""
    if v6:
        addr = wsum(words, ipcol + 8, ipcol + 40)
    else:
        addr = wsum(words, ipcol + 12, ipcol + 20)
    return addr + np.uint64(proto << 8) + bswap16(l4len.astype(np.uint64))


# ---------------------------------------------------------------------------------------------
# Field writers (big-endian on the wire).


def put8(b: np.ndarray, col: int, v) -> None:
    b[:, col] = v


def put16(b: np.ndarray, col: int, v) -> None:
    v = np.asarray(v, dtype=np.int64)
    b[:, col] = (v >> 8) & 0xFF
    b[:, col + 1] = v & 0xFF


def put32(b: np.ndarray, col: int, v) -> None:
    v = np.asarray(v, dtype=np.int64)
    for k in range(4):
        b[:, col + k] = (v >> (24 - 8 * k)) & 0xFF


def ipv4_addrs(rng: np.random.Generator, n: int, prefixes: list[tuple[int, int, int]]) -> np.ndarray:
    """(n, 4) uint8 addresses in the given /24 documentation prefixes."""
    out = np.empty((n, 4), np.uint8)
    which = rng.integers(0, len(prefixes), n)
    pre = np.array(prefixes, np.uint8)[which]
    out[:, :3] = pre
    out[:, 3] = rng.integers(1, 255, n)
    return out


def ipv6_addrs(rng: np.random.Generator, n: int, subnet: int) -> np.ndarray:
    """(n, 16) uint8 addresses in 2001:db8:<subnet>::/48, random interface ids."""
    out = np.zeros((n, 16), np.uint8)
    out[:, 0:4] = (0x20, 0x01, 0x0D, 0xB8)
    out[:, 4] = subnet >> 8
    out[:, 5] = subnet & 0xFF
    out[:, 8:16] = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    return out


CLIENTS4 = [(192, 0, 2), (198, 51, 100)]
SERVERS4 = [(203, 0, 113)]


class Flows:
    """A table of one-directional TCP flows with running sequence numbers."""

    def __init__(self, rng: np.random.Generator, n: int, v6: bool, client4=CLIENTS4, server4=SERVERS4):
        self.n = n
        if v6:
            cli, srv = ipv6_addrs(rng, n, 0x0001), ipv6_addrs(rng, n, 0x0002)
        else:
            cli, srv = ipv4_addrs(rng, n, client4), ipv4_addrs(rng, n, server4)
        eph = rng.integers(32768, 61000, n)
        svc = np.array([443, 443, 443, 8443, 22, 5201])[rng.integers(0, 6, n)]
        down = rng.random(n) < 0.5  # server -> client
        self.src = np.where(down[:, None], srv, cli)
        self.dst = np.where(down[:, None], cli, srv)
        self.sport = np.where(down, svc, eph)
        self.dport = np.where(down, eph, svc)
        self.seq = rng.integers(0, 2**32, n, dtype=np.uint64)
        self.ack = rng.integers(0, 2**32, n, dtype=np.uint64)
        self.win = rng.integers(500, 65535, n)

    def take(self, rng: np.random.Generator, paylen: np.ndarray):
        """Pick a flow per packet; return (flow ids, seq numbers) and advance the flows."""
        m = paylen.shape[0]
        f = rng.integers(0, self.n, m)
        order = np.argsort(f, kind="stable")
        fs = f[order]
        pl = paylen[order].astype(np.uint64)
        cs = np.cumsum(pl) - pl  # exclusive prefix over the sorted packets
        first = np.r_[0, np.flatnonzero(fs[1:] != fs[:-1]) + 1]
        grp_start = np.repeat(cs[first], np.diff(np.r_[first, m]))
        seq = np.empty(m, np.uint64)
        seq[order] = (self.seq[fs] + (cs - grp_start)) & 0xFFFFFFFF
        self.seq = (self.seq + np.bincount(f, weights=paylen, minlength=self.n).astype(np.uint64)) & 0xFFFFFFFF
        return f, seq


def sample_lengths(rng: np.random.Generator, n: int, mix, minlen: int) -> np.ndarray:
    p = np.array([m[0] for m in mix])
    comp = rng.choice(len(mix), size=n, p=p / p.sum())
    lo = np.array([m[1] for m in mix])[comp]
    hi = np.array([m[2] for m in mix])[comp]
    return np.maximum(rng.integers(lo, hi + 1), minlen).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Header fillers: write every header with its checksum fields 0.


def fill_eth(b: np.ndarray, col: int, ethertype: int, rng: np.random.Generator) -> None:
    n = b.shape[0]
    b[:, col : col + 6] = (0x02, 0, 0, 0, 0x01, 0x01)
    b[:, col + 5] = rng.integers(1, 255, n, dtype=np.uint8)
    b[:, col + 6 : col + 12] = (0x02, 0, 0, 0, 0x02, 0x01)
    b[:, col + 11] = rng.integers(1, 255, n, dtype=np.uint8)
    put16(b, col + 12, ethertype)


def fill_ipv4(b, col, total_len, proto, src, dst, rng) -> None:
    n = b.shape[0]
    b[:, col] = 0x45
    b[:, col + 1] = 0
    put16(b, col + 2, total_len)
    put16(b, col + 4, rng.integers(0, 65536, n))
    b[:, col + 6] = 0x40  # DF
    b[:, col + 7] = 0
    b[:, col + 8] = 64
    b[:, col + 9] = proto
    b[:, col + 10 : col + 12] = 0
    b[:, col + 12 : col + 16] = src
    b[:, col + 16 : col + 20] = dst


def fill_ipv6(b, col, payload_len, nh, src, dst, rng) -> None:
    n = b.shape[0]
    put32(b, col, (6 << 28) | rng.integers(0, 1 << 20, n))
    put16(b, col + 4, payload_len)
    b[:, col + 6] = nh
    b[:, col + 7] = 64
    b[:, col + 8 : col + 24] = src
    b[:, col + 24 : col + 40] = dst


def fill_tcp(b, col, flows: Flows, f, seq) -> None:
    put16(b, col, flows.sport[f])
    put16(b, col + 2, flows.dport[f])
    put32(b, col + 4, seq)
    put32(b, col + 8, flows.ack[f])
    b[:, col + 12] = 0x50
    b[:, col + 13] = 0x18  # PSH|ACK
    put16(b, col + 14, flows.win[f])
    b[:, col + 16 : col + 20] = 0


def fill_udp(b, col, sport, dport, length) -> None:
    put16(b, col, sport)
    put16(b, col + 2, dport)
    put16(b, col + 4, length)
    b[:, col + 6 : col + 8] = 0


# ---------------------------------------------------------------------------------------------


class Generator:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        # Payload bytes come from a random pool sliced at random offsets.
        self.pool = rng.integers(0, 256, 48 * 2**20 + CHUNK * W, dtype=np.uint8)
        self.mat = np.empty((CHUNK, W), np.uint8)
        self.outm = np.empty((CHUNK, W), np.uint8)
        self.flows = {
            TCP4: Flows(rng, 16384, False),
            TCP6: Flows(rng, 4096, True),
            VXLAN: Flows(rng, 4096, False, client4=[(192, 0, 2)], server4=[(192, 0, 2)]),
        }
        self.ts_us = 1_700_000_000 * 1_000_000

    # -- one chunk ------------------------------------------------------------------------
    def chunk(self, keep: int, first_frame: int):
        """Build a full chunk and keep its first `keep` packets in capture order.

        Return (bytes to write, truth arrays, class counts, frame bytes). Always building CHUNK
        packets makes a capture of N packets a prefix of any longer one with the same seed.
        """
        rng = self.rng
        n = CHUNK
        counts = rng.multinomial(n, CLASS_P)
        bounds = np.r_[0, np.cumsum(counts)]
        mat = self.mat[:n]
        o = int(rng.integers(0, self.pool.shape[0] - n * W))
        mat[...] = self.pool[o : o + n * W].reshape(n, W)

        lens = np.empty(n, np.int64)
        for c in range(6):
            a, z = bounds[c], bounds[c + 1]
            mix = MIX_UDP if c in (UDP4, UDP6) else MIX_ICMP if c == ICMP else MIX_TCP
            lens[a:z] = sample_lengths(rng, z - a, mix, MIN_LEN[c])
        end = R + lens
        mask = COLS[None, :] < end[:, None]
        np.multiply(mat, mask, out=mat)  # zeros after each frame: they add nothing to sums
        mat[:, :R] = 0

        blk = {c: (bounds[c], bounds[c + 1]) for c in range(6)}
        words = mat.view("<u2")

        # Per-row fault plan.
        l4err = rng.random(n) < P_L4_ERR
        cls = np.repeat(np.arange(6), counts)
        can_partial = cls != ICMP
        partial = l4err & can_partial & (rng.random(n) < 0.5 / (1 - CLASS_P[ICMP]))
        flip = l4err & ~partial
        has_v4 = (cls != TCP6) & (cls != UDP6)
        iperr = has_v4 & (rng.random(n) < P_IP_ERR)
        vx_zero = np.zeros(n, bool)
        a, z = blk[VXLAN]
        vx_zero[a:z] = rng.random(z - a) < P_VX_ZERO
        # VXLAN: fault on the inner packet or (when the outer sum is not 0) on the outer one.
        vx_outer = np.zeros(n, bool)
        vx_outer[a:z] = ~vx_zero[a:z] & (rng.random(z - a) < 0.5)
        ip_inner = np.zeros(n, bool)
        ip_inner[a:z] = rng.random(z - a) < 0.5

        # ---- fill headers -------------------------------------------------------------------
        for c in (TCP4, TCP6):
            a, z = blk[c]
            b = mat[a:z]
            m = z - a
            if not m:
                continue
            v6 = c == TCP6
            l4 = L4_6 if v6 else L4_4
            fl = self.flows[c]
            f, seq = fl.take(rng, lens[a:z] - HDR_LEN[c])
            fill_eth(b, R, 0x86DD if v6 else 0x0800, rng)
            if v6:
                fill_ipv6(b, IP, lens[a:z] - 54, 6, fl.src[f], fl.dst[f], rng)
            else:
                fill_ipv4(b, IP, lens[a:z] - 14, 6, fl.src[f], fl.dst[f], rng)
            fill_tcp(b, l4, fl, f, seq)

        for c in (UDP4, UDP6):
            a, z = blk[c]
            b = mat[a:z]
            m = z - a
            if not m:
                continue
            v6 = c == UDP6
            l4 = L4_6 if v6 else L4_4
            fill_eth(b, R, 0x86DD if v6 else 0x0800, rng)
            if v6:
                fill_ipv6(b, IP, lens[a:z] - 54, 17, ipv6_addrs(rng, m, 1), ipv6_addrs(rng, m, 2), rng)
            else:
                fill_ipv4(b, IP, lens[a:z] - 14, 17, ipv4_addrs(rng, m, CLIENTS4), ipv4_addrs(rng, m, SERVERS4), rng)
            # No well-known or tunnel ports: src ephemeral, dst 20000-29999.
            fill_udp(b, l4, rng.integers(32768, 61000, m), rng.integers(20000, 30000, m), lens[a:z] - (l4 - R))

        a, z = blk[ICMP]
        if z > a:
            b = mat[a:z]
            m = z - a
            fill_eth(b, R, 0x0800, rng)
            fill_ipv4(b, IP, lens[a:z] - 14, 1, ipv4_addrs(rng, m, CLIENTS4), ipv4_addrs(rng, m, SERVERS4), rng)
            b[:, L4_4] = np.where(rng.random(m) < 0.5, 8, 0)  # echo request / reply
            b[:, L4_4 + 1 : L4_4 + 4] = 0
            put16(b, L4_4 + 4, rng.integers(1, 65536, m))
            put16(b, L4_4 + 6, rng.integers(0, 65536, m))

        a, z = blk[VXLAN]
        if z > a:
            b = mat[a:z]
            m = z - a
            L = lens[a:z]
            fill_eth(b, R, 0x0800, rng)
            vtep = lambda k: np.column_stack(
                [np.full((m, 3), (198, 51, 100), np.uint8), rng.integers(k, k + 16, m).astype(np.uint8)]
            )
            fill_ipv4(b, IP, L - 14, 17, vtep(1), vtep(101), rng)
            fill_udp(b, L4_4, rng.integers(49152, 65536, m), VXLAN_PORT, L - 34)
            b[:, VXH : VXH + 8] = 0
            b[:, VXH] = 0x08
            put32(b, VXH + 4, (rng.integers(100, 116, m) << 8))
            fl = self.flows[VXLAN]
            f, seq = fl.take(rng, L - HDR_LEN[VXLAN])
            fill_eth(b, IETH, 0x0800, rng)
            fill_ipv4(b, IIP, L - 64, 6, fl.src[f], fl.dst[f], rng)
            fill_tcp(b, IL4, fl, f, seq)

        # ---- stage A: inner checksums of VXLAN, then inner faults ---------------------------
        a, z = blk[VXLAN]
        if z > a:
            b, wv, L = mat[a:z], words[a:z], lens[a:z]
            wv[:, (IIP + IP_CSUM) // 2] = ~fold(wsum(wv, IIP, IIP + 20)) & 0xFFFF
            self._l4_sum(wv, L, IIP, False, 6, IL4, TCP_CSUM, udp=False)
            inner = l4err[a:z] & ~vx_outer[a:z]
            self._fault(b, wv, L, inner & partial[a:z], inner & flip[a:z], IIP, False, 6, IL4, TCP_CSUM, IL4 + 20)
            self._ip_fault(b, iperr[a:z] & ip_inner[a:z], IIP)

        # ---- stage B: all depth-0 checksums ----------------------------------------------
        for c in (TCP4, TCP6, UDP4, UDP6, ICMP, VXLAN):
            a, z = blk[c]
            if z == a:
                continue
            wv, L = words[a:z], lens[a:z]
            v6 = c in (TCP6, UDP6)
            l4 = L4_6 if v6 else L4_4
            if not v6:
                wv[:, (IP + IP_CSUM) // 2] = ~fold(wsum(wv, IP, IP + 20)) & 0xFFFF
            if c in (TCP4, TCP6):
                self._l4_sum(wv, L, IP, v6, 6, l4, TCP_CSUM, udp=False)
            elif c in (UDP4, UDP6):
                self._l4_sum(wv, L, IP, v6, 17, l4, UDP_CSUM, udp=True)
            elif c == ICMP:
                wv[:, (l4 + ICMP_CSUM) // 2] = ~fold(wsum(wv, l4, W)) & 0xFFFF
            else:  # VXLAN outer UDP, unless it stays 0
                nz = ~vx_zero[a:z]
                self._l4_sum(wv, L, IP, False, 17, l4, UDP_CSUM, udp=True, rows=nz)

        # ---- stage C: depth-0 faults -------------------------------------------------------
        for c in (TCP4, TCP6, UDP4, UDP6, ICMP, VXLAN):
            a, z = blk[c]
            if z == a:
                continue
            b, wv, L = mat[a:z], words[a:z], lens[a:z]
            v6 = c in (TCP6, UDP6)
            l4 = L4_6 if v6 else L4_4
            sel = slice(a, z)
            if c == VXLAN:
                outer = l4err[sel] & vx_outer[sel]
                # Outer flips hit the outer checksum field, the VNI or the inner payload.
                self._fault(b, wv, L, outer & partial[sel], outer & flip[sel], IP, False, 17, l4, UDP_CSUM,
                            VXH + 4, pay_hi=VXH + 7, alt_lo=IL4 + 20)
                self._ip_fault(b, iperr[sel] & ~ip_inner[sel], IP)
                continue
            if c in (TCP4, TCP6):
                proto, cs, hl = 6, TCP_CSUM, 20
            elif c in (UDP4, UDP6):
                proto, cs, hl = 17, UDP_CSUM, 8
            else:
                proto, cs, hl = 1, ICMP_CSUM, 8
            self._fault(b, wv, L, partial[sel], flip[sel], IP, v6, proto, l4, cs, l4 + hl)
            if not v6:
                self._ip_fault(b, iperr[sel], IP)

        # ---- verify everything from the final bytes: the truth -------------------------------
        perm = rng.permutation(n)
        inv = np.empty(n, np.int64)
        inv[perm] = np.arange(n)
        frame_of = first_frame + inv  # frame number of each block row
        truth = self._verify(words, lens, blk, frame_of)
        if keep < n:
            k = truth[0] < first_frame + keep
            truth = tuple(t[k] for t in truth)
            counts = np.bincount(np.repeat(np.arange(6), counts)[inv < keep], minlength=6)

        # ---- record headers, capture order, gather -----------------------------------------
        outm = self.outm[:n]
        np.take(mat, perm, axis=0, out=outm)
        plens = lens[perm]
        ts = self.ts_us + np.arange(n, dtype=np.int64) * 5 + rng.integers(0, 5, n)
        self.ts_us += n * 5
        hdr = np.empty((n, 4), "<u4")
        hdr[:, 0] = ts // 1_000_000
        hdr[:, 1] = ts % 1_000_000
        hdr[:, 2] = plens
        hdr[:, 3] = plens
        outm[:, :R] = hdr.view(np.uint8).reshape(n, R)
        outm, plens = outm[:keep], plens[:keep]
        data = outm[COLS[None, :] < (R + plens)[:, None]]
        return data, truth, counts, int(plens.sum())

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _l4_sum(wv, L, ipcol, v6, proto, l4, csoff, udp, rows=None):
        """Compute and store the L4 checksum (field currently 0) of the rows selected."""
        if rows is not None:
            idx = np.flatnonzero(rows)
            if not idx.size:
                return
            sub = wv[idx]
        else:
            sub = wv
        l4len = L if rows is None else L[idx]
        l4len = l4len + R - l4
        s = wsum(sub, l4, W) + pseudo_le(sub, ipcol, v6, proto, l4len)
        c = ~fold(s) & 0xFFFF
        if udp:
            c[c == 0] = 0xFFFF
        if rows is None:
            wv[:, (l4 + csoff) // 2] = c
        else:
            wv[idx, (l4 + csoff) // 2] = c

    def _fault(self, b, wv, L, part, flp, ipcol, v6, proto, l4, csoff, pay_lo, pay_hi=None, alt_lo=None):
        """Apply partial sums and bit flips to the selected rows (after the sum was computed).

        Bit flips: half in the checksum field, half in a byte from [pay_lo, pay_hi or frame end);
        with alt_lo, half of the non-checksum flips go to [alt_lo, frame end) instead.
        """
        rng = self.rng
        idx = np.flatnonzero(part)
        if idx.size:
            if proto == 1:
                raise AssertionError("ICMP has no pseudo-header")
            l4len = L[idx] + R - l4
            wv[idx, (l4 + csoff) // 2] = fold(pseudo_le(wv[idx], ipcol, v6, proto, l4len))
        idx = np.flatnonzero(flp)
        if idx.size:
            m = idx.size
            hi = (R + L[idx]) if pay_hi is None else np.full(m, pay_hi)
            lo = np.full(m, pay_lo)
            if alt_lo is not None:
                alt = rng.random(m) < 0.5
                lo = np.where(alt, alt_lo, lo)
                hi = np.where(alt, R + L[idx], hi)
            col = rng.integers(lo, hi)
            in_field = rng.random(m) < 0.5
            col = np.where(in_field, l4 + csoff + rng.integers(0, 2, m), col)
            b[idx, col] ^= (1 << rng.integers(0, 8, m)).astype(np.uint8)

    def _ip_fault(self, b, sel, ipcol):
        """Flip one bit of the IPv4 header checksum or identification field."""
        rng = self.rng
        idx = np.flatnonzero(sel)
        if not idx.size:
            return
        m = idx.size
        col = np.where(rng.random(m) < 0.5, ipcol + IP_CSUM, ipcol + 4) + rng.integers(0, 2, m)
        b[idx, col] ^= (1 << rng.integers(0, 8, m)).astype(np.uint8)

    def _verify(self, words, lens, blk, frame_of):
        """Classify every checksum from the final bytes; return non-ok rows as 4 arrays."""
        out_f, out_l, out_d, out_s = [], [], [], []

        def emit(a, status, layer, depth):
            nz = np.flatnonzero(status != S_OK)
            if nz.size:
                out_f.append(frame_of[a + nz])
                out_l.append(np.full(nz.size, layer, np.uint8))
                out_d.append(np.full(nz.size, depth, np.uint8))
                out_s.append(status[nz].astype(np.uint8))

        def ip_status(wv, ipcol, l4status):
            ok = fold(wsum(wv, ipcol, ipcol + 20)) == 0xFFFF
            stored = wv[:, (ipcol + IP_CSUM) // 2]
            st = np.where(ok, S_OK, np.where((stored == 0) & (l4status == S_PARTIAL), S_PARTIAL, S_BAD))
            return st

        def l4_status(wv, L, ipcol, v6, proto, l4, csoff, dport=None):
            stored = wv[:, (l4 + csoff) // 2].astype(np.uint64)
            if proto == 1:
                ok = fold(wsum(wv, l4, W)) == 0xFFFF
                return np.where(ok, S_OK, S_BAD)
            l4len = L + R - l4
            ph = pseudo_le(wv, ipcol, v6, proto, l4len)
            ok = fold(wsum(wv, l4, W) + ph) == 0xFFFF
            st = np.where(ok, S_OK, np.where(stored == fold(ph), S_PARTIAL, S_BAD))
            if proto == 17:
                if v6:
                    zs = np.where(np.isin(dport, TUNNEL_PORTS), S_ZERO_ALLOWED, S_ZERO_INVALID)
                else:
                    zs = S_ZERO_ALLOWED
                st = np.where(stored == 0, zs, st)
            return st

        for c in range(6):
            a, z = blk[c]
            if z == a:
                continue
            wv, L = words[a:z], lens[a:z]
            v6 = c in (TCP6, UDP6)
            l4 = L4_6 if v6 else L4_4
            if c in (TCP4, TCP6):
                s4 = l4_status(wv, L, IP, v6, 6, l4, TCP_CSUM)
                emit(a, s4, L_TCP, 0)
            elif c in (UDP4, UDP6):
                dport = bswap16(wv[:, (l4 + 2) // 2].astype(np.int64))
                s4 = l4_status(wv, L, IP, v6, 17, l4, UDP_CSUM, dport)
                emit(a, s4, L_UDP, 0)
            elif c == ICMP:
                s4 = l4_status(wv, L, IP, False, 1, l4, ICMP_CSUM)
                emit(a, s4, L_ICMP, 0)
            else:
                s4 = l4_status(wv, L, IP, False, 17, l4, UDP_CSUM)
                emit(a, s4, L_UDP, 0)
                si = l4_status(wv, L, IIP, False, 6, IL4, TCP_CSUM)
                emit(a, si, L_TCP, 1)
                emit(a, ip_status(wv, IIP, si), L_IPV4, 1)
            if not v6:
                emit(a, ip_status(wv, IP, s4), L_IPV4, 0)
        if not out_f:
            e = np.empty(0, np.uint8)
            return np.empty(0, np.int64), e, e, e
        return (np.concatenate(out_f), np.concatenate(out_l), np.concatenate(out_d), np.concatenate(out_s))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=2_000_000, help="number of packets (default 2,000,000)")
    ap.add_argument("--out", required=True, help="pcap file to write (truth goes to FILE.truth.csv/.json)")
    ap.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    g = Generator(args.seed)
    truth_parts = []
    class_counts = np.zeros(6, np.int64)
    frame_bytes = 0
    done = 0
    with open(args.out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        while done < args.packets:
            n = min(CHUNK, args.packets - done)
            data, truth, counts, fb = g.chunk(n, done + 1)
            f.write(memoryview(data))
            truth_parts.append(truth)
            class_counts += counts
            frame_bytes += fb
            done += n
    file_bytes = os.path.getsize(args.out)

    fr = np.concatenate([t[0] for t in truth_parts]) if truth_parts else np.empty(0, np.int64)
    la = np.concatenate([t[1] for t in truth_parts]) if truth_parts else np.empty(0, np.uint8)
    de = np.concatenate([t[2] for t in truth_parts]) if truth_parts else np.empty(0, np.uint8)
    st = np.concatenate([t[3] for t in truth_parts]) if truth_parts else np.empty(0, np.uint8)
    order = np.lexsort((de, la, fr))
    fr, la, de, st = fr[order], la[order], de[order], st[order]
    with open(args.out + ".truth.csv", "w", newline="") as tf:
        w = csv.writer(tf)
        w.writerow(["frame", "layer", "depth", "status"])
        for row in zip(fr.tolist(), la.tolist(), de.tolist(), st.tolist()):
            w.writerow([row[0], LAYERS[row[1]], row[2], STATUSES[row[3]]])

    by_status: dict[str, int] = {}
    by_key: dict[str, int] = {}
    for l_, d_, s_ in zip(la.tolist(), de.tolist(), st.tolist()):
        by_status[STATUSES[s_]] = by_status.get(STATUSES[s_], 0) + 1
        k = f"{LAYERS[l_]}/{d_}/{STATUSES[s_]}"
        by_key[k] = by_key.get(k, 0) + 1
    elapsed = time.perf_counter() - t0
    meta = {
        "file": os.path.abspath(args.out),
        "packets": int(done),
        "file_bytes": int(file_bytes),
        "frame_bytes": int(frame_bytes),
        "mean_frame_bytes": round(frame_bytes / max(done, 1), 1),
        "seed": args.seed,
        "chunk": CHUNK,
        "classes": {CLASS_NAMES[i]: int(class_counts[i]) for i in range(6)},
        "vxlan_outer_udp_zero": by_key.get("udp/0/zero-allowed", 0),
        "statuses": dict(sorted(by_status.items())),
        "by_layer_depth_status": dict(sorted(by_key.items())),
        "errors": sum(v for k, v in by_status.items() if k in ("bad", "partial", "zero-invalid")),
        "frames_with_errors": int(np.unique(fr[np.isin(st, (S_BAD, S_PARTIAL, S_ZERO_INVALID))]).size),
        "generation_seconds": round(elapsed, 2),
    }
    with open(args.out + ".truth.json", "w") as jf:
        json.dump(meta, jf, indent=2)
        jf.write("\n")
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
