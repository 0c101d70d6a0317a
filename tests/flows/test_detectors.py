"""Symptom detectors on synthetic fact records: each case builds the packets a real stack would send
and says from first principles what must (and must not) be reported."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from flowkit import ACK, PSH, RST, SYN, Facts, analyze, of_kind
from support import REPO

from badsum.checksum.verdict import Status
from badsum.flows import facts as reference
from badsum.flows.analyzer import FlowAnalyzer, Limits
from badsum.flows.base import flow_keys, host_pair_keys
from badsum.flows.causes import CAUSES
from badsum.flows.facts import FACTS_DTYPE, IPF_UDP_TUNNEL
from badsum.flows.symptom import Kind, Severity
from badsum.flows.syn import ladder_pattern

C, SV = "198.51.100.1", "203.0.113.9"


def ladder(f: Facts, times: list[float], *, sport: int = 40000, seq: int = 1000, src: str = C, dst: str = SV) -> None:
    for t in times:
        f.add(src, dst, t=t, sport=sport, dport=80, flags=SYN, seq=seq)


def connect(f: Facts, t: float, *, sport: int = 40000, seq: int = 1000, src: str = C, dst: str = SV) -> None:
    f.add(dst, src, t=t, sport=80, dport=sport, flags=SYN | ACK, seq=5000, ack=seq + 1)
    f.add(src, dst, t=t + 0.0001, sport=sport, dport=80, flags=ACK, seq=seq + 1, ack=5001)


def test_classic_63_second_connect() -> None:
    f = Facts()
    times = [0, 1, 3, 7, 15, 31, 63]
    ladder(f, times)
    connect(f, 63.02)
    [s] = analyze(*f.arrays())
    assert s.kind is Kind.SYN_RETRIES and s.severity is Severity.FAIL and s.count == 6  # 63 s to connect: broken for its user
    assert s.details["pattern"] == "exponential" and s.details["outcome"] == "connected"
    assert s.details["gaps_s"] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0] and s.details["syns"] == 7
    assert s.details["connect_s"] == pytest.approx(63.02) and s.details["side"] == "client"
    assert s.summary == "connect took 63.0 s: 6 SYN retransmissions (1+2+4+8+16+32 s)"
    assert s.flow.src == C and s.flow.dport == 80
    assert "KB-004" in [c.id for c in s.likely_causes]
    assert [e.frame for e in s.evidence][:7] == list(range(1, 8))


def test_linear_then_exponential_never_answered() -> None:
    f = Facts()
    ladder(f, [0, 1, 2, 3, 4, 5, 7, 11])  # tcp_syn_linear_timeouts=4: 1 s steps, then doubling
    [s] = analyze(*f.arrays())
    assert s.details["pattern"] == "linear-then-exponential" and s.details["outcome"] == "unanswered"
    assert s.severity is Severity.FAIL and s.details["connect_s"] is None and s.count == 7


def test_one_second_delay() -> None:
    f = Facts()
    ladder(f, [0, 1.0])
    connect(f, 1.01)
    [s] = analyze(*f.arrays())
    assert s.count == 1 and "1-second delay" in s.summary and s.details["connect_s"] == pytest.approx(1.01)
    assert s.severity is Severity.WARN  # one lost SYN: worth a look, not an alarm


def test_patterns() -> None:
    assert ladder_pattern([0.035, 0.07, 0.14, 0.28]) == "rtt-backoff"
    assert ladder_pattern([1, 1, 1]) == "linear"
    assert ladder_pattern([3, 6, 12]) == "exponential"
    assert ladder_pattern([1, 5, 2]) == "irregular"
    assert ladder_pattern([1, 1, 2, 4]) == "linear-then-exponential"


def test_duplicates_with_one_timestamp_are_not_a_ladder() -> None:
    f = Facts()
    ladder(f, [5.0, 5.0, 5.0])  # the same SYN three times at one instant (zeek vlan-pcp-dei)
    for _ in range(3):
        f.add(SV, C, t=5.0002, sport=80, dport=40000, flags=SYN | ACK, seq=5000, ack=1001)
    for _ in range(3):
        f.add(C, SV, t=5.0003, sport=40000, dport=80, flags=ACK, seq=1001, ack=5001)
    assert analyze(*f.arrays()) == []


def test_two_capture_points_count_each_retransmission_once() -> None:
    f = Facts()
    for t in (0, 1, 3):
        f.add(C, SV, t=t, sport=40000, dport=80, flags=SYN, seq=1000)
        f.add(C, SV, t=t + 0.00002, sport=40000, dport=80, flags=SYN, seq=1000, depth=1)  # the same SYN inside VXLAN
    [s] = analyze(*f.arrays())
    assert s.count == 2 and s.details["duplicates"] == 3 and s.details["gaps_s"] == [1.0, 2.0]


def test_retransmission_after_success_is_not_a_ladder() -> None:
    f = Facts()
    ladder(f, [0])
    connect(f, 0.01)
    ladder(f, [3, 6])  # stale copies of the same SYN after the handshake completed
    assert analyze(*f.arrays()) == []


def test_refused_and_server_side() -> None:
    f = Facts()
    ladder(f, [0, 1])
    f.add(SV, C, t=1.01, sport=80, dport=40000, flags=RST | ACK, ack=1001)
    [s] = analyze(*f.arrays())
    assert s.details["outcome"] == "refused" and s.severity is Severity.FAIL
    g = Facts()
    ladder(g, [0])
    for t in (0.001, 1.001, 3.001):  # SYN-ACK lost on the way back (KB-004 seen from the server)
        g.add(SV, C, t=t, sport=80, dport=40000, flags=SYN | ACK, seq=5000, ack=1001)
    g.add(C, SV, t=3.002, sport=40000, dport=80, flags=ACK, seq=1001, ack=5001)
    [s] = analyze(*g.arrays())
    assert s.details["side"] == "server" and s.count == 2 and s.details["outcome"] == "connected"
    assert s.flow.src == C  # the flow is always client to server


def test_ladder_across_batches_and_new_isn() -> None:
    f = Facts()
    ladder(f, [0, 1, 3, 7])
    ladder(f, [20, 21], seq=777)  # a new connection attempt on the same ports: a new ladder
    out = analyze(*f.arrays(), batch=2)
    assert sorted(s.count for s in out) == [1, 3]


def test_syn_table_is_bounded() -> None:
    f = Facts()
    for i in range(50):
        ladder(f, [i * 0.01, 1 + i * 0.01], sport=20000 + i)
    out = analyze(*f.arrays(), limits=Limits(tcp_flows=8))
    stats = analyze.last.stats  # type: ignore[attr-defined]
    assert stats["tcp_flows_evicted"] == 42 and len(analyze.last.syn.table) <= 8  # type: ignore[attr-defined]
    assert len(out) == 50  # an evicted ladder is closed and still reported


def test_bad_retransmission_partial() -> None:
    f = Facts()
    f.add(C, SV, t=0, sport=40000, dport=80, flags=PSH | ACK, seq=0xFFFFFF00, payload=1000, status=Status.PARTIAL)
    f.add(C, SV, t=0.2, sport=40000, dport=80, flags=PSH | ACK, seq=0xFFFFFF00, payload=1000, status=Status.PARTIAL)
    f.add(C, SV, t=0.2, sport=40000, dport=80, flags=PSH | ACK, seq=0xFFFFFF00, payload=1000, status=Status.PARTIAL)  # dup
    f.add(C, SV, t=0.6, sport=40000, dport=80, flags=PSH | ACK, seq=0xFFFFFF00, payload=1000, status=Status.PARTIAL)
    f.add(C, SV, t=0.7, sport=40001, dport=80, flags=PSH | ACK, seq=5, payload=100, status=Status.PARTIAL)  # never resent
    # captured arriving (a receiver's interface), no checksum pending recorded: the receiver drops it
    [s] = analyze(*f.arrays(), direction=1)
    assert s.kind is Kind.BAD_RETRANSMISSIONS and s.severity is Severity.FAIL
    assert s.details == {"status": "partial", "segments": 1, "retransmissions": 2, "later_ok": 0}
    assert {c.id for c in s.likely_causes} >= {"KB-005", "KB-007"}
    assert (s.first_frame, s.last_frame) == (1, 4) and s.flow.sport == 40000
    # split across batches: the same answer
    [t] = analyze(*f.arrays(), batch=1, direction=1)
    assert t.details == s.details
    # the kernel recorded the packet with no checksum pending (TP_STATUS_USER only): still the fault
    assert analyze(*f.arrays(), direction=1, tp_status=0x1)[0].details == s.details
    # TP_STATUS_CSUMNOTREADY (0x8): the kernel knew the sum was pending (a veth peer): offload at work
    assert analyze(*f.arrays(), direction=1, tp_status=0x8) == []
    # leaving (the sender's own capture) or direction unknown: offload at work, the resend is a loss elsewhere
    assert analyze(*f.arrays(), direction=2) == []
    assert analyze(*f.arrays()) == []


def test_partial_syn_resent_on_arrival() -> None:
    """KB-005 as a receiver's capture shows it: the SYN is the only segment, it arrives partial
    (ovs-userspace-veth: c2:eth0) and is sent again and again: the ladder and the checksum drop."""
    f = Facts()
    for t in (0, 1.0, 2.0, 3.0):
        f.add(C, SV, t=t, sport=40000, dport=80, flags=SYN, seq=1000, status=Status.PARTIAL)
    got = analyze(*f.arrays(), direction=1)
    [bad] = of_kind(got, Kind.BAD_RETRANSMISSIONS)
    [syn] = of_kind(got, Kind.SYN_RETRIES)
    assert bad.details == {"status": "partial", "segments": 1, "retransmissions": 3, "later_ok": 0}
    assert bad.severity is Severity.FAIL and "KB-005" in {c.id for c in bad.likely_causes}
    assert (bad.first_frame, bad.last_frame) == (1, 4) and syn.count == 3
    # the same ladder on the sender's own capture (offload at work; a firewall dropped the SYNs)
    assert of_kind(analyze(*f.arrays(), direction=2), Kind.BAD_RETRANSMISSIONS) == []
    assert of_kind(analyze(*f.arrays()), Kind.BAD_RETRANSMISSIONS) == []
    assert len(of_kind(analyze(*f.arrays()), Kind.SYN_RETRIES)) == 1


def test_partial_alone_and_quoted_headers_are_not_symptoms() -> None:
    f = Facts()
    for i in range(5):  # a sender's own capture: every segment partial, none resent
        f.add(C, SV, t=i * 0.01, sport=40000, dport=80, flags=ACK, seq=1000 + i * 100, payload=100, status=Status.PARTIAL)
    assert analyze(*f.arrays()) == []


def test_bad_then_good_copy_is_a_warning() -> None:
    f = Facts()
    f.add(C, SV, t=0, sport=40000, dport=80, flags=ACK, seq=9, payload=500, status=Status.BAD)
    f.add(C, SV, t=0.3, sport=40000, dport=80, flags=ACK, seq=9, payload=500)
    [s] = analyze(*f.arrays())
    assert s.details["later_ok"] == 1 and s.details["status"] == "bad" and s.severity is Severity.WARN


def test_icmp_only() -> None:
    f = Facts()
    for i in range(3):
        f.add(C, SV, t=i, proto=1, icmp_type=8, payload=56)
        f.add(SV, C, t=i + 0.001, proto=1, icmp_type=0, payload=56)
    ladder(f, [3, 4, 6])
    f.add(C, SV, t=7, proto=17, sport=5000, dport=53, payload=40)
    f.add(C, SV, t=8, proto=17, sport=5000, dport=53, payload=40)
    out = analyze(*f.arrays())
    [s] = of_kind(out, Kind.ICMP_ONLY)
    assert s.details == {"echo_requests": 3, "echo_replies": 3, "tcp_connects": 1, "tcp_failed": 1, "udp_sent": 2, "udp_answered": 0}
    assert (s.flow.src, s.flow.dst, s.flow.proto, s.flow.sport) == (C, SV, 0, 0) and s.severity is Severity.FAIL
    assert "KB-005" in [c.id for c in s.likely_causes]
    g = Facts()  # the same, but TCP works: nothing to say about the pair
    g.add(C, SV, t=0, proto=1, icmp_type=8)
    g.add(SV, C, t=0.001, proto=1, icmp_type=0)
    ladder(g, [1])
    connect(g, 1.01)
    assert analyze(*g.arrays()) == []


def _bulk(f: Facts, t0: float, n: int, size: int, *, seq0: int = 1, sport: int = 40000) -> int:
    seq = seq0
    for i in range(n):
        f.add(C, SV, t=t0 + i * 0.001, sport=sport, dport=80, flags=ACK, seq=seq, payload=size - 40, ipid=100 + i)
        seq += size - 40
    return seq


def test_pmtu_adapted_and_ignored() -> None:
    f = Facts()
    _bulk(f, 0, 2, 1500)
    f.add("192.0.2.254", C, t=0.01, proto=1, icmp_type=3, icmp_code=4, icmp_mtu=1400, q_proto=6, q_src=C, q_dst=SV,
          q_sport=40000, q_dport=80, q_seq=1, q_ipid=100, q_len=1500, payload=548)  # fmt: skip
    f.add(C, SV, t=0.0101, sport=40000, dport=80, flags=ACK, seq=1, payload=1360, ipid=200)  # resent at 1400: adapted
    [s] = analyze(*f.arrays())
    assert s.kind is Kind.PMTU and s.severity is Severity.INFO
    assert s.details == {"mtu": 1400, "reporter": "192.0.2.254", "quoted_len": 1500, "caused_by": [1], "outcome": "adapted",
                         "below_minimum": False}  # fmt: skip
    g = Facts()
    _bulk(g, 0, 2, 1500)
    g.add("192.0.2.254", C, t=0.01, proto=1, icmp_type=3, icmp_code=4, icmp_mtu=1400, q_proto=6, q_src=C, q_dst=SV,
          q_sport=40000, q_dport=80, q_seq=1461, q_ipid=101, q_len=1500)  # fmt: skip
    _bulk(g, 0.5, 3, 1500, seq0=2921)  # keeps sending 1500-byte DF packets
    out = analyze(*g.arrays(), batch=2)  # the ICMP join works across batches
    [p] = of_kind(out, Kind.PMTU)
    [d] = of_kind(out, Kind.DF_OVERSIZE)
    assert p.details["outcome"] == "ignored" and p.details["caused_by"] == [2] and p.severity is Severity.FAIL
    assert d.count == 3 and d.details["mtu"] == 1400 and d.details["largest"] == 1500 and SV in d.details["path"]


def test_pmtu_tso_super_frames_after_the_report_are_not_ignoring_it() -> None:
    """The sender's own capture (vxlan-mtu-df): after the report the stack still hands TSO super-frames
    (checksum partial) to the device; GSO cuts them to the new MSS after the capture point, so their
    size proves nothing: the outcome stays unknown, and no df-oversize. The same sizes with complete
    checksums are what the wire carries: ignored."""
    for status, outcome in ((Status.PARTIAL, "unknown"), (None, "ignored")):
        f = Facts()
        _bulk(f, 0, 2, 1500)
        f.add("192.0.2.254", C, t=0.01, proto=1, icmp_type=3, icmp_code=4, icmp_mtu=1400, q_proto=6, q_src=C, q_dst=SV,
              q_sport=40000, q_dport=80, q_seq=1461, q_ipid=101, q_len=1500)  # fmt: skip
        for i in range(3):
            f.add(C, SV, t=0.5 + i * 0.001, sport=40000, dport=80, flags=ACK, seq=2921 + i * 7240, payload=7240,
                  ipid=300 + i, status=status)  # fmt: skip
        out = analyze(*f.arrays())
        [p] = of_kind(out, Kind.PMTU)
        assert p.details["outcome"] == outcome
        assert len(of_kind(out, Kind.DF_OVERSIZE)) == (status is None)


def test_packet_too_big_below_minimum() -> None:
    f = Facts()
    a, b = "2001:db8::1", "2001:db8::2"
    f.add(b, a, t=0, proto=58, icmp_type=2, icmp_mtu=1200, q_proto=58, q_src=a, q_dst=b, q_len=1240)
    [s] = analyze(*f.arrays())
    assert s.details["below_minimum"] is True and s.details["caused_by"] == [] and s.details["outcome"] == "unknown"
    assert s.severity is Severity.WARN


def test_blackhole_and_not_when_icmp_said_so() -> None:
    def flow(with_icmp: bool) -> Facts:
        f = Facts()
        f.add(C, SV, t=0, sport=40000, dport=80, flags=PSH | ACK, seq=0xFFFFFFF0, ack=1, payload=100)  # small request
        f.add(SV, C, t=0.01, sport=80, dport=40000, flags=ACK, seq=1, ack=0x54)  # acked (across the sequence wrap)
        for t in (0.02, 0.3, 0.9, 2.1):  # the 1500-byte segment never gets through
            f.add(C, SV, t=t, sport=40000, dport=80, flags=ACK, seq=0x54, ack=1, payload=1460)
            f.add(SV, C, t=t + 0.01, sport=80, dport=40000, flags=ACK, seq=1, ack=0x54)
        if with_icmp:
            f.add("192.0.2.254", C, t=0.021, proto=1, icmp_type=3, icmp_code=4, icmp_mtu=1450, q_proto=6, q_src=C, q_dst=SV,
                  q_sport=40000, q_dport=80, q_seq=0x54, q_len=1500)  # fmt: skip
        return f

    [s] = of_kind(analyze(*flow(False).arrays()), Kind.BLACKHOLE)
    assert s.details == {"largest_acked": 140, "smallest_unacked": 1500, "retransmissions": 3, "stall_s": 2.08}
    assert s.flow.src == C and "CFG-OVERLAY-MTU" in [c.id for c in s.likely_causes]
    assert of_kind(analyze(*flow(True).arrays()), Kind.BLACKHOLE) == []


def test_tunnel_outer_checksum_and_heartbeats() -> None:
    f = Facts()
    for i in range(3):
        fr = f.add(C, SV, t=i, sport=40000, dport=80, flags=SYN, seq=1, depth=1, ip_flags=IPF_UDP_TUNNEL)
        f.outer_bad(fr, "192.0.2.10", "192.0.2.11", 33000, 4789)
    for i in range(4):
        f.add("192.0.2.10", "192.0.2.11", t=i, proto=17, sport=6784, dport=6784, payload=60)
    f.add("192.0.2.12", "192.0.2.13", t=0, proto=17, sport=6784, dport=6784)
    f.add("192.0.2.13", "192.0.2.12", t=0, proto=17, sport=6784, dport=6784)
    out = analyze(*f.arrays())
    [t] = of_kind(out, Kind.TUNNEL_OUTER_CSUM)
    assert t.details == {"tunnel": "vxlan", "port": 4789} and t.count == 3 and t.flow.dport == 4789
    assert [c.id for c in t.likely_causes][:1] == ["KB-004"]
    [h] = of_kind(out, Kind.HEARTBEAT_UNANSWERED)
    assert h.details == {"sent": 4, "answered": 0} and h.flow.src == "192.0.2.10"
    [s] = of_kind(out, Kind.SYN_RETRIES)
    assert s.depth == 1 and "KB-006" in [c.id for c in s.likely_causes]
    assert [x.severity for x in out] == sorted((x.severity for x in out), key=lambda v: ["fail", "warn", "info"].index(v.value))


def test_every_cause_is_in_the_catalogue() -> None:
    ids = {r["id"] for r in tomllib.loads((REPO / "src/badsum/rules/catalogue.toml").read_text())["rule"]}
    assert {c.id for c in CAUSES} <= ids
    assert {c.kind for c in CAUSES} == set(Kind)  # every kind names at least one cause


def test_fast_keys_equal_the_reference_keys() -> None:
    rng = np.random.default_rng(7)
    f = np.zeros(500, dtype=FACTS_DTYPE)
    f["src"] = rng.integers(0, 256, (500, 16), dtype=np.uint8).view("V16").ravel()
    f["dst"] = rng.integers(0, 256, (500, 16), dtype=np.uint8).view("V16").ravel()
    f["sport"], f["dport"], f["proto"] = rng.integers(0, 65536, 500), rng.integers(0, 65536, 500), rng.integers(0, 256, 500)
    for mine, ref in ((flow_keys, reference.flow_keys), (host_pair_keys, reference.host_pair_keys)):
        (k1, d1), (k2, d2) = mine(f), ref(f)
        assert np.array_equal(k1, k2) and np.array_equal(d1, d2)


def test_feed_after_finish_and_empty_batches() -> None:
    a = FlowAnalyzer()
    a.feed(np.zeros(0, FACTS_DTYPE), np.zeros(0, dtype=Facts().arrays()[1].dtype))
    assert a.finish() == [] and a.stats["packets"] == 0
    with pytest.raises(RuntimeError):
        a.feed(np.zeros(0, FACTS_DTYPE), Facts().arrays()[1])
