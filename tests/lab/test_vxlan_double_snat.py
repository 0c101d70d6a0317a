"""vxlan-double-snat on the real kernel, judged by oracles of its own: tshark on the run's
captures (outer source port before nat vs. on the wire, paired by IP id; outer UDP checksums),
tcpdump -vv's checksum verdicts, the agent's connection times, nstat's deltas, and while the lab
is still up `iptables -S`, `ip -j -d link`, `ethtool --json -k` and node1's conntrack table;
`ip -j netns list` afterwards (nothing left behind)."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from support import need_root, need_tool

from badsum.lab.result import ScenarioResult

pytestmark = pytest.mark.root

NODE1 = "198.51.100.1"
SERVICE_PORTS = range(9000, 9010)


def kernel_has_nat_fix() -> bool:
    """ea64d8d6c675 is in mainline 5.7 (stable backports below it are not judged here)."""
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    return m is not None and (int(m[1]), int(m[2])) >= (5, 7)


class Run(NamedTuple):
    result: ScenarioResult
    out: Path
    prefix: str
    seconds: float
    live: dict


def sh(prefix: str, ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", f"{prefix}-{ns}", *argv], capture_output=True, text=True,
                          timeout=10, check=True).stdout  # fmt: skip


def netns_of(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10, check=True).stdout
    return [e["name"] for e in json.loads(out.strip() or "[]") if e["name"].startswith(prefix + "-")]


def start(tmp_path_factory: pytest.TempPathFactory, fix: bool) -> Run:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "tshark", "iptables", "iptables-restore"):
        need_tool(tool)
    from badsum.lab.scenarios.vxlan_double_snat import SCENARIO
    from badsum.lab.state import clean, new_prefix

    out, prefix = tmp_path_factory.mktemp("vxlan-double-snat-fix" if fix else "vxlan-double-snat"), new_prefix()
    t0 = time.monotonic()
    try:
        result = SCENARIO.run(out, fix=fix, keep=True, prefix=prefix)
        seconds = time.monotonic() - t0
        # Read the lab's state while it is still up, with the tools an operator would use.
        link = json.loads(sh(prefix, "node1", "ip", "-j", "-d", "link", "show", "flannel.1"))[0]
        live = {
            "postrouting": sh(prefix, "node1", "iptables", "-t", "nat", "-S", "KUBE-POSTROUTING").splitlines(),
            "vxlan": link["linkinfo"]["info_data"],
            "features": json.loads(sh(prefix, "node1", "ethtool", "--json", "-k", "flannel.1"))[0],
            "conntrack": sh(prefix, "node1", "cat", "/proc/net/nf_conntrack").splitlines(),
        }
    finally:
        report = clean(prefix)
    assert not report.errors, report.errors
    assert not netns_of(prefix)
    return Run(result, out, prefix, seconds, live)


@pytest.fixture(scope="module")
def vulnerable(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return start(tmp_path_factory, fix=False)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return start(tmp_path_factory, fix=True)


def tshark_outer(path: Path) -> list[dict]:
    """Outer UDP packets from node1 to 8472: IP id, source port, checksum, inner TCP port (if any)."""
    fields = ("ip.id", "ip.src", "udp.srcport", "udp.dstport", "udp.checksum", "tcp.dstport")
    argv = ["tshark", "-n", "-r", str(path), "-d", "udp.port==8472,vxlan", "-T", "fields", "-E", "occurrence=f",
            "-E", "separator=/t", *(x for f in fields for x in ("-e", f))]  # fmt: skip
    out = []
    for line in subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines():
        ip_id, src, sport, dport, csum, tport = (line.split("\t") + [""] * 6)[:6]
        if src == NODE1 and dport == "8472":
            out.append({"id": int(ip_id, 16), "sport": int(sport), "csum": int(csum, 16),
                        "service": tport.isdigit() and int(tport) in SERVICE_PORTS})  # fmt: skip
    return out


def outer_ports(run: Run, phase: str) -> list[tuple[int, int]]:
    """(source port before nat, source port on node1's wire) of the service's outer packets."""
    pre = {p["id"]: p for p in tshark_outer(Path(run.result.captures[f"{phase} node1:nflog"]))}
    wire = tshark_outer(Path(run.result.captures[f"{phase} node1:eth0"]))
    # Before nat the source port is VXLAN's own (32768-60999, above 8472), so tshark decodes the
    # inner packet there; on the wire only the outer header is needed.
    return [(pre[p["id"]]["sport"], p["sport"]) for p in wire if p["id"] in pre and pre[p["id"]]["service"]]


def tcpdump_bad_udp(path: Path) -> int:
    r = subprocess.run(["tcpdump", "-n", "-vv", "-r", str(path), f"udp and src host {NODE1}"],
                       capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return r.stdout.count("bad udp cksum")


def test_vulnerable_configuration_double_snat_of_the_outer_packet(vulnerable: Run) -> None:
    r, live = vulnerable.result, vulnerable.live
    assert vulnerable.seconds < 30
    # The configuration is the vulnerable one (read by iptables, ip and ethtool themselves).
    rules = live["postrouting"]
    assert any("--mark 0x4000/0x4000" in x and "MASQUERADE" in x and "--random-fully" in x for x in rules), rules
    assert not any("! --mark" in x for x in rules), rules
    assert live["vxlan"]["port"] == 8472 and live["vxlan"]["udp_csum"] is False, live["vxlan"]
    assert live["features"]["tx-checksum-ip-generic"]["active"] is True
    # node1's conntrack: the outer UDP flows were SNATed (replies go to another port).
    snat = []
    for line in live["conntrack"]:
        srcs, ports = re.findall(r"\bsrc=(\S+)", line), re.findall(r"\bsport=(\d+) dport=(\d+)", line)
        if " udp " in line and srcs[:1] == [NODE1] and len(ports) == 2 and ports[0][1] == "8472":
            snat.append(ports[0][0] != ports[1][1])  # original source port vs. where replies go
    assert sum(snat) >= 3, live["conntrack"]  # 4 connections; two may share an outer source port
    # tshark: the outer source port before MASQUERADE (NFLOG) differs from the one on the wire.
    pairs = outer_ports(vulnerable, "run")
    assert len({a for a, _ in pairs}) >= 3 and all(a != b for a, b in pairs), pairs
    received = tshark_outer(Path(r.captures["run node2:eth0"]))
    assert received
    conns = [c["client"] for c in r.traffic["run"]["connections"]]
    assert len(conns) == 4
    if kernel_has_nat_fix():
        # The 5.7 fix: a zero outer checksum stays zero through NAT; nothing is dropped or slow.
        assert all(p["csum"] == 0 for p in received), received
        assert tcpdump_bad_udp(Path(r.captures["run node2:eth0"])) == 0
        assert r.counters["node2"]["UdpInCsumErrors"] == 0
        assert all(c["connected"] and c["connect_s"] < 0.9 for c in conns), conns
        assert r.reproduced is False and r.symptom_observed is False
        assert "not reproduced on this kernel" in r.verdict and "the configuration is the vulnerable one" in r.verdict
    else:
        slow = any(c["connect_s"] is None or c["connect_s"] >= 0.9 for c in conns)
        assert r.reproduced is (any(p["csum"] != 0 for p in received) or slow)


def test_unmark_rules_stop_the_second_snat(fixed: Run) -> None:
    r, rules = fixed.result, fixed.live["postrouting"]
    assert fixed.seconds < 30 and r.fix_applied
    # kubernetes#92035's rules, as iptables-save renders them (`--xor-mark` reads back as set-xmark).
    assert "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN" in rules, rules
    assert "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0" in rules, rules
    before, after = outer_ports(fixed, "before fix"), outer_ports(fixed, "after fix")
    assert before and all(a != b for a, b in before), before
    # A new flow hashing to a source port SNATed before the fix meets its old conntrack entry
    # (UDP, 30 s) and is rewritten by it: not the rules' doing, so left out.
    after = [(a, b) for a, b in after if a not in {x for x, _ in before}]
    assert len({a for a, _ in after}) >= 3 and all(a == b for a, b in after), after
    conns = [c["client"] for c in r.traffic["after fix"]["connections"]]
    assert all(c["connected"] for c in conns), conns
    received = tshark_outer(Path(r.captures["after fix node2:eth0"]))
    assert received and all(p["csum"] == 0 for p in received), received
    if kernel_has_nat_fix():
        assert r.symptom_observed is False
    assert "no longer masqueraded" in r.verdict
