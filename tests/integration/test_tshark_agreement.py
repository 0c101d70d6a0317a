"""badsum's verdicts against tshark's, which the test runs itself on the same files.

tshark (Wireshark 4.0) is the independent oracle: identical IPv4/TCP/UDP/ICMP/ICMPv6 verdicts on
every frame, except where tshark is known to judge something that is not a live checksum. Each
such trap is a rule below, with its reason; the few file-level exceptions are listed with theirs.
"""

from __future__ import annotations

import csv
import io
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from builders import write_zoo
from support import corpus_files, need_tool, own_captures

from badsum.capture import open_capture
from badsum.checksum.detailed import DetailedJudge
from badsum.checksum.verdict import Layer, Status

pytestmark = pytest.mark.tools

FIELDS = {
    "ipv4": "ip.checksum.status",
    "tcp": "tcp.checksum.status",
    "udp": "udp.checksum.status",
    "icmp": "icmp.checksum.status",
    "icmpv6": "icmpv6.checksum.status",
}
#: tshark's protocol name for each layer, to count live occurrences in frame.protocols.
PROTO_NAME = {"ipv4": "ip", "tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmpv6"}

#: Trap 1: tshark decodes and judges copies of packets carried inside other messages: headers
#: quoted in ICMP errors (RFC 792/4443), sFlow samples, OpenFlow packet-in/out payloads. They are
#: not live packets; badsum decodes ICMP quotes for display and never judges them.
QUOTE_BOUNDARIES = (("icmp", "ip"), ("icmpv6", "ipv6"))
MONITOR_PAYLOADS = ("sflow", "openflow_v1", "openflow_v4", "openflow_v5", "openflow_v6")

#: Files where tshark's view is not comparable, with the reason (checked against the manifest).
FILE_EXCEPTIONS = {
    "suricata-verify__bug-6875-01__fuzz.pcap": "damaged file: tshark decodes frame 1 as non-IP data before giving up",
    "tcpdump__bigtcp-ipv6-geneve-ipv4.pcap": "tshark 4.0 stops at an IPv6 payload length of 0 (BIG TCP) and judges nothing",
    "gopacket__test901.pcapng": "tshark stops at the second section's unknown SHB version; badsum reports the damage",
    "tcpdump__ppp_ip_udp_dns.pcap": "tshark 4.0 does not decode this PPP framing; tcpdump's baseline is checked instead",
}


