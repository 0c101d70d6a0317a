"""vxlan-double-snat on the real kernel, judged by oracles of its own: tshark on the run's
captures (outer source port before nat vs. on the wire, paired by IP id; outer UDP checksums),
tcpdump -vv's checksum verdicts, the agent's connection times, nstat's deltas, and while the lab
is still up `iptables -S`, `ip -j -d link`, `ethtool --json -k`, node1's conntrack table, `nstat`
in node2 and `tc -j filter show` on node1:eth0 (sampled while the run lasts); `ip -j netns list`
and the kernel's list of BPF programs afterwards (nothing left behind).

On a kernel with the 5.7 fix the lab emulates KB-004 (a tc egress program on node1:eth0): the
marked, SNATed outer packets leave with the checksum the old kernel wrote, node2 drops them, and
the connections wait for SYN retries; the unmark rules (--fix) end it."""

from __future__ import annotations

import json
import platform
import re
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from support import need_root, need_tool

from badsum.lab.result import ScenarioResult

pytestmark = pytest.mark.root

NODE1 = "198.51.100.1"
SERVICE_PORTS = range(9000, 9010)
PROGRAM = "kb004_nat_csum"
SYN_LINEAR = "/proc/sys/net/ipv4/tcp_syn_linear_timeouts"


def old_nat_check(old_addr: str, new_addr: str) -> int:
    """What udp_manip_pkt() before ea64d8d6c675 left in a zero UDP checksum of a CHECKSUM_PARTIAL
    skb after source NAT: inet_proto_csum_replace4(pseudohdr=true) gives ~csum_fold(~old + new),
    i.e. the folded ones' complement sum of ~old and new; the port step (pseudohdr=false) does
    nothing for PARTIAL. Written here from the kernel source, not imported from the lab."""
    old, new = (struct.unpack("!I", socket.inet_aton(a))[0] for a in (old_addr, new_addr))
    s = (~old & 0xFFFFFFFF) + new
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s or 0xFFFF


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
    filters: list[list[dict]]
    """Every `tc -j filter show dev eth0 egress` in node1 sampled while the run lasted."""
    programs_after: list[tuple[int, int, str]]
    """The kernel's BPF programs once the lab was cleaned."""


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
    filters: list[list[dict]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            r = subprocess.run(["ip", "netns", "exec", f"{prefix}-node1", "tc", "-j", "filter", "show", "dev", "eth0",
                                "egress"], capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
            if r.returncode == 0 and r.stdout.strip():
                filters.append(json.loads(r.stdout))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        result = SCENARIO.run(out, fix=fix, keep=True, prefix=prefix)
        seconds = time.monotonic() - t0
        done.set()
        sampler.join(15)
        # Read the lab's state while it is still up, with the tools an operator would use.
        link = json.loads(sh(prefix, "node1", "ip", "-j", "-d", "link", "show", "flannel.1"))[0]
        live = {
            "postrouting": sh(prefix, "node1", "iptables", "-t", "nat", "-S", "KUBE-POSTROUTING").splitlines(),
            "vxlan": link["linkinfo"]["info_data"],
            "features": json.loads(sh(prefix, "node1", "ethtool", "--json", "-k", "flannel.1"))[0],
            "conntrack": sh(prefix, "node1", "cat", "/proc/net/nf_conntrack").splitlines(),
            # The namespace's counters count from its creation: the whole run.
            "udp_csum_errors_node2": int(sh(prefix, "node2", "nstat", "-asz", "UdpInCsumErrors").split()[-2]),
            "syn_linear": sh(prefix, "node1", "cat", SYN_LINEAR).strip() if Path(SYN_LINEAR).exists() else None,
            "filters_after_run": json.loads(sh(prefix, "node1", "tc", "-j", "filter", "show", "dev", "eth0", "egress")
                                            or "[]"),
        }  # fmt: skip
    finally:
        done.set()
        report = clean(prefix)
    assert not report.errors, report.errors
    assert not netns_of(prefix)
    from badsum.kernel import libbpf

    programs = libbpf.loaded_programs()
    for _ in range(50):  # a program is freed after an RCU grace period
        if not [p for p in programs if p[2] == PROGRAM]:
            break
        time.sleep(0.1)
        programs = libbpf.loaded_programs()
    return Run(result, out, prefix, seconds, live, filters, programs)


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


def tcpdump_udp(path: Path, nflog: bool = False) -> str:
    # NFLOG captures take no host filter (the link type has no IP offset for it); every UDP packet there is from node1.
    r = subprocess.run(["tcpdump", "-n", "-vv", "-r", str(path), *([] if nflog else [f"udp and src host {NODE1}"])],
                       capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return r.stdout


def tcpdump_bad_udp(path: Path, nflog: bool = False) -> int:
    return tcpdump_udp(path, nflog).count("bad udp cksum")


def tcpdump_bad_values(path: Path) -> list[int]:
    """The wrong values tcpdump found in the field (`bad udp cksum 0xffff -> 0x76dc!` gives 0xffff)."""
    return [int(v, 16) for v in re.findall(r"bad udp cksum (0x[0-9a-f]+) ->", tcpdump_udp(path))]


def service_outer(run: Run, phase: str, point: str) -> list[dict]:
    return [p for p in tshark_outer(Path(run.result.captures[f"{phase} {point}"])) if p["service"]]


def emulating() -> bool:
    return kernel_has_nat_fix()


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
    rewritten = [(a, b) for a, b in pairs if a != b]
    if emulating():
        # A SYN retried after a drop leaves on a new outer flow (TCP re-hashes, VXLAN's source port follows);
        # that flow is unmarked and not masqueraded. The first SYN of each connection was.
        assert len({a for a, _ in rewritten}) >= 3, pairs
    else:
        assert len({a for a, _ in pairs}) >= 3 and rewritten == pairs, pairs
    received = tshark_outer(Path(r.captures["run node2:eth0"]))
    assert received
    conns = [c["client"] for c in r.traffic["run"]["connections"]]
    assert len(conns) == 4
    if emulating():
        # Before nat (the NFLOG probe) every outer packet carries no checksum: the VXLAN device's own 0.
        pre = service_outer(vulnerable, "run", "node1:nflog")
        assert pre and all(p["csum"] == 0 for p in pre), pre
        assert tcpdump_bad_udp(Path(r.captures["run node1:nflog"]), nflog=True) == 0
        # On node1's wire, after the second SNAT: the first SYN of every connection (the packet kube-proxy
        # marked) carries the old kernel's value; MASQUERADE kept the address, so the value is the one
        # for a port-only change, whatever the port.
        want = old_nat_check(NODE1, NODE1)
        assert want == 0xFFFF
        wire = service_outer(vulnerable, "run", "node1:eth0")
        bad_wire = [p for p in wire if p["csum"] != 0]
        assert len(bad_wire) >= 4 and all(p["csum"] == want for p in bad_wire), wire
        assert tcpdump_bad_values(Path(r.captures["run node1:eth0"])) == [want] * len(bad_wire)
        # The same packets (NAT keeps the IP id) had no checksum before nat: the value is the SNAT's doing.
        before_nat = {p["id"]: p for p in pre}
        assert all(before_nat[p["id"]]["csum"] == 0 and before_nat[p["id"]]["sport"] != p["sport"] for p in bad_wire)
        assert tcpdump_udp(Path(r.captures["run node1:nflog"]), nflog=True).count("[no cksum]") >= len(bad_wire)
        # node2 received them and dropped them all: tcpdump's count = the namespace's UdpInCsumErrors (nstat).
        bad_rx = tcpdump_bad_udp(Path(r.captures["run node2:eth0"]))
        assert bad_rx == len(bad_wire) == live["udp_csum_errors_node2"] == r.counters["node2"]["UdpInCsumErrors"]
        # The agent: no connection set up before the first SYN retry (1 s), or none within the lab's timeout.
        assert all(c["connect_s"] is None or c["connect_s"] >= 0.9 for c in conns), conns
        if live["syn_linear"] is not None:
            assert live["syn_linear"] == "0"
        emu = r.traffic["emulation"]
        assert emu["stats"]["run"]["rewritten"] == len(bad_wire), emu["stats"]
        assert r.reproduced is True and r.symptom_observed is True
        assert r.verdict.startswith("[KB-004 EMULATED") and "reproduced (emulated)" in r.verdict
        assert "not reproduced" not in r.verdict
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
    before = [(a, b) for a, b in before if a != b] if emulating() else before  # retried SYNs: new, unmarked flows
    assert len({a for a, _ in before}) >= 3 and all(a != b for a, b in before), before
    # A new flow hashing to a source port SNATed before the fix meets its old conntrack entry
    # (UDP, 30 s) and is rewritten by it: not the rules' doing, so left out.
    after = [(a, b) for a, b in after if a not in {x for x, _ in before}]
    assert len({a for a, _ in after}) >= 3 and all(a == b for a, b in after), after
    conns = [c["client"] for c in r.traffic["after fix"]["connections"]]
    assert all(c["connected"] for c in conns), conns
    received = tshark_outer(Path(r.captures["after fix node2:eth0"]))
    assert received and all(p["csum"] == 0 for p in received), received
    assert all(p["csum"] == 0 for p in tshark_outer(Path(r.captures["after fix node1:eth0"])))
    assert tcpdump_bad_udp(Path(r.captures["after fix node2:eth0"])) == 0
    # Connections back to milliseconds.
    assert all(c["connect_s"] < 0.5 for c in conns), conns
    if emulating():
        # Before the fix the emulation acted (and node2 dropped exactly those); after it, nothing: the
        # total of node2's counter, read by this test, is what tcpdump saw dropped before the fix.
        before_bad = tcpdump_bad_udp(Path(r.captures["before fix node2:eth0"]))
        assert before_bad >= 4
        assert fixed.live["udp_csum_errors_node2"] == before_bad
        assert r.traffic["after fix"]["nstat"]["node2"]["UdpInCsumErrors"] == 0
        emu = r.traffic["emulation"]
        assert emu["stats"]["after fix"]["rewritten"] == 0 and emu["stats"]["before fix"]["rewritten"] == before_bad
        assert r.reproduced is True and r.symptom_observed is False
        assert "reproduced (emulated)" in r.verdict
    assert "no longer masqueraded" in r.verdict


@pytest.mark.parametrize("which", ["vulnerable", "fixed"])
def test_every_output_says_kb004_was_emulated_where_and_which_commit_fixed_it(which: str,
                                                                              request: pytest.FixtureRequest) -> None:
    if not emulating():
        pytest.skip("kernel older than 5.7: the real bug runs, nothing is emulated")
    run: Run = request.getfixturevalue(which)
    doc = json.loads((run.out / "result.json").read_text())
    for data in (doc, run.result.as_dict()):
        assert len(data["emulation"]) == 1, data["emulation"]
        emu = data["emulation"][0]
        assert emu["emulated"] is True and emu["kb"] == "KB-004"
        assert (emu["hook"], emu["device"]) == ("tc egress", "node1:eth0")
        assert (emu["fixed_by"], emu["fixed_in"]) == ("ea64d8d6c675", "Linux 5.7")
        assert emu["what"] and emu["program"] == PROGRAM
        assert "KB-004 EMULATED" in data["verdict"] and "ea64d8d6c675" in data["verdict"]
        assert data["evidence"][0]["oracle"] == "emulation"
    summary = (run.out / "summary.txt").read_text().splitlines()
    assert "KB-004 EMULATED" in summary[0] and "tc egress on node1:eth0" in summary[0]
    assert any(line.startswith("  EMULATED KB-004 (tc egress on node1:eth0)") and "ea64d8d6c675" in line
               for line in summary)  # fmt: skip


@pytest.mark.parametrize("which", ["vulnerable", "fixed"])
def test_the_filter_runs_during_the_lab_and_nothing_is_left_behind(which: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(which)
    if emulating():
        progs = [f["options"] for shown in run.filters for f in shown if f.get("options", {}).get("prog")]
        assert progs, "tc never showed the filter on node1:eth0 egress"
        assert {p["prog"]["name"] for p in progs} == {PROGRAM}
        assert all(p["direct-action"] for p in progs) and all(p["bpf_name"].startswith("kb004_nat.bpf.o") for p in progs)
        ids = {p["prog"]["id"] for p in progs}
        assert ids == {run.result.emulation[0]["program_id"]}
        assert {i for i, _, _ in run.programs_after}.isdisjoint(ids)
    # The lab took the filter off at its end (kept namespaces included), and the namespaces are gone.
    assert not [f for f in run.live["filters_after_run"] if f.get("options", {}).get("prog")]
    assert not netns_of(run.prefix)
    assert not [p for p in run.programs_after if p[2] == PROGRAM], run.programs_after


def test_the_labs_reference_arithmetic_matches_the_kernel_formula() -> None:
    """badsum.lab.kb004.old_kernel_check (what the lab reports as the old kernel's value) against the
    formula above, for address changes too (the lab's MASQUERADE only ever changes the port)."""
    from badsum.lab import kb004

    for old, new in (("198.51.100.1", "198.51.100.1"), ("10.0.0.1", "10.0.0.2"), ("192.0.2.7", "203.0.113.200")):
        for ports in ((40000, 1234), (8472, 8472)):
            assert kb004.old_kernel_check(old, new, *ports) == old_nat_check(old, new), (old, new, ports)
    # CHECKSUM_NONE with a zero field: do_csum was false, the 0 stayed.
    assert kb004.old_kernel_check("10.0.0.1", "10.0.0.2", 1, 2, ip_summed=kb004.CHECKSUM_NONE) == 0


# -- badsum follow (eBPF) during the phases ------------------------------------------------------

_TCPDUMP_IP = re.compile(r"\bid (\d+),.*proto UDP")
_TCPDUMP_UDP = re.compile(r"^\s+198\.51\.100\.1\.(\d+) > 198\.51\.100\.2\.8472: \[(bad udp cksum 0x([0-9a-f]+) -> "
                          r"0x([0-9a-f]+)!|no cksum|udp sum ok)\]")  # fmt: skip


def tcpdump_outer_checks(path: Path, nflog: bool = False) -> dict[int, dict]:
    """tcpdump -vv's view of node1's outer UDP checksums, by outer IP id: the source port, the value in the
    field and the value tcpdump computed (for a bad one), or 0 for `no cksum`."""
    out: dict[int, dict] = {}
    ip_id = None
    for line in tcpdump_udp(path, nflog).splitlines():
        if (m := _TCPDUMP_IP.search(line)) and not line.startswith(" "):
            ip_id = int(m[1])
        elif ip_id is not None and (u := _TCPDUMP_UDP.match(line)):
            stored = int(u[3], 16) if u[3] else 0 if u[2] == "no cksum" else None
            out[ip_id] = {"sport": int(u[1]), "stored": stored, "right": int(u[4], 16) if u[4] else None}
            ip_id = None
    return out


def follow_of(run: Run, phase: str) -> dict:
    data = run.result.follow.get(phase)
    assert data is not None and "not_run" not in data, f"badsum follow did not run in {phase}: {data}"
    assert data["recording"]["lost"] == {"ring_full": 0, "rate_limited": 0}, data["recording"]
    return data


@pytest.mark.parametrize(("which", "phase"), [("vulnerable", "run"), ("fixed", "before fix")])
def test_follow_names_node1s_nat_as_the_first_bad_hop(which: str, phase: str, request: pytest.FixtureRequest) -> None:
    """follow sees the inner SYN at node1:flannel.1 and the outer packet first at node1:eth0 (the SNAT
    and its checksum "update" happen in POSTROUTING, where no tracepoint is): it names that hop,
    rewritten, with KB-004. tcpdump on node1's NFLOG probe (before nat) and wire captures confirms the
    packet it names: 0 before nat, the value follow read after it, another source port."""
    run: Run = request.getfixturevalue(which)
    r, data = run.result, follow_of(run, phase)
    bad = [f for f in data["flows"] if f["first_bad_hop"]]
    assert len(bad) >= 3, [f["text"] for f in data["flows"]]  # the first SYN of each of 4 connections
    pre = tcpdump_outer_checks(Path(r.captures[f"{phase} node1:nflog"]), nflog=True)
    wire = tcpdump_outer_checks(Path(r.captures[f"{phase} node1:eth0"]))
    for f in bad:
        fb = f["first_bad_hop"]
        assert (fb["after"], fb["before"], fb["kind"]) == ("node1:flannel.1", "node1:eth0", "rewritten"), fb
        assert [c["id"] for c in fb["likely_causes"]] == ["KB-004"], fb["likely_causes"]
        assert fb["why"].startswith("outer UDP checksum 0 at encapsulation ("), fb["why"]
        assert "source port rewritten (SNAT)" in fb["why"] and "unmark" in fb["fix"]
        before, after = fb["evidence"]["before"], fb["evidence"]["after"]
        assert (after["device"], after["hook"], after["kind"]) == ("node1:flannel.1", "xmit", "pending")
        assert (before["hook"], before["mark"], before["encapsulated_after"]) == ("xmit", "0x4000", "node1:flannel.1")
        outer, check = before["outer"], before["checksum"]
        assert (check["layer"], check["depth"], check["status"]) == ("udp", 0, "bad")
        # tcpdump: the very packet (outer IP id) left node1:eth0 with the value follow read and the
        # right sum follow computed, and before nat it had no checksum and another source port.
        seen = wire[outer["ip_id"]]
        assert seen["sport"] == outer["sport"] and seen["stored"] == int(outer["udp_checksum"], 16) == int(check["stored"], 16)
        assert seen["stored"] == old_nat_check(NODE1, NODE1) and seen["right"] == int(check["computed"], 16)
        assert f"0x{seen['stored']:04x} on node1:eth0 (bad, should be 0x{seen['right']:04x}" in fb["why"]
        assert pre[outer["ip_id"]]["stored"] == 0 and pre[outer["ip_id"]]["sport"] != outer["sport"]
    # The other packets of the service's connections (retried SYNs, data) left node1:eth0 with 0 (tshark,
    # which reads the inner TCP port): the count follow cites for "0 at encapsulation".
    zero = sum(1 for p in service_outer(run, phase, "node1:eth0") if p["csum"] == 0)
    assert zero > 0 and all(f"({zero} other packets of this VXLAN tunnel" in f["first_bad_hop"]["why"] for f in bad)
    # node2's UDP dropped exactly those: follow's UDP_CSUM drops = tcpdump's bad sums at node2 = nstat.
    drops = [d for d in data["drops"] if d["reason"] == "UDP_CSUM"]
    assert [d["label"] for d in drops] == ["node2:eth0"], data["drops"]
    bad_rx = tcpdump_bad_udp(Path(r.captures[f"{phase} node2:eth0"]))
    assert drops[0]["count"] == bad_rx == sum(f["first_bad_hop"]["packets"] for f in bad)
    assert bad_rx == run.live["udp_csum_errors_node2"]  # the namespace's whole life; after the fix it adds 0
    assert f"{phase}: first bad hop node1:flannel.1 -> node1:eth0: rewritten (KB-004)" in (run.out / "summary.txt").read_text()


def test_follow_after_the_fix_sees_no_fault_and_no_drop(fixed: Run) -> None:
    data = follow_of(fixed, "after fix")
    assert data["summary"]["journeys"] >= 4 * 3, data["summary"]  # SYN, ACK, data at least, per connection
    assert [f["text"] for f in data["flows"] if f["first_bad_hop"]] == []
    assert [d for d in data["drops"] if d["reason"] == "UDP_CSUM"] == []
    # The outer packets went by node1:eth0 with checksum 0 (tcpdump agrees: no bad sum there).
    rows = [h for f in data["flows"] for h in f["hops"] if (h["device"], h["direction"]) == ("node1:eth0", "out")]
    assert rows and all(set(h["kinds"]) <= {"ok", "unverifiable"} for h in rows), rows
    assert tcpdump_bad_udp(Path(fixed.result.captures["after fix node1:eth0"])) == 0


# -- badsum doctor on the lab's configuration --------------------------------------------------------


def doctor(ns: str) -> tuple[int, dict]:
    r = subprocess.run([sys.executable, "-m", "badsum", "doctor", "--json", "-v", "--namespace", ns], capture_output=True,
                       text=True, timeout=120, check=False)  # fmt: skip
    return r.returncode, json.loads(r.stdout)


@pytest.mark.parametrize("fix", [False, True], ids=["vulnerable", "unmark-rules"])
def test_doctor_flags_kb004_on_the_lab_and_names_the_emulation(fix: bool, tmp_path: Path) -> None:
    """`badsum doctor --json` on node1 while the lab's configuration is live (no traffic). Oracles:
    `iptables -S` for the rule, `tc -j filter show` for the emulation program and its id."""
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "iptables", "iptables-restore", "tc"):
        need_tool(tool)
    from badsum.lab.scenarios.vxlan_double_snat import configured

    with configured(tmp_path / "lab", fix=fix) as (lab, emu):
        prefix, ns = lab.prefix, lab.ns("node1")
        rules = sh(prefix, "node1", "iptables", "-t", "nat", "-S", "KUBE-POSTROUTING").splitlines()
        shown = json.loads(sh(prefix, "node1", "tc", "-j", "filter", "show", "dev", "eth0", "egress") or "[]")
        code, doc = doctor(ns)
    assert not netns_of(prefix)
    progs = [f["options"]["prog"] for f in shown if f.get("options", {}).get("prog")]
    kb004 = [f for f in doc["data"]["findings"] + doc["data"]["outcomes"] if f["rule"] == "KB-004"]
    assert kb004, doc["data"]
    if emulating():
        assert [p["name"] for p in progs] == [PROGRAM] and emu is not None and emu.program_id == progs[0]["id"]
    if fix:
        # The unmark rules: nothing to flag, with the emulation still attached (it acts on nothing).
        assert any("! --mark 0x4000/0x4000" in x and "RETURN" in x for x in rules), rules
        assert [f["outcome"] for f in kb004] == ["pass"], kb004
        assert kb004[0]["objects"] == [{"namespace": ns, "name": "flannel.1", "kind": "vxlan"}]
        assert not [f for f in doc["data"]["findings"] if f["rule"] == "KB-004"]
        return
    (f,) = kb004
    assert code == 1
    names = {(o["namespace"], o["name"]) for o in f["objects"]}
    assert {(ns, "flannel.1"), (ns, "nat/KUBE-POSTROUTING")} <= names
    masq = [x for x in rules if "MASQUERADE" in x]
    assert len(masq) == 1 and "--random-fully" in masq[0] and "--mark 0x4000/0x4000" in masq[0], rules
    # The rule as iptables -S prints it (after `-A KUBE-POSTROUTING`), quoted as a shell would.
    assert shlex.join(shlex.split(masq[0])[2:]) in f["evidence"], f["evidence"]
    assert f"{ns}:flannel.1 (VXLAN, port 8472, outer UDP checksum off)" in f["evidence"]
    if emulating():
        pid = progs[0]["id"]
        assert f["outcome"] == "fail" and f["reason"].startswith("EMULATED: kernel "), f["reason"]
        assert f"attached at {ns}:eth0 (tc egress, program {PROGRAM} id {pid})" in f["reason"]
        assert "carries the fix" in f["reason"] and "EMULATED" in f["evidence"]
        assert f["facts"]["emulated"] == {"kb": "KB-004", "emulated": True, "namespace": ns, "device": "eth0",
                                          "hook": "tc egress", "program": PROGRAM, "id": pid}  # fmt: skip
        assert (ns, f"eth0/tc-egress/{PROGRAM}") in names
    else:
        assert f["outcome"] == "fail" and "emulated" not in f["facts"]


def test_doctor_without_the_emulation_only_warns_on_a_fixed_kernel(tmp_path: Path) -> None:
    """The same configuration with the program taken off: the kernel's own fix applies again."""
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "iptables", "iptables-restore", "tc"):
        need_tool(tool)
    if not emulating():
        pytest.skip("kernel older than 5.7: the rule fails on the real bug, with or without the emulation")
    from badsum.lab import kb004
    from badsum.lab.scenarios.vxlan_double_snat import configured

    with configured(tmp_path / "lab") as (lab, _):
        kb004.detach(lab, "node1", "eth0")
        shown = json.loads(sh(lab.prefix, "node1", "tc", "-j", "filter", "show", "dev", "eth0", "egress") or "[]")
        _, doc = doctor(lab.ns("node1"))
    assert shown == []
    (f,) = [f for f in doc["data"]["findings"] if f["rule"] == "KB-004"]
    assert f["outcome"] == "warn" and "EMULATED" not in f["reason"] + f["evidence"] and "emulated" not in f["facts"]


def inner_syn_times(path: Path) -> dict[int, list[float]]:
    """tcpdump's view of the client's SYNs on node1:flannel.1: {client port: [seconds after its first SYN]}."""
    r = subprocess.run(["tcpdump", "-n", "-tt", "-r", str(path), "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0"],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    out: dict[int, list[float]] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(\d+\.\d+) IP [0-9.]+\.(\d+) > ", line)
        if m:
            out.setdefault(int(m[2]), []).append(float(m[1]))
    return {port: [round(t - ts[0], 2) for t in ts] for port, ts in out.items()}


def test_full_variant_waits_the_ladder_out_and_the_syns_keep_to_it(tmp_path: Path) -> None:
    """`lab run vxlan-double-snat --full`: no connection is cut at 3.5 s. Each one is set up when a SYN
    of the ladder gets through, and tcpdump on node1:flannel.1 shows the client's SYNs leaving at the
    ladder's times (0, 1, 3, 7 ... s: tcp_syn_linear_timeouts is 0 where the kernel has it)."""
    need_root()
    from badsum.lab.scenarios.vxlan_double_snat import FULL_TIMEOUT, SYN_LADDER_S

    out = tmp_path / "full"
    p = subprocess.run([sys.executable, "-m", "badsum", "lab", "run", "vxlan-double-snat", "--full", "--json", "--out",
                        str(out)], capture_output=True, text=True, timeout=FULL_TIMEOUT * 4 + 120, check=False)  # fmt: skip
    assert p.returncode in (0, 1), p.stderr
    data = json.loads(p.stdout)["data"]
    phase = data["traffic"]["run"]
    conns = phase["connections"]
    assert conns and all(c["ok"] for c in conns), [c["client"] for c in conns]  # nothing cut short
    connect = [c["client"]["connect_s"] for c in conns]
    syns = inner_syn_times(Path(data["captures"]["run node1:flannel.1"]))
    assert len(syns) >= len(conns)
    for port_times in syns.values():
        for t in port_times:  # every SYN left at a ladder time (a loaded machine adds a little)
            assert min(abs(t - s) for s in SYN_LADDER_S) < 0.6, syns
    if emulating():
        # The emulation drops each connection's first SYN at node2: it is set up by a retry, on the ladder.
        assert all(min(abs(s - x) for x in SYN_LADDER_S[1:]) < 0.6 for s in connect), connect
        assert any(len(t) > 1 for t in syns.values())
        assert p.returncode == 1


def test_full_is_refused_where_a_scenario_has_no_full_variant(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "badsum", "lab", "run", "ovs-userspace-veth", "--full", "--json",
                        "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert p.returncode == 2
    env = json.loads(p.stdout)
    assert env["errors"][0]["code"] == "lab.no_full_variant" and "vxlan-double-snat" in env["errors"][0]["message"]
    assert not (tmp_path / "x").exists()
