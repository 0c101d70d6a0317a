"""`badsum pcap` symptoms on the captures of real lab runs, judged by tshark and tcpdump on the same files.

- `vxlan-mtu-df --fix`: in the broken phases the VXLAN device answers oversize DF packets with ICMP
  frag-needed. badsum must report `pmtu` with the MTU tshark reads (`icmp.mtu`) and, as caused_by,
  the frames that are the quoted packets (tshark's quoted IP source, destination, protocol and id,
  joined to the frames of the same capture that carry them). The fixed phases have no frag-needed
  and no `pmtu`.
- `ovs-userspace-veth --fix`: before the fix, at c2:eth0, ping is answered and the TCP connect is
  never (KB-005): `icmp-only` for the container pair with tshark's echo and SYN counts, and
  `bad-retransmissions` with status partial whose segment and retransmission counts are tcpdump's
  "incorrect" segments and tshark's sequence numbers. After the fix neither is reported.

tests/lab/conftest.py checks that each test leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support import need_root, need_tool

pytestmark = pytest.mark.root

BADSUM = [sys.executable, "-m", "badsum"]
INCORRECT = re.compile(r"cksum 0x[0-9a-f]{4} \(incorrect -> 0x[0-9a-f]{4}\)")
# tcpdump -S -vv: "A.B.C.D.PORT > E.F.G.H.PORT: Flags [S], cksum 0x1234 (incorrect -> 0x5678), seq 401266988, ..."
INCORRECT_SEGMENT = re.compile(r"(\S+)\.(\d+) > (\S+)\.(\d+): Flags \[[^]]*\], cksum 0x[0-9a-f]{4} "
                               r"\(incorrect -> 0x[0-9a-f]{4}\), seq (\d+)")
PMTU_OUTCOMES = {"adapted", "ignored", "unknown"}


def lab_run(out: Path, name: str) -> dict[str, Any]:
    """`badsum lab run NAME --fix --json --out OUT`: the result (data of the envelope)."""
    r = subprocess.run([*BADSUM, "lab", "run", name, "--fix", "--json", "--out", str(out)], capture_output=True,
                       text=True, timeout=300, check=False)  # fmt: skip
    assert r.returncode in (0, 1), (r.returncode, r.stderr)
    return json.loads(r.stdout)["data"]


def symptoms(path: str | Path) -> list[dict[str, Any]]:
    r = subprocess.run([*BADSUM, "pcap", "--json", str(path)], capture_output=True, text=True, timeout=120,
                       check=False)  # fmt: skip
    assert r.returncode in (0, 1) and r.stdout.startswith("{"), (r.returncode, r.stdout[:200], r.stderr)
    found = json.loads(r.stdout)["data"].get("symptoms")
    assert isinstance(found, list), f"no data.symptoms in badsum pcap --json {path}"
    return found


def of_kind(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [s for s in items if s["kind"] == kind]


def tshark(path: str | Path, display_filter: str, *fields: str) -> list[list[str]]:
    """One row per matching frame; each field's occurrences comma-separated, as tshark prints them."""
    argv = ["tshark", "-n", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "occurrence=a"]
    for f in fields:
        argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines() if line.strip()]


def frames_of(value: Any) -> set[int]:
    """Frame numbers out of caused_by: an int, a list of ints, or a list of {frame: ...}."""
    if isinstance(value, int):
        return {value}
    return {v["frame"] if isinstance(v, dict) else int(v) for v in value or []}


# -- vxlan-mtu-df: frag-needed -----------------------------------------------------------------


@pytest.fixture(scope="module")
def mtu_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "tshark"):
        need_tool(tool)
    return lab_run(tmp_path_factory.mktemp("vxlan-mtu-df"), "vxlan-mtu-df")


def frag_needed(path: str) -> list[dict[str, Any]]:
    """Each ICMP frag-needed in a capture, by tshark: its frame, reporter, MTU, and the frames it quotes."""
    cols = ("frame.number", "ip.src", "ip.dst", "ip.proto", "ip.id", "icmp.mtu", "ip.len")
    rows = tshark(path, "icmp.type == 3 && icmp.code == 4", *cols)
    # The quoted packet is the second IP header of the frame; its id names the frame that carried it.
    carriers: dict[tuple[str, ...], list[int]] = {}
    for frame, src, dst, proto, ipid in tshark(path, "ip && !icmp", *cols[:5]):
        carriers.setdefault((src, dst, proto, ipid), []).append(int(frame))
    out = []
    for frame, src, dst, proto, ipid, mtu, ip_len in rows:
        (rep, q_src), (_, q_dst), (_, q_proto), (_, q_id), (_, q_len) = (
            x.split(",") for x in (src, dst, proto, ipid, ip_len))  # fmt: skip
        quoted = [f for f in carriers.get((q_src, q_dst, q_proto, q_id), []) if f < int(frame)]
        out.append({"frame": int(frame), "reporter": rep, "to": dst.split(",")[0], "mtu": int(mtu),
                    "quoted": quoted, "quoted_flow": (q_src, q_dst, int(q_proto)), "quoted_len": int(q_len)})
    return out


