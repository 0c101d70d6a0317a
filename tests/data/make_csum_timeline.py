#!/usr/bin/env python3
"""Write tests/data/csum-timeline.pcap: 40 s of TCP and UDP over IPv4 whose bad and partial
checksums come and go, for `pcap --html`'s chart of them over time (tests/report/test_timeline.py
checks it against tshark).

Built with scapy (an independent packet builder; no badsum code), seeded, so the file is the
same every run. Good traffic throughout; TCP with a wrong checksum now and then in the first
10 s; a burst of TCP whose checksum is the pseudo-header sum alone (what a sender with transmit
offload pending leaves: badsum calls it partial, tshark bad) at 10-12 s; UDP and IPv4 header
checksums gone wrong at 20-25 s. Some packets fall exactly on half-second boundaries, where a
binning that rounds the wrong way would show.

    python3 tests/data/make_csum_timeline.py [OUT.pcap]
"""

from __future__ import annotations

import random
import sys
from decimal import Decimal
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

OUT = Path(__file__).resolve().parent / "csum-timeline.pcap"
T0 = 1_790_000_000
A, B = "192.0.2.10", "198.51.100.20"


def pseudo_sum(src: str, dst: str, proto: int, length: int) -> int:
    """The folded one's-complement sum of the IPv4 pseudo-header (RFC 793 3.1), not inverted:
    what Linux leaves in the field for the device to finish (CHECKSUM_PARTIAL)."""
    words = [int(x) for x in src.split(".")] + [int(x) for x in dst.split(".")]
    s = (words[0] << 8 | words[1]) + (words[2] << 8 | words[3]) + (words[4] << 8 | words[5]) + (words[6] << 8 | words[7])
    s += proto + length
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def tcp(sport: int, seq: int, payload: bytes) -> Ether:
    return (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B)
            / TCP(sport=sport, dport=80, seq=seq, flags="PA") / payload)  # fmt: skip


def udp(sport: int, payload: bytes) -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / UDP(sport=sport, dport=53) / payload


def with_field(pkt: Ether, layer: type, value: int) -> Ether:
    """The packet with its checksums computed, then `layer`'s checksum field set to `value`."""
    built = Ether(bytes(pkt))
    built[layer].chksum = value
    return Ether(bytes(built))


def main(out: Path) -> None:
    rnd = random.Random(15)
    frames: list[tuple[float, Ether]] = []
    t = 0.0
    while t < 40.0:
        payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
        p = tcp(40000 + rnd.randrange(100), rnd.randrange(2**32), payload) if rnd.random() < 0.6 else udp(50000 + rnd.randrange(100), payload)
        roll = rnd.random()
        if t < 10 and roll < 0.05 and TCP in p:
            good = Ether(bytes(p))[TCP].chksum
            p = with_field(p, TCP, good ^ 0x0101)
        elif 10 <= t < 12 and TCP in p:
            p = with_field(p, TCP, pseudo_sum(A, B, 6, 20 + len(payload)))
        elif 20 <= t < 25 and roll < 0.3:
            if UDP in p:
                p = with_field(p, UDP, Ether(bytes(p))[UDP].chksum ^ 0x00FF or 1)
            else:
                p = with_field(p, IP, Ether(bytes(p))[IP].chksum ^ 0x1000)
        frames.append((t, Ether(bytes(p))))
        # On a half-second boundary now and then, else a random step of up to 80 ms (µs resolution).
        t = round(t + rnd.randrange(1, 80_000) / 1e6, 6)
        if rnd.random() < 0.02:
            t = float(int(t * 2) + 1) / 2
    for ts, f in frames:
        f.time = Decimal(T0) + Decimal(f"{ts:.6f}")  # exact to the µs: a float would round
    wrpcap(str(out), [f for _, f in frames])
    print(f"{out}: {len(frames)} packets over {frames[-1][0]:.3f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
