"""Symptom detectors on the real corpus, checked against tshark run here (an independent decoder)
and the manifest notes: SYN ladders, duplicate SYNs, PMTU exchanges and Packet Too Big."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest
from flowkit import analyze_capture, of_kind, tshark
from support import CORPUS, corpus_files

from badsum.checksum.verdict import Flow
from badsum.flows.symptom import Kind

pytestmark = [pytest.mark.corpus, pytest.mark.tools]

SYN_ONLY = "tcp.flags.syn==1 && tcp.flags.ack==0"


def corpus(name: str) -> Path:
    p = CORPUS / name
    if not p.is_file():
        pytest.skip(f"{name} not in the corpus at {CORPUS}")
    return p


def manifest_note(name: str) -> str:
    with (CORPUS / "manifest.csv").open() as fh:
        return next(r["notes"] + " " + r["exercises"] for r in csv.DictReader(fh) if r["file"] == name)


def syn_sends(path: Path, flow: Flow, dedup_s: float = 0.001) -> list[float]:
    """tshark's SYN times of one flow (innermost addresses), the same SYN seen again within 1 ms counted once."""
    rows = tshark(path, SYN_ONLY, "frame.time_epoch", "tcp.srcport", "ip.dst", "ipv6.dst")
    times = [float(r[0]) for r in rows if int(r[1]) == flow.sport and (r[2] or r[3]).split(",")[-1] == flow.dst]
    out: list[float] = []
    for t in times:
        if not out or t - out[-1] > dedup_s:
            out.append(t)
    return out


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_socks_ladder() -> None:
    path = corpus("zeek__socks.pcap")
    [s] = of_kind(analyze_capture(path), Kind.SYN_RETRIES)
    sends = syn_sends(path, s.flow)
    assert len(sends) == 7 and "7 identical SYNs" in manifest_note(path.name)
    assert s.details["syns"] == len(sends) and s.count == len(sends) - 1
    assert s.details["gaps_s"] == pytest.approx(gaps(sends), abs=0.001)
    assert s.details["pattern"] == "linear-then-exponential"  # five ~1.1 s gaps, then 2.1 s
    # tshark: the server's SYN-ACK and the client's ACK come after the 7th SYN
    synack = tshark(path, f"tcp.flags.syn==1 && tcp.flags.ack==1 && tcp.dstport=={s.flow.sport}", "frame.time_epoch")
    assert synack and s.details["outcome"] == "connected"
    assert s.details["connect_s"] == pytest.approx(float(synack[0][0]) - sends[0], abs=0.001)


def test_erspan_ladders() -> None:
    path = corpus("suricata-verify__bug-5437-02__input.pcap")
    out = of_kind(analyze_capture(path), Kind.SYN_RETRIES)
    assert len(out) == 2 and "+1,+2,+4 s" in manifest_note(path.name)
    for s in out:
        sends = syn_sends(path, s.flow)
        assert s.count == len(sends) - 1 >= 3
        assert s.details["gaps_s"] == pytest.approx(gaps(sends), abs=0.001)
        assert s.details["pattern"] == "exponential" and s.depth > 0


def test_fast_open_rtt_backoff() -> None:
    path = corpus("suricata-verify__tcp-fastopen-10-syn-data-ignore__input.pcap")
    [s] = [x for x in of_kind(analyze_capture(path), Kind.SYN_RETRIES) if x.details["side"] == "client"]
    sends = syn_sends(path, s.flow)
    assert len(sends) == 11 == s.details["syns"]
    assert s.details["gaps_s"] == pytest.approx(gaps(sends), abs=0.001)
    assert s.details["gaps_s"][0] < 0.1 and s.details["pattern"] == "rtt-backoff"


def test_duplicate_syns_are_no_ladder() -> None:
    path = corpus("zeek__vlan-pcp-dei.pcapng")
    syns = tshark(path, SYN_ONLY, "frame.time_epoch")
    assert len(syns) == 3 and len({t for (t,) in syns}) == 1  # the trap: three SYNs, one timestamp
    assert of_kind(analyze_capture(path), Kind.SYN_RETRIES) == []


def test_smtp_pmtu_adapted() -> None:
    path = corpus("zeek__smtp.pcap")
    [s] = of_kind(analyze_capture(path), Kind.PMTU)
    icmp = tshark(path, "icmp.type==3 && icmp.code==4", "icmp.mtu", "ip.src", "ip.id", "frame.number")
    mtu = {int(r[0]) for r in icmp}
    reporter = {r[1].split(",")[0] for r in icmp}
    assert mtu == {s.details["mtu"]} == {1492} and reporter == {s.details["reporter"]} and s.count == len(icmp)
    # the caused-by frames are the live packets whose IP id the ICMP errors quote
    quoted_ids = {r[2].split(",")[1] for r in icmp}
    live = tshark(path, "!icmp && ip.flags.df==1 && ip.len==1500", "frame.number", "ip.id")
    assert s.details["caused_by"] == sorted(int(f) for f, i in live if i in quoted_ids) == [22, 23, 24, 25]
    assert s.details["outcome"] == "adapted" and s.details["below_minimum"] is False
    resized = [int(f) for (f,) in tshark(path, f"ip.len=={s.details['mtu']} && tcp", "frame.number")]
    assert resized[:2] == [27, 32] and "frames 27,32 resend at 1492" in manifest_note(path.name)
    assert of_kind(analyze_capture(path), Kind.BLACKHOLE) == []  # ICMP said so: not a black hole


def test_filestore_pmtu_quotes_oversize_packets() -> None:
    path = corpus("suricata-verify__filestore-5408__input.pcap")
    out = of_kind(analyze_capture(path), Kind.PMTU)
    icmp = tshark(path, "icmp.type==3 && icmp.code==4", "icmp.mtu", "ip.len")
    assert {s.details["mtu"] for s in out} == {int(r[0]) for r in icmp} == {1500}
    assert sum(s.count for s in out) == len(icmp)
    quoted = [int(r[1].split(",")[1]) for r in icmp]
    assert {s.details["quoted_len"] for s in out} <= set(quoted)
    assert max(s.details["quoted_len"] for s in out) == max(quoted) and min(quoted) == 1587


def test_packet_too_big_below_minimum() -> None:
    path = corpus("suricata-verify__ipv6-atomic-fragments-toobig__toobig.pcap")
    [s] = of_kind(analyze_capture(path), Kind.PMTU)
    [(mtu, src)] = [(int(m), a.split(",")[0]) for m, a in tshark(path, "icmpv6.type==2", "icmpv6.mtu", "ipv6.src")]
    assert s.details["mtu"] == mtu < 1280 and s.details["reporter"] == src
    assert s.details["below_minimum"] is True and "RFC 8021" in s.summary


@pytest.mark.parametrize("path", [p for p in corpus_files() if "good-chksum" in p.name], ids=lambda p: p.name)
def test_no_symptom_on_good_captures(path: Path) -> None:
    assert analyze_capture(path) == []