def adapted_frames(path: str, flow: tuple[str, str, int], after: int, mtu: int) -> set[int]:
    """Frames of `flow` after frame `after` whose IP length fits `mtu`, by tshark."""
    rows = tshark(path, f"ip.src == {flow[0]} && ip.dst == {flow[1]} && ip.proto == {flow[2]} && !icmp",
                  "frame.number", "ip.len")  # fmt: skip
    return {int(f) for f, n in rows if int(f) > after and int(n.split(",")[0]) <= mtu}


def test_pmtu_in_the_broken_phases(mtu_run: dict[str, Any]) -> None:
    broken = {label: path for label, path in mtu_run["captures"].items() if "-o1500 " in label}
    checked = 0
    for label, path in sorted(broken.items()):
        icmp = frag_needed(path)
        if not icmp:
            continue
        checked += 1
        got = of_kind(symptoms(path), "pmtu")
        dump = json.dumps(got, indent=1)
        assert got, f"{label}: tshark sees {len(icmp)} frag-needed, badsum no pmtu"
        # Every frag-needed is counted once, and the MTUs are the kernel's.
        assert sum(s["count"] for s in got) == len(icmp), (label, dump)
        assert {s["details"]["mtu"] for s in got} == {i["mtu"] for i in icmp}, (label, dump)
        assert {s["details"]["reporter"] for s in got} == {i["reporter"] for i in icmp}, (label, dump)
        caused_by = set().union(*(frames_of(s["details"]["caused_by"]) for s in got))
        assert caused_by == {f for i in icmp for f in i["quoted"]}, (label, dump)
        for s in got:
            d = s["details"]
            assert d["outcome"] in PMTU_OUTCOMES and d["below_minimum"] is False, (label, dump)
            flow = (s["flow"]["src"], s["flow"]["dst"], s["flow"]["proto"])
            mine = [i for i in icmp if (i["mtu"], i["reporter"], i["quoted_flow"]) == (d["mtu"], d["reporter"], flow)]
            assert len(mine) == s["count"], (label, icmp, dump)
            assert frames_of(d["caused_by"]) == {f for i in mine for f in i["quoted"]}, (label, dump)
            assert d["quoted_len"] in {i["quoted_len"] for i in mine}, (label, dump)
            # Evidence is the reports, the packets they quote and, when the sender adapted, packets of
            # the flow sent after the first report that fit the reported MTU (tshark's lengths).
            later = adapted_frames(path, flow, min(i["frame"] for i in mine), d["mtu"]) if d["outcome"] == "adapted" else set()
            assert {e["frame"] for e in s["evidence"]} <= {i["frame"] for i in icmp} | frames_of(d["caused_by"]) | later, dump
            assert "KB-003" in {c["id"] for c in s["likely_causes"]} or "CFG-OVERLAY-MTU" in {
                c["id"] for c in s["likely_causes"]}, (label, dump)  # fmt: skip
    # The heartbeat's host (h1:br0) and the TCP container (c1:eth0) get frag-needed in both phases.
    assert checked >= 4, sorted(broken)


def test_no_pmtu_after_the_fix(mtu_run: dict[str, Any]) -> None:
    fixed = {label: path for label, path in mtu_run["captures"].items() if "-o1500 " not in label}
    assert fixed
    for label, path in sorted(fixed.items()):
        if label.split(" ", 1)[1] not in ("c1:eth0", "h1:br0"):
            continue
        assert frag_needed(path) == [], label
        assert of_kind(symptoms(path), "pmtu") == [], label


# -- ovs-userspace-veth: ping works, TCP fails ---------------------------------------------------


@pytest.fixture(scope="module")
def ovs_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "tshark", "ovs-vswitchd"):
        need_tool(tool)
    return lab_run(tmp_path_factory.mktemp("ovs-userspace-veth"), "ovs-userspace-veth")