def tshark_rows(path: Path) -> list[dict[str, str]]:
    tshark = need_tool("tshark")
    cmd = [
        tshark, "-n", "-r", str(path),
        # Linux and flannel put VXLAN on 8472; tshark decodes only 4789 unless told (Decode As).
        "-d", "udp.port==8472,vxlan",
        "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
        "-T", "fields", "-E", "header=y", "-E", "separator=,", "-E", "quote=d", "-E", "occurrence=a",
        "-E", "aggregator=|", "-e", "frame.number", "-e", "frame.interface_id", "-e", "frame.len",
        "-e", "frame.cap_len", "-e", "frame.protocols", "-e", "ip.len", "-e", "ipv6.plen",
        *[x for f in FIELDS.values() for x in ("-e", f)],
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    if path.suffix == ".pcapng":
        # tshark numbers pcapng custom blocks (CB/DCB) as frames, and so does badsum (no renumbering
        # here): they hold no packet, so they carry no verdict to compare.
        rows = [r for r in rows if r["frame.interface_id"] != "" or "data" != r["frame.protocols"]]
    return rows


def badsum_verdicts(path: Path) -> dict[int, dict[str, list[Status]]]:
    """Every verdict, ok ones included, from the detailed path (the fast path is tested equal to it)."""
    out: dict[int, dict[str, list[Status]]] = defaultdict(lambda: defaultdict(list))
    judge = DetailedJudge()
    with open_capture(path) as reader:
        for b in reader:
            for i in range(len(b)):
                res = judge.judge(b.first_frame + i, int(b.ts_ns[i]), b.packet(i), int(b.origlen[i]), int(b.linktype[i]), int(b.tp_status[i]))
                for v in res.verdicts:
                    out[v.frame][v.layer.label].append(v.status)
        for v in judge.expired(final=True):
            out[v.frame][v.layer.label].append(v.status)
    return out


def live_protocols(protocols: str) -> list[str]:
    ps = protocols.split(":")
    for k in range(len(ps) - 1):
        if (ps[k], ps[k + 1]) in QUOTE_BOUNDARIES or ps[k] in MONITOR_PAYLOADS:
            return ps[: k + 1]
    return ps


def ip_cut_short(row: dict[str, str]) -> bool:
    """Trap 2: frame shorter than the IP length (snap length, or a length field that lies):
    tshark judges the bytes that are there and calls the rest bad; badsum says unverifiable."""
    if row.get("frame.len") != row.get("frame.cap_len"):
        return True
    lens = [int(x) for x in (row.get("ip.len") or "").split("|") if x] + [
        int(x) + 40 for x in (row.get("ipv6.plen") or "").split("|") if x
    ]
    return any(n > int(row.get("frame.cap_len") or 0) for n in lens)


#: Trap 4: tshark 4.0 calls every zero UDP checksum over IPv6 illegal (4); RFC 6935/6936 allow it
#: for tunnels (VXLAN, Geneve), which badsum reports as zero-allowed.
TUNNELS_OVER_UDP = ("vxlan", "geneve")


def ipv6_tunnel(protocols: str) -> bool:
    ps = protocols.split(":")
    return any(ps[i : i + 2] == ["ipv6", "udp"] and i + 2 < len(ps) and ps[i + 2] in TUNNELS_OVER_UDP for i in range(len(ps)))


def agrees(ours: Status, theirs: str, short: bool, v6_tunnel: bool = False) -> bool:
    if ours == Status.OK:
        return theirs == "1"
    if ours in (Status.BAD, Status.PARTIAL):
        return theirs == "0"  # tshark 4.0 cannot tell a pending offload from corruption
    if ours == Status.ZERO_ALLOWED:
        return theirs == "3" or (v6_tunnel and theirs == "4")
    if ours == Status.ZERO_INVALID:
        return theirs in ("0", "4")
    if ours == Status.UNVERIFIABLE:
        return theirs in ("2", "") or short
    return False


def compare(path: Path) -> list[str]:
    rows = {int(r["frame.number"]): r for r in tshark_rows(path)}
    ours = badsum_verdicts(path)
    diffs = []
    for frame in sorted(set(rows) | set(ours)):
        row = rows.get(frame, {})
        live = live_protocols(row.get("frame.protocols", ""))
        short = ip_cut_short(row) if row else False
        v6t = ipv6_tunnel(row.get("frame.protocols", ""))
        for layer, field in FIELDS.items():
            theirs = [x for x in (row.get(field) or "").split("|") if x][: live.count(PROTO_NAME[layer])]
            mine = ours.get(frame, {}).get(layer, [])
            if not theirs and mine and all(s == Status.UNVERIFIABLE for s in mine):
                continue  # Trap 3: tshark shows no status where it could not dissect (fragments, cut frames)
            if len(mine) != len(theirs) or not all(agrees(m, t, short, v6t) for m, t in zip(mine, theirs)):
                diffs.append(f"frame {frame} {layer}: badsum {[m.label for m in mine]} tshark {theirs} ({row.get('frame.protocols')})")
    return diffs


def _judged_nothing(path: Path) -> bool:
    return not any(r.get(f) for r in tshark_rows(path) for f in FIELDS.values())


def _damage_recorded(path: Path) -> bool:
    with open_capture(path) as reader:
        for _ in reader:
            pass
        return bool(reader.errors)


#: Each file exception's reason, as something the test checks is still true.
EXCEPTION_HOLDS = {
    "suricata-verify__bug-6875-01__fuzz.pcap": lambda p: _damage_recorded(p)
    and tshark_rows(p)[0]["frame.protocols"] == "eth:ethertype:data",
    "tcpdump__bigtcp-ipv6-geneve-ipv4.pcap": _judged_nothing,
    "gopacket__test901.pcapng": _damage_recorded,
    "tcpdump__ppp_ip_udp_dns.pcap": lambda p: _judged_nothing(p)
    and "ip" not in tshark_rows(p)[0]["frame.protocols"].split(":"),
}


#: Exceptions that are limits of one tshark build (4.0): another build may decode these files. Then
#: the reason no longer holds, and tshark must agree with badsum like on any other file.
TSHARK_LIMITS = {"tcpdump__bigtcp-ipv6-geneve-ipv4.pcap", "tcpdump__ppp_ip_udp_dns.pcap"}


@pytest.mark.corpus
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_matches_tshark(path: Path) -> None:
    if path.name in FILE_EXCEPTIONS:
        if path.name in TSHARK_LIMITS and not EXCEPTION_HOLDS[path.name](path):
            diffs = compare(path)
            lifted = f"this tshark lifted the limit ({FILE_EXCEPTIONS[path.name]}) and disagrees:"
            assert not diffs, "\n".join([lifted, *diffs[:20]])
            return
        # Not comparable; instead check that the stated reason still holds.
        assert EXCEPTION_HOLDS[path.name](path), FILE_EXCEPTIONS[path.name]
        return
    diffs = compare(path)
    assert not diffs, "\n".join(diffs[:20])


def test_file_exceptions_exist_in_corpus(corpus: Path) -> None:
    # An exception for a file that is not there would silently excuse nothing; keep the list true.
    missing = [name for name in FILE_EXCEPTIONS if not (corpus / name).exists()]
    assert not missing


@pytest.mark.parametrize("path", own_captures(), ids=lambda p: p.name)
def test_own_captures_match_tshark(path: Path) -> None:
    diffs = compare(path)
    assert not diffs, "\n".join(diffs)


def test_own_captures_exist() -> None:
    assert own_captures(), "tests/data must hold at least one capture made by the real kernel"


def test_own_zoo_matches_tshark(tmp_path: Path) -> None:
    path = tmp_path / "zoo.pcap"
    write_zoo(path)
    diffs = compare(path)
    assert not diffs, "\n".join(diffs)


def test_zoo_counts_every_layer_tshark_judges(tmp_path: Path) -> None:
    # Guard against a comparison that passes because nothing was compared.
    path = tmp_path / "zoo.pcap"
    write_zoo(path)
    rows = tshark_rows(path)
    judged = {layer for r in rows for layer, f in FIELDS.items() if r.get(f)}
    assert judged == set(FIELDS), judged
    ours = badsum_verdicts(path)
    assert sum(len(v) for f in ours.values() for v in f.values()) > 40
    assert any(Status.PARTIAL in f.get(Layer.TCP.label, []) for f in ours.values())
