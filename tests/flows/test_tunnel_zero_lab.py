"""Zero outer UDP checksums in the vxlan-double-snat lab's real captures (flannel-like VXLAN on 8472
with `noudpcsum`), counted by `badsum pcap` against tcpdump's `no cksum` and tshark's field.

`data/vxlan-double-snat-node2-eth0.pcapng` is node2:eth0 of `badsum lab run vxlan-double-snat`
(quick variant, "before fix" phase) on Linux 6.18.44 with the KB-004 emulation attached: node1
sends every VXLAN packet with checksum 0 and the emulation rewrites the 4 SNATed ones to 0xffff,
so the capture holds both. The root test runs the lab again (about 7 s) and checks its fresh capture.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from support import need_root, need_tool

BADSUM = [sys.executable, "-m", "badsum"]
RECORDED = Path(__file__).parent / "data" / "vxlan-double-snat-node2-eth0.pcapng"
NODE1, NODE2 = "198.51.100.1", "198.51.100.2"
# tcpdump -vv's line for the outer UDP header: "    198.51.100.1.39782 > 198.51.100.2.8472: [no cksum] OTV, ..."
_OUTER = re.compile(r"^\s+(?P<src>[0-9.]+)\.\d+ > (?P<dst>[0-9.]+)\.8472: \[(?P<csum>[^]]*)\]")


def tcpdump_outer(path: Path) -> tuple[Counter, Counter]:
    """(zero, non-zero) outer checksums per (src, dst), as tcpdump prints them."""
    exe = need_tool("tcpdump")
    out = subprocess.run([exe, "-nn", "-vv", "-r", str(path)], check=True, capture_output=True, text=True, timeout=60).stdout
    zero: Counter = Counter()
    other: Counter = Counter()
    for line in out.splitlines():
        if m := _OUTER.match(line):
            (zero if m["csum"] == "no cksum" else other)[(m["src"], m["dst"])] += 1
    return zero, other


def tshark_zero(path: Path) -> Counter:
    exe = need_tool("tshark")
    out = subprocess.run([exe, "-n", "-r", str(path), "-Y", "udp.dstport == 8472", "-T", "fields", "-e", "ip.src",
                          "-e", "ip.dst", "-e", "udp.checksum"], check=True, capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    c: Counter = Counter()
    for line in out.splitlines():
        src, dst, csum = (x.split(",")[0] for x in line.split("\t"))
        if int(csum, 16) == 0:
            c[(src, dst)] += 1
    return c


def badsum_notes(path: Path) -> tuple[int, dict]:
    r = subprocess.run([*BADSUM, "pcap", "--json", str(path)], check=False, capture_output=True, text=True, timeout=60)
    doc = json.loads(r.stdout)
    notes = {(s["flow"]["src"], s["flow"]["dst"]): s for s in doc["data"]["symptoms"] if s["kind"] == "tunnel-zero-csum"}
    return r.returncode, notes


def check(path: Path) -> dict:
    zero, other = tcpdump_outer(path)
    assert zero[(NODE1, NODE2)] > 0 and zero[(NODE2, NODE1)] > 0, (zero, other)
    assert zero == tshark_zero(path)  # the two oracles agree
    _, notes = badsum_notes(path)
    assert set(notes) == set(zero)
    for key, s in notes.items():
        assert s["details"]["zero"] == zero[key] == s["count"], (key, s["details"], zero)
        # every non-zero outer sum here travels the same inner host pairs as zero ones
        assert s["details"]["nonzero"] == other[key], (key, s["details"], other)
        assert s["severity"] == "info" and [c["id"] for c in s["likely_causes"]] == ["KB-016"]
        assert s["details"]["tunnel"] == "vxlan" and s["flow"]["dport"] == 8472
    return {k: (zero[k], other[k]) for k in zero}


def test_recorded_lab_capture() -> None:
    got = check(RECORDED)
    # what the recording held (tcpdump): 21 zero + 4 rewritten by the emulation node1 -> node2, 13 zero back
    assert got == {(NODE1, NODE2): (21, 4), (NODE2, NODE1): (13, 0)}
    code, _ = badsum_notes(RECORDED)
    assert code == 1  # from the 4 bad outer sums (tunnel-outer-csum), not from the notes


@pytest.mark.root
def test_live_lab_capture(tmp_path: Path) -> None:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "iptables", "tshark"):
        need_tool(tool)
    out = tmp_path / "lab"
    r = subprocess.run([*BADSUM, "lab", "run", "vxlan-double-snat", "--out", str(out)], check=False,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode in (0, 1), r.stderr
    captures = json.loads((out / "result.json").read_text())["captures"]
    [path] = [Path(v) for k, v in captures.items() if k.endswith(" node2:eth0")]
    got = check(path)
    assert got[(NODE1, NODE2)][0] > 0 and got[(NODE2, NODE1)][0] > 0