def traffic_oracle(path: str) -> dict[str, Any]:
    """What tshark and tcpdump see in one capture: echo requests/replies, TCP connects and failures,
    and the TCP segments with an incorrect checksum (tcpdump -vv) keyed by flow and sequence number,
    checked against the frames tshark's own checksum validation calls bad (`tcp.seq_raw`)."""
    echo = Counter(t for (t,) in tshark(path, "icmp.type == 8 || icmp.type == 0", "icmp.type"))
    syns = {tuple(r) for r in tshark(path, "tcp.flags.syn == 1 && tcp.flags.ack == 0",
                                     "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport")}  # fmt: skip
    answered = {(d, dp, s, sp) for s, sp, d, dp in tshark(path, "tcp.flags.syn == 1 && tcp.flags.ack == 1",
                                                          "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport")}  # fmt: skip
    lines = subprocess.run(["tcpdump", "-n", "-S", "-vv", "-r", path, "tcp"], capture_output=True, text=True,
                           timeout=60, check=True).stdout.splitlines()  # fmt: skip
    incorrect = [m.groups() for ln in lines if (m := INCORRECT_SEGMENT.search(ln))]
    assert len(incorrect) == sum(1 for ln in lines if INCORRECT.search(ln)), lines
    bad_seqs = [s for (s,) in tshark_checked(path, "tcp.checksum.status == 0", "tcp.seq_raw")]
    assert sorted(bad_seqs) == sorted(seq for *_, seq in incorrect), (bad_seqs, incorrect)
    good_seqs = {s for (s,) in tshark_checked(path, "tcp.checksum.status == 1", "tcp.seq_raw")}
    hosts = {tuple(r) for r in tshark(path, "icmp.type == 8", "ip.src", "ip.dst")}
    udp = [tuple(r) for r in tshark(path, "udp && !icmp", "ip.src", "ip.dst")]
    return {"requests": echo["8"], "replies": echo["0"], "connects": len(syns), "failed": len(syns - answered),
            "incorrect": len(incorrect), "segments": len(set(incorrect)),
            "retransmissions": len(incorrect) - len(set(incorrect)), "later_ok": len(good_seqs & set(bad_seqs)),
            "hosts": hosts, "udp": udp}


def tshark_checked(path: str | Path, display_filter: str, *fields: str) -> list[list[str]]:
    """tshark with its TCP checksum validation on (off by default)."""
    argv = ["tshark", "-n", "-o", "tcp.check_checksum:TRUE", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines() if line.strip()]


def test_icmp_only_before_the_fix(ovs_run: dict[str, Any]) -> None:
    path = ovs_run["captures"]["before fix c2:eth0"]
    o = traffic_oracle(path)
    # The oracle itself: pings answered, the connect never; incorrect TCP segments sent again.
    assert o["requests"] == o["replies"] >= 3 and o["connects"] == o["failed"] == 1, o
    assert o["segments"] >= 1 and o["retransmissions"] >= 1, o
    assert ovs_run["traffic"]["before fix"]["ping"]["ok"] and not ovs_run["traffic"]["before fix"]["tcp"]["ok"]
    got = symptoms(path)
    dump = json.dumps(got, indent=1)
    (pair,) = o["hosts"]
    icmp_only = of_kind(got, "icmp-only")
    assert len(icmp_only) == 1, dump
    s = icmp_only[0]
    assert {s["flow"]["src"], s["flow"]["dst"]} == set(pair) and s["flow"]["proto"] == 0, dump
    assert (s["flow"]["sport"], s["flow"]["dport"]) == (0, 0), dump
    d = s["details"]
    assert (d["echo_requests"], d["echo_replies"]) == (o["requests"], o["replies"]), dump
    assert (d["tcp_connects"], d["tcp_failed"]) == (o["connects"], o["failed"]), dump
    udp_out = sum(1 for src, dst in o["udp"] if (src, dst) == pair)
    udp_back = sum(1 for src, dst in o["udp"] if (dst, src) == pair)
    assert d["udp_sent"] == udp_out and d["udp_answered"] <= udp_back, (o["udp"], dump)
    assert "KB-005" in {c["id"] for c in s["likely_causes"]}, dump


def test_partial_retransmissions_before_the_fix(ovs_run: dict[str, Any]) -> None:
    """c2 drops every segment (TcpInCsumErrors) and c1 sends it again with the same partial sum."""
    path = ovs_run["captures"]["before fix c2:eth0"]
    o = traffic_oracle(path)
    assert o["segments"] >= 1 and o["retransmissions"] >= 1, o
    (pair,) = o["hosts"]
    got = symptoms(path)
    dump = json.dumps(got, indent=1)
    bad = of_kind(got, "bad-retransmissions")
    assert len(bad) == 1, dump
    b = bad[0]
    assert b["details"]["status"] == "partial", dump
    assert b["details"]["segments"] == o["segments"], dump
    assert b["details"]["retransmissions"] == b["count"] == o["retransmissions"], dump
    assert b["details"]["later_ok"] == o["later_ok"] == 0, dump
    assert {b["flow"]["src"], b["flow"]["dst"]} == set(pair) and b["flow"]["proto"] == 6, dump
    assert "KB-005" in {c["id"] for c in b["likely_causes"]}, dump


def test_neither_after_the_fix(ovs_run: dict[str, Any]) -> None:
    path = ovs_run["captures"]["after fix c2:eth0"]
    o = traffic_oracle(path)
    assert o["requests"] == o["replies"] >= 3 and o["connects"] >= 1 and o["failed"] == 0 and o["incorrect"] == 0, o
    got = symptoms(path)
    assert of_kind(got, "icmp-only") == [] and of_kind(got, "bad-retransmissions") == [], json.dumps(got, indent=1)
