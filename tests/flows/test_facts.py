"""Packet facts: the C extractor equals the reference on every packet it does not defer, and both
match independent knowledge (scapy's own field values, tshark)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from builders import A4, A6, B4, B6, MAC, write_zoo
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    VXLAN,
    Dot1AD,
    Dot1Q,
    Ether,
    IPv6,
    IPv6ExtHdrFragment,
    Raw,
)
from scapy.layers.inet6 import (
    ICMPv6PacketTooBig,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Jumbo,
)
from support import CORPUS, corpus_files, need_tool, own_captures

from badsum.capture import open_capture
from badsum.flows.extract import FactExtractor
from badsum.flows.facts import (
    FACTS_DTYPE,
    IPF_DF,
    IPF_FRAGMENT,
    IPF_OUTER_DF,
    IPF_UDP_TUNNEL,
    QF_DF,
)
from badsum.native import _fastscan
from badsum.scan.batch import Batch

FAST, SLOW = FactExtractor(), FactExtractor(fast=False)
LINKTYPES = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 9, 147)


def batch_of(frames: list[tuple[bytes, int, int]], first_frame: int = 1) -> Batch:
    """(data, linktype, wire length) per packet, as a reader would frame them."""
    buf = b"".join(f for f, _, _ in frames)
    n = len(frames)
    offs = np.cumsum([0] + [len(f) for f, _, _ in frames[:-1]]).astype(np.int64)
    return Batch(
        buf, first_frame, offs, np.array([len(f) for f, _, _ in frames], np.uint32),
        np.array([w for _, _, w in frames], np.uint32), np.arange(n, dtype=np.int64) * 1000 + 7,
        np.array([lt for _, lt, _ in frames], np.uint16), np.zeros(n, np.uint32),
        np.full(n, 0xFFFFFFFF, np.uint32), np.zeros(n, np.uint8), np.zeros(n, np.int64),
    )  # fmt: skip


def assert_agree(batch: Batch, fast: FactExtractor = FAST, slow: FactExtractor = SLOW) -> int:
    """C rows equal the reference rows field for field (deferred rows excepted); extract() equals the
    reference everywhere. Returns how many packets the C extractor handled itself."""
    c_rows, deferred = fast.extract_fast(batch)
    ref = slow.extract(batch)
    handled = np.ones(len(batch), bool)
    handled[deferred] = False
    for name in FACTS_DTYPE.names:
        bad = np.nonzero((c_rows[name] != ref[name]) & handled)[0]
        assert not len(bad), f"{name} differs at frame {int(ref['frame'][bad[0]])}: C {c_rows[bad[0]]} ref {ref[bad[0]]}"
    assert (fast.extract(batch) == ref).all()
    return int(handled.sum())


def agree_file(path: Path) -> tuple[int, int]:
    n = handled = 0
    with open_capture(path, chunk_size=1 << 16) as reader:
        for batch in reader:
            handled += assert_agree(batch)
            n += len(batch)
    return n, handled


@pytest.mark.corpus
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_c_equals_reference(path: Path) -> None:
    agree_file(path)


def test_corpus_is_mostly_handled_in_c() -> None:
    files = corpus_files()
    if not files:
        pytest.skip("no corpus")
    n = handled = 0
    for path in files:
        a, b = agree_file(path)
        n, handled = n + a, handled + b
    assert handled >= 0.85 * n  # only tunnels other than VXLAN, MPLS and PPP are deferred


@pytest.mark.parametrize("path", own_captures(), ids=lambda p: p.name)
def test_own_captures_c_equals_reference(path: Path) -> None:
    n, handled = agree_file(path)
    assert handled == n > 0


def test_zoo_c_equals_reference(tmp_path: Path) -> None:
    p = tmp_path / "zoo.pcap"
    write_zoo(p)
    n, handled = agree_file(p)
    assert handled >= n - 8  # GRE, Geneve, UDP-Lite, IPIP cases are the reference's


# ---- seeds: one frame per situation the C extractor handles itself ----

PAY = Raw(b"p" * 100)
TCP_SYN = TCP(sport=40000, dport=443, flags="S", seq=123456789, window=64240, options=[("MSS", 1460)])


def seeds() -> list[tuple[str, bytes]]:
    e = Ether(**MAC)
    quoted = IP(src=B4, dst=A4, flags="DF", id=77, len=1500) / TCP(sport=1470, dport=25, seq=99, flags="A")
    inner = Ether(src="02:00:00:00:00:03", dst="02:00:00:00:00:04") / IP(src=A4, dst=B4, flags="DF") / TCP_SYN
    hbh_jumbo = IPv6(src=A6, dst=B6, plen=0) / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=8 + 8 + 24 + 100)])
    return [
        ("tcp4-syn", bytes(e / IP(src=A4, dst=B4, flags="DF", id=5) / TCP_SYN)),
        ("tcp4-data-qinq", bytes(e / Dot1AD(vlan=10) / Dot1Q(vlan=20) / IP(src=A4, dst=B4) / TCP(flags="PA", seq=7, ack=9) / PAY)),
        ("udp4", bytes(e / IP(src=A4, dst=B4) / UDP(sport=5353, dport=53) / PAY)),
        ("icmp4-frag-needed", bytes(e / IP(src="198.51.100.9", dst=B4) / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(quoted)[:28])),
        ("icmp4-echo", bytes(e / IP(src=A4, dst=B4) / ICMP(type=8, id=1, seq=2) / PAY)),
        ("tcp6-ext", bytes(e / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / TCP_SYN)),
        ("tcp6-jumbo", bytes(e / hbh_jumbo / UDP(sport=1, dport=2, len=0) / TCP_SYN / PAY)),
        ("icmp6-ptb", bytes(e / IPv6(src="2001:db8::9", dst=A6) / ICMPv6PacketTooBig(mtu=1280) / bytes(IPv6(src=A6, dst=B6) / TCP_SYN / PAY))),
        ("frag6-first", bytes(e / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=5, m=1) / UDP(sport=7, dport=9) / PAY)),
        ("frag4-later", bytes(e / IP(src=A4, dst=B4, frag=100, proto=6) / PAY)),
        ("vxlan", bytes(e / IP(src="203.0.113.1", dst="203.0.113.2") / UDP(sport=50000, dport=4789) / VXLAN(vni=7) / inner)),
        ("tso4", bytes(e / IP(src=A4, dst=B4, len=0) / TCP(flags="A") / Raw(b"x" * 3000))),
    ]


@pytest.mark.parametrize("name,frame", seeds(), ids=[n for n, _ in seeds()])
def test_every_truncation_of_the_seeds(name: str, frame: bytes) -> None:
    # Cut by the snap length at every byte (the wire length stays), and cut on the wire too.
    frames = [(frame[:k], 1, len(frame)) for k in range(len(frame) + 1)]
    frames += [(frame[:k], 1, k) for k in range(len(frame) + 1)]
    batch = batch_of(frames)
    assert assert_agree(batch) == len(frames)  # all handled in C: nothing here is exotic


def other_links(frame: bytes) -> list[tuple[bytes, int]]:
    """The IP packet of an Ethernet frame behind every other link header the C extractor knows."""
    ip = frame[14:]
    et = frame[12:14]
    fam = b"\x02\x00\x00\x00" if et == b"\x08\x00" else b"\x1e\x00\x00\x00"
    return [
        (b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 8 + et + ip, 113),
        (et + b"\x00\x00" + b"\x00\x00\x00\x02\x00\x01\x00\x06" + b"\x02" * 8 + ip, 276),
        (ip, 101), (ip, 12), (ip, 14), (ip, 228 if et == b"\x08\x00" else 229),
        (fam + ip, 0), (fam[::-1] + ip, 108),
    ]  # fmt: skip


def test_link_types_agree_and_are_handled() -> None:
    frames = []
    for _, f in seeds():
        if f[12:14] in (b"\x08\x00", b"\x86\xdd"):
            frames += [(g, lt, len(g)) for g, lt in other_links(f)]
            frames += [(g[:k], lt, len(g)) for g, lt in other_links(f) for k in range(0, 60, 3)]
    assert assert_agree(batch_of(frames)) == len(frames)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=120), st.sampled_from(LINKTYPES)), min_size=1, max_size=20))
def test_random_bytes_on_every_link_type(packets: list[tuple[bytes, int]]) -> None:
    assert_agree(batch_of([(b, lt, len(b)) for b, lt in packets]))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_byte_flips_of_the_seeds(data: st.DataObject) -> None:
    _, frame = data.draw(st.sampled_from(seeds()))
    lt = data.draw(st.sampled_from([1] + [lt for _, lt in other_links(frame)]))
    g = frame if lt == 1 else {lt2: g2 for g2, lt2 in other_links(frame)}[lt]
    raw = bytearray(g)
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    assert_agree(batch_of([(bytes(raw), lt, len(raw)), (bytes(raw[:cut]), lt, len(raw))]))


# ---- facts checked against what the frames were built with ----


def one(frame: bytes, linktype: int = 1, fx: FactExtractor = FAST) -> np.void:
    rows, deferred = fx.extract_fast(batch_of([(frame, linktype, len(frame))]))
    assert len(deferred) == 0
    return rows[0]


def test_seed_facts_match_how_they_were_built() -> None:
    f = dict(seeds())
    syn = one(f["tcp4-syn"])
    assert (syn["valid"], syn["ipver"], syn["proto"], syn["sport"], syn["dport"]) == (1, 4, 6, 40000, 443)
    assert (syn["seq"], syn["tcp_flags"], syn["win"], syn["payload"], syn["ipid"]) == (123456789, 0x02, 64240, 0, 5)
    assert syn["ip_flags"] == IPF_DF | IPF_OUTER_DF and syn["ip_len"] == syn["outer_len"] == 20 + 24
    assert bytes(syn["src"]) == bytes([192, 0, 2, 1]) + bytes(12)
    data = one(f["tcp4-data-qinq"])
    assert (data["tcp_flags"], data["seq"], data["ack"], data["payload"]) == (0x18, 7, 9, 100)
    q = one(f["icmp4-frag-needed"])  # only 8 bytes of TCP quoted (RFC 792): ports and seq are there
    assert (q["icmp_type"], q["icmp_code"], q["icmp_mtu"], q["q_proto"], q["q_len"]) == (3, 4, 1400, 6, 1500)
    assert (q["q_sport"], q["q_dport"], q["q_seq"], q["q_ipid"], q["q_flags"]) == (1470, 25, 99, 77, QF_DF)
    ptb = one(f["icmp6-ptb"])
    assert (ptb["icmp_type"], ptb["icmp_mtu"], ptb["q_sport"], ptb["q_dport"], ptb["q_seq"]) == (2, 1280, 40000, 443, 123456789)
    assert ptb["q_len"] == 40 + 24 + 100
    ext = one(f["tcp6-ext"])
    assert (ext["ipver"], ext["proto"], ext["tcp_flags"], ext["dport"]) == (6, 6, 0x02, 443)
    jumbo = one(f["tcp6-jumbo"])  # RFC 2675: the length is in the Jumbo Payload option
    assert (jumbo["proto"], jumbo["ip_len"], jumbo["payload"]) == (17, 40 + 8 + 8 + 24 + 100, 24 + 100)
    frag = one(f["frag6-first"])
    assert frag["ip_flags"] & IPF_FRAGMENT and (frag["proto"], frag["dport"]) == (17, 9)
    later = one(f["frag4-later"])
    assert (later["ip_flags"] & 0x12, later["sport"], later["payload"]) == (0x12, 0, 0)
    vx = one(f["vxlan"])
    assert (vx["depth"], vx["proto"], vx["tcp_flags"], vx["dport"]) == (1, 6, 0x02, 443)
    assert vx["ip_flags"] & IPF_UDP_TUNNEL and vx["outer_len"] == len(f["vxlan"]) - 14 and vx["ip_len"] == 44
    tso = one(f["tso4"])  # total length 0: the frame's length is the packet's
    assert (tso["ip_len"], tso["payload"]) == (len(f["tso4"]) - 14, 3000)


def test_extra_vxlan_port_is_followed_in_c() -> None:
    inner = Ether(src="02:00:00:00:00:03", dst="02:00:00:00:00:04") / IP(src=A4, dst=B4) / TCP_SYN
    frame = bytes(Ether(**MAC) / IP(src=C, dst=D) / UDP(sport=1, dport=9999) / VXLAN(vni=1) / inner)
    assert one(frame)["depth"] == 0
    fx = FactExtractor((9999,))
    assert one(frame, fx=fx)["depth"] == 1
    assert_agree(batch_of([(frame, 1, len(frame))]), fx, FactExtractor((9999,), fast=False))


C, D = "203.0.113.5", "203.0.113.6"


def test_zeek_smtp_frag_needed(tmp_path: Path) -> None:
    path = CORPUS / "zeek__smtp.pcap"
    if not path.exists():
        pytest.skip("no corpus")
    with open_capture(path) as reader:
        rows = np.concatenate([FAST.extract(b) for b in reader])
    for n in (26, 28, 29, 30):
        r = rows[n - 1]
        assert (r["frame"], r["proto"], r["icmp_type"], r["icmp_code"], r["icmp_mtu"]) == (n, 1, 3, 4, 1492)
        assert (r["q_proto"], r["q_len"], r["q_flags"], r["q_sport"], r["q_dport"]) == (6, 1500, QF_DF, 1470, 25)


TSHARK_FILES = ["zeek__smtp.pcap", "zeek__retransmit-fast009.pcap", "tcpdump__ipv4_tcp_http_xml.pcap", "zeek__ip6-tcp-good-chksum.pcap", "suricata-verify__tcp-fastopen-10-syn-data-ignore__input.pcap"]


@pytest.mark.tools
@pytest.mark.parametrize("name", TSHARK_FILES)
def test_tcp_facts_match_tshark(name: str) -> None:
    path = CORPUS / name
    if not path.exists():
        pytest.skip("no corpus")
    tshark = need_tool("tshark")
    fields = ["frame.number", "tcp.flags", "tcp.seq_raw", "tcp.ack_raw", "tcp.len", "ip.flags.df", "icmp.mtu"]
    out = subprocess.run(
        [tshark, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;", *[a for f in fields for a in ("-e", f)]],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    with open_capture(path) as reader:
        rows = np.concatenate([FAST.extract(b) for b in reader])
    tcp_seen = icmp_seen = 0
    for line in out.splitlines():
        no, flags, seq, ack, tlen, df, mtu = (line.split("\t") + [""] * 7)[:7]
        r = rows[int(no) - 1]
        if mtu:
            assert r["icmp_mtu"] == int(mtu.split(";")[0])
            icmp_seen += 1
        elif flags and ";" not in flags and r["proto"] == 6 and r["depth"] == 0:
            assert (r["tcp_flags"], r["seq"], r["ack"], r["payload"]) == (int(flags, 16) & 0xFF, int(seq), int(ack), int(tlen))
            if df:
                assert bool(r["ip_flags"] & IPF_DF) == (df in ("1", "True"))
            tcp_seen += 1
    assert tcp_seen > 0 and (icmp_seen > 0 or name != "zeek__smtp.pcap")


def test_threads_get_the_same_facts(tmp_path: Path) -> None:
    p = tmp_path / "zoo.pcap"
    write_zoo(p)
    with open_capture(p) as reader:
        batches = list(reader)
    want = [SLOW.extract(b) for b in batches]
    got: dict[int, list[np.ndarray]] = {}

    def work(k: int) -> None:
        got[k] = [FAST.extract(b) for b in batches for _ in range(20)][::20]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(3):
        assert all((g == w).all() for g, w in zip(got[k], want, strict=True))


def test_bad_arguments_raise_and_write_nothing() -> None:
    b = batch_of([(bytes(seeds()[0][1]), 1, 60)])
    table = np.zeros(65536, np.uint8)
    out, dfr = np.zeros(1, FACTS_DTYPE), np.zeros(1, np.uint32)
    args = [b.buf, b.offset, b.caplen, b.origlen, b.linktype, b.ts_ns, 1, table, out, dfr]
    with pytest.raises(TypeError, match="caplen"):
        _fastscan.facts(*args[:2], b.caplen.astype(np.int64), *args[3:])
    with pytest.raises(ValueError, match="FACTS_DTYPE"):
        _fastscan.facts(*args[:8], np.zeros(2, FACTS_DTYPE), dfr)
    with pytest.raises(ValueError, match="port_kind"):
        _fastscan.facts(*args[:7], table[:100], out, dfr)
    with pytest.raises(ValueError, match="deferred"):
        _fastscan.facts(*args[:9], np.zeros(0, np.uint32))
    assert not out.view(np.uint8).any()
    # A record pointing past the buffer is deferred, never read.
    b.offset[0] = 10**9
    assert _fastscan.facts(*args) == 1 and dfr[0] == 0 and out["frame"][0] == 1 and out["valid"][0] == 0
