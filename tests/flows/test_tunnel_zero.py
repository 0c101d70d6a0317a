"""Zero outer UDP checksums on VXLAN/Geneve as a performance note (KB-016; known-issues-2 E).

Captures are built with scapy (an independent builder); the counts per tunnel are checked against
tshark's reading of the outer UDP checksum field, and against how the frames were built.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from flowkit import Facts, analyze, of_kind, tshark
from scapy.all import IP, TCP, UDP, VXLAN, Ether, IPv6, Raw, wrpcap
from scapy.contrib.geneve import GENEVE

from badsum.analyze import ScanConfig, Scanner
from badsum.capture import open_capture
from badsum.flows.analyzer import Limits
from badsum.flows.facts import IPF_UDP_TUNNEL
from badsum.flows.symptom import Kind, Severity

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
N1, N2, N3, N4 = "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"
V6A, V6B = "2001:db8:1::1", "2001:db8:1::2"


def _inner(src: str, dst: str, seq: int) -> Ether:
    # TCP data segments, no SYN: the only symptom the capture may give is the note itself
    return Ether(**MAC) / IP(src=src, dst=dst) / TCP(sport=40000, dport=80, flags="PA", seq=seq, ack=1) / Raw(b"x" * 64)


def _outer(src: str, dst: str, dport: int, zero: bool, inner: Ether, sport: int = 50000, v6: bool = False) -> Ether:
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    enc = VXLAN(vni=1) if dport != 6081 else GENEVE(vni=7, proto=0x6558)
    p = Ether(bytes(Ether(**MAC) / ip / UDP(sport=sport, dport=dport) / enc / inner))
    if zero:
        p[UDP].chksum = 0
        p = Ether(bytes(p))
    return p


def build(path: Path) -> dict:
    """Tunnels and what each must report: {(outer src, outer dst, port): (zero, nonzero)}."""
    pkts = []
    seq = 1
    # flannel noudpcsum node1 -> node2: 6 zero, and 2 of the same inner hosts with a checksum
    # (a sender whose setting changed); varying source ports (the inner flow hash) are one tunnel
    for i in range(6):
        pkts.append(_outer(N1, N2, 8472, True, _inner("10.244.1.2", "10.244.2.3", seq), sport=40000 + i))
        seq += 100
    for i in range(2):
        pkts.append(_outer(N1, N2, 8472, False, _inner("10.244.1.2", "10.244.2.3", seq)))
        seq += 100
    # the reverse direction is its own tunnel: 3 zero
    for _ in range(3):
        pkts.append(_outer(N2, N1, 8472, True, _inner("10.244.2.3", "10.244.1.2", seq)))
        seq += 100
    # Geneve with checksums (udpcsum): no note
    for _ in range(4):
        pkts.append(_outer(N3, N4, 6081, False, _inner("10.0.3.1", "10.0.4.1", seq)))
        seq += 100
    # Geneve zero over IPv4: a note for Geneve too
    for _ in range(2):
        pkts.append(_outer(N4, N3, 6081, True, _inner("10.0.4.1", "10.0.3.1", seq)))
        seq += 100
    # VXLAN over IPv6 with a zero sum: allowed for tunnels (RFC 6935), dropped unless udp6zerocsumrx
    pkts.append(_outer(V6A, V6B, 4789, True, _inner("10.9.0.1", "10.9.0.2", seq), v6=True))
    wrpcap(str(path), pkts)
    return {(N1, N2, 8472): (6, 2), (N2, N1, 8472): (3, 0), (N4, N3, 6081): (2, 0), (V6A, V6B, 4789): (1, 0)}


def scan(path: Path, chunk: int = 1 << 16) -> list:
    with open_capture(path, chunk_size=chunk) as reader:
        return Scanner(ScanConfig()).run(reader).symptoms


def test_zero_outer_sums_per_tunnel_match_tshark(tmp_path: Path) -> None:
    cap = tmp_path / "zero.pcap"
    want = build(cap)
    notes = of_kind(scan(cap), Kind.TUNNEL_ZERO_CSUM)
    got = {(s.flow.src, s.flow.dst, s.flow.dport): (s.details["zero"], s.details["nonzero"]) for s in notes}
    assert got == want
    # The oracle: tshark's own reading of the outermost UDP header's checksum field.
    zeros: Counter = Counter()
    for src, src6, dst, dst6, port, csum in tshark(cap, "udp", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "udp.dstport", "udp.checksum"):
        # IPv6 appears here only as an outer header (the inner packets are IPv4)
        outer_src, outer_dst = (src6 or src).split(",")[0], (dst6 or dst).split(",")[0]
        if int(csum.split(",")[0], 16) == 0:
            zeros[(outer_src, outer_dst, int(port.split(",")[0]))] += 1
    assert {k: z for k, (z, _) in got.items()} == dict(zeros)
    for s in notes:
        assert s.severity is Severity.INFO and [c.id for c in s.likely_causes] == ["KB-016"]
        assert s.details["impact"] == "performance" and "udpcsum" in s.details["remedy"] and "tunnelCsum" in s.summary
        assert s.count == s.details["zero"] and s.depth == 0 and s.flow.proto == 17
        assert all("0x0000" in e.text for e in s.evidence) and 1 <= len(s.evidence) <= 3
    by = {(s.flow.src, s.flow.dport): s for s in notes}
    assert by[(N1, 8472)].details["tunnel"] == "vxlan" and by[(N4, 6081)].details["tunnel"] == "geneve"
    v6 = by[(V6A, 4789)]
    assert v6.details.get("udp6zerocsumrx_needed") is True and "udp6zerocsumrx" in v6.summary
    assert "udp6zerocsumrx" not in by[(N1, 8472)].summary
    # no other symptom: a zero outer sum is not a fault
    assert [s.kind for s in scan(cap)] == [Kind.TUNNEL_ZERO_CSUM] * 4


def test_same_counts_in_small_batches(tmp_path: Path) -> None:
    cap = tmp_path / "zero.pcap"
    build(cap)
    key = lambda ss: sorted((s.flow.src, s.flow.dst, s.details["zero"], s.details["nonzero"]) for s in ss)
    assert key(of_kind(scan(cap, chunk=256), Kind.TUNNEL_ZERO_CSUM)) == key(of_kind(scan(cap), Kind.TUNNEL_ZERO_CSUM))


def test_quiet_with_checksums_and_bad_ones_stay_failures(tmp_path: Path) -> None:
    cap = tmp_path / "sums.pcap"
    pkts = [_outer(N1, N2, 8472, False, _inner("10.244.1.2", "10.244.2.3", 1 + 100 * i)) for i in range(5)]
    bad = Ether(bytes(pkts[0]))
    bad[UDP].chksum ^= 0x0101
    pkts.append(Ether(bytes(bad)))
    wrpcap(str(cap), pkts)
    out = scan(cap)
    assert of_kind(out, Kind.TUNNEL_ZERO_CSUM) == []
    [t] = of_kind(out, Kind.TUNNEL_OUTER_CSUM)
    assert t.severity is Severity.FAIL and t.count == 1
    # a plain (untunnelled) UDP datagram with a zero sum is RFC 768's "no checksum", not a tunnel note
    plain = tmp_path / "plain.pcap"
    u = Ether(bytes(Ether(**MAC) / IP(src=N1, dst=N2) / UDP(sport=5353, dport=53) / Raw(b"q" * 20)))
    u[UDP].chksum = 0
    wrpcap(str(plain), [Ether(bytes(u))])
    assert scan(plain) == []


def test_synthetic_facts_and_bounds() -> None:
    f = Facts()
    for i in range(4):
        fr = f.add("10.1.0.1", "10.2.0.1", t=i, proto=17, sport=1, dport=2, depth=1, ip_flags=IPF_UDP_TUNNEL)
        f.outer_bad(fr, N1, N2, 33000 + i, 8472)
    facts, rows = f.arrays()
    rows["status"] = 3  # zero-allowed
    for limits in (None, Limits(tunnels=1, tunnel_pairs=1)):
        [s] = of_kind(analyze(facts, rows, batch=3, limits=limits), Kind.TUNNEL_ZERO_CSUM)
        assert (s.details["zero"], s.details["nonzero"], s.first_frame, s.last_frame) == (4, 0, 1, 4)


@pytest.mark.parametrize("kind", list(Kind), ids=[k.value for k in Kind])
def test_every_kind_documented(kind: Kind) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "symptoms.md").read_text()
    assert f"### `{kind.value}`" in docs
