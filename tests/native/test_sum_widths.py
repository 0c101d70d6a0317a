"""The checksum scan's one's complement sum (fs_common.h csum_be: a scalar loop, and 64 bytes at a
time where the CPU has AVX2) against the detailed decoder, over every length around the widths
the two loops take and at every alignment of the packet in the buffer."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw, raw

from badsum.checksum.detailed import DetailedJudge
from badsum.native import _fastscan
from badsum.scan.batch import Batch
from badsum.scan.fast import FastScanner
from badsum.scan.rows import verdicts_to_rows

KEY = ["frame", "layer", "depth", "status", "offset", "stored", "computed", "flags", "extra", "ipver", "proto", "sport", "dport", "src", "dst"]


MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}  # no ARP lookup by scapy


def _frames() -> list[bytes]:
    rng = random.Random(1071)
    lengths = [*range(0, 300), *range(1400, 1461), 8000, 9000 - 1, 65000]
    out = []
    for i, n in enumerate(lengths):
        payload = bytes(rng.getrandbits(8) for _ in range(n))
        if i % 3 == 0:
            pkt = Ether(**MAC) / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=2) / payload
        elif i % 3 == 1:
            pkt = Ether(**MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=3, dport=4) / payload
        else:
            pkt = Ether(**MAC) / IP(src="192.0.2.3", dst="192.0.2.4") / UDP(sport=5, dport=6) / payload
        data = bytearray(raw(pkt))
        if i % 2 and n:  # every other one corrupted, at a random byte of the payload
            data[len(data) - 1 - rng.randrange(n)] ^= 1 << rng.randrange(8)
        out.append(bytes(data))
    return out


def test_sums_agree_at_every_length_and_alignment() -> None:
    frames = _frames()
    # Each frame starts at a different alignment: 0..63 bytes of filler before it.
    buf, offs = bytearray(), []
    for i, f in enumerate(frames):
        buf += b"\xee" * (i % 64)
        offs.append(len(buf))
        buf += f
    n = len(frames)
    lens = np.array([len(f) for f in frames], np.uint32)
    batch = Batch(bytes(buf), 1, np.array(offs, np.int64), lens, lens.copy(), np.zeros(n, np.int64),
                  np.ones(n, np.uint16), np.zeros(n, np.uint32), np.full(n, 0xFFFFFFFF, np.uint32),
                  np.zeros(n, np.uint8), np.zeros(n, np.int64))  # fmt: skip
    fast = FastScanner().scan(batch)
    assert len(fast.deferred) == 0
    judge = DetailedJudge()
    slow = verdicts_to_rows([v for i, f in enumerate(frames) for v in judge.judge(i + 1, 0, f, len(f), 1).verdicts])
    assert sorted(map(tuple, fast.issues[KEY].tolist())) == sorted(map(tuple, slow[KEY].tolist()))
    assert int(fast.counts.sum()) == sum(len(judge.judge(i + 1, 0, f, len(f), 1).verdicts) for i, f in enumerate(frames))
    assert len(fast.issues) >= n // 2 and _fastscan.ISSUE_SIZE == fast.issues.itemsize


@pytest.mark.parametrize("stored", [0x0000, 0xFFFF, 0x1234])
def test_an_all_zero_icmp_message_around_its_checksum(stored: int) -> None:
    """ICMP (no pseudo-header) of zero type, code, id, sequence and payload: the sum of everything
    but the field is 0, the one case where taking the field out by its complement gives 0xffff."""
    icmp = bytearray(64)
    icmp[2:4] = stored.to_bytes(2, "big")
    frame = raw(Ether(**MAC) / IP(src="192.0.2.1", dst="192.0.2.2", proto=1) / Raw(bytes(icmp)))
    n = 1
    lens = np.array([len(frame)], np.uint32)
    batch = Batch(frame, 1, np.zeros(1, np.int64), lens, lens.copy(), np.zeros(n, np.int64), np.ones(n, np.uint16),
                  np.zeros(n, np.uint32), np.full(n, 0xFFFFFFFF, np.uint32), np.zeros(n, np.uint8), np.zeros(n, np.int64))  # fmt: skip
    fast = FastScanner().scan(batch)
    slow = DetailedJudge().judge(1, 0, frame, len(frame), 1).verdicts
    assert len(fast.deferred) == 0 and int(fast.counts.sum()) == len(slow) == 2
    assert sorted(map(tuple, fast.issues[KEY].tolist())) == sorted(map(tuple, verdicts_to_rows(slow)[KEY].tolist()))
    icmp_verdict = next(v for v in slow if v.layer.label == "icmp")
    assert icmp_verdict.computed == 0xFFFF and (icmp_verdict.status.label == "ok") == (stored == 0xFFFF)
