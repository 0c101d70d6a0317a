"""`badsum trace` on the lab scenarios' own captures (the real kernel), judged by the labs'
independent evidence: the relay's log of the bytes it flipped, the topology's OVS ports, and
tcpdump's reading of the outer VXLAN source ports.

Namespaces are created only by the lab framework, which removes them (the OVS run is kept just
long enough for `badsum doctor --save` to snapshot it, then removed with `badsum lab clean`).

A lab that no longer reproduces its incident fails its test (with the lab's own evidence): a
regression in the lab, or in the kernel's behaviour it relies on, must not pass as a skip.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from support import need_root, need_tool

pytestmark = pytest.mark.root

BADSUM = [sys.executable, "-m", "badsum"]


def trace(*args: str) -> tuple[int, dict]:
    r = subprocess.run([*BADSUM, "trace", "--json", *args], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    assert doc["command"] == "trace" and doc["status"] == ("findings" if r.returncode else "ok")
    return r.returncode, doc["data"]


def not_reproduced(result: object, what: str) -> str:
    """The failure message: what the test needed, then the lab's verdict and evidence, oracle by oracle."""
    summary = "".join(line + "\n" for line in result.summary().splitlines() if not line.startswith("  capture "))  # type: ignore[attr-defined]
    return f"the lab did not reproduce the incident ({what}); its own evidence:\n{summary}"


def forward(data: dict, proto: int, dport: int) -> list[dict]:
    return [f for f in data["flows"] if f["direction"] == "forward" and f["flow"]["proto"] == proto and f["flow"]["dport"] == dport]


def test_ovs_userspace_veth_first_bad_hop_is_the_ovs_bridge(tmp_path: Path) -> None:
    need_root()
    for tool in ("tcpdump", "ovs-vswitchd"):
        need_tool(tool)
    from badsum.lab.scenarios.ovs_userspace_veth import SCENARIO, topology

    prefix = "bs" + secrets.token_hex(3)
    try:
        result = SCENARIO.run(tmp_path, keep=True, prefix=prefix)
        snap = tmp_path / "snap.json"
        d = subprocess.run([*BADSUM, "doctor", "--save", str(snap), "--interval", "0.1",
                            *(x for ns in ("host", "c1", "c2") for x in ("-n", f"{prefix}-{ns}"))],
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert snap.exists(), d.stderr
    finally:
        subprocess.run([*BADSUM, "lab", "clean", "--prefix", prefix], capture_output=True, timeout=120, check=False)
    assert result.reproduced, not_reproduced(result, "the OVS userspace datapath delivered TCP: nothing to trace")
    # The independent facts: the two host veths are the OVS bridge's ports (the declared topology).
    (bridge,) = topology().ovs
    first, second = (f"{bridge.ns}:{p}" for p in bridge.ports)
    caps = {k.removeprefix("run "): v for k, v in result.captures.items()}
    order = ["c1:eth0", first, second, "c2:eth0"]
    code, data = trace("--snapshot", str(snap), *(f"{label}={caps[label]}" for label in order))
    assert code == 1 and data["topology"] == "snapshot"
    flows = forward(data, 6, 9000)
    assert flows
    for f in flows:
        fb = f["first_bad_hop"]
        assert (fb["after"], fb["before"], fb["kind"]) == (first, second, "partial"), fb
        assert [h["hop"]["kind"] for h in f["hops"][1:]] == ["same-buffer", "recreates", "same-buffer"]


def test_bad_wire_corruption_is_located_at_the_relay_to_the_byte(tmp_path: Path) -> None:
    need_root()
    need_tool("tcpdump")
    need_tool("tshark")
    from badsum.lab.scenarios.bad_wire import FLIP_LOG, POINTS, SCENARIO, VARIANTS

    result = SCENARIO.run(tmp_path)
    flips = [json.loads(line) for line in (tmp_path / FLIP_LOG).read_text().splitlines() if line]
    assert flips, "the relay flipped nothing"
    checked = 0
    for v in VARIANTS:
        caps = {k.removeprefix(f"{v.label} "): p for k, p in result.captures.items() if k.startswith(f"{v.label} ")}
        mine = [e for e in flips if e["dport"] == v.port]
        if not mine:
            continue
        _code, data = trace(*(f"{label}={caps[label]}" for label in POINTS))
        flows = forward(data, 6, v.port)
        assert len(flows) == 1, [f["text"] for f in data["flows"]]
        fb = flows[0]["first_bad_hop"]
        # The relay copies tapA -> tapB; tapB is bridged to p2: the first point after it.
        assert (fb["after"], fb["before"], fb["kind"]) == ("sw:tapA", "sw:p2", "corruption"), (v.label, fb)
        found = sorted((o["frame"], o["payload"], o["seq"], o["old"], o["new"]) for o in fb["offsets"])
        # Every flip the relay logged whose corrupted segment both points captured (tshark reads the
        # captures: a loaded host's tcpdump can miss a packet, and then no tool can locate that flip).
        seen = tshark_seqs(caps["sw:tapA"], v.port) & tshark_seqs(caps["sw:p2"], v.port)
        located = [e for e in mine if e["seq"] in seen]
        assert len(located) >= len(mine) - 1 and located, (v.label, len(mine), len(located))
        expect = sorted((e["offset"], e["payload_offset"], e["byte_seq"], e["old"], e["new"]) for e in located)
        assert found == expect, v.label
        checked += 1
    assert checked


def tshark_seqs(pcap: Path, dport: int) -> set[int]:
    """Raw TCP sequence numbers of the data segments to `dport` in a capture, read by tshark."""
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", f"tcp.dstport=={dport} && tcp.len>0", "-T", "fields",
                          "-e", "tcp.seq_raw"], capture_output=True, text=True, timeout=60, check=True).stdout
    return {int(x) for x in out.split()}


def _rfc1624_update_of_zero(old_port: int, new_port: int) -> int:
    """What kernels before 5.7 (ea64d8d6c675) wrote into a zero UDP checksum when NAT changed the
    source port: the incremental update HC' = ~(~HC + ~m + m') (RFC 1624 eqn. 3) applied to HC = 0,
    as if 0 were a real checksum (RFC 768: 0 means none, and must stay 0)."""
    s = 0xFFFF + (~old_port & 0xFFFF) + new_port
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def test_vxlan_double_snat_outer_port_and_nat_stale(tmp_path: Path) -> None:
    need_root()
    for tool in ("tcpdump", "iptables"):
        need_tool(tool)
    from scapy.all import IP, UDP, rdpcap, wrpcap

    from badsum.lab.scenarios.vxlan_double_snat import (
        FLANNEL_PORT,
        NODE1,
        SCENARIO,
        outer_vxlan,
    )

    result = SCENARIO.run(tmp_path)
    caps = {k.removeprefix("run "): p for k, p in result.captures.items()}
    pairs = {(a, b) for a, b, inner in result.traffic["run"]["outer_sport_pairs"] if inner == "tcp" and a != b}
    assert pairs, not_reproduced(result, "the outer VXLAN packet was not masqueraded a second time")
    order = ["node1:flannel.1", "node1:nflog", "node1:eth0", "node2:eth0", "pod:eth0"]
    _, data = trace(*(f"{label}={caps[label]}" for label in order))
    seen = set()
    for f in data["flows"]:
        hop = next(h for h in f["hops"] if h["point"] == "node1:eth0")
        for c in hop["changes"]:
            if (c["layer"], c["field"], c["depth"]) == ("udp", "sport", 0):
                seen.add((int(c["old"]), int(c["new"])))
    assert seen and seen <= pairs, (seen, pairs)

    # Where the kernel did not reproduce the bug, rewrite the captures as a buggy kernel wrote them:
    # every outer VXLAN packet whose source port the second SNAT changed (paired with its copy
    # before nat, in the NFLOG capture, by IP id, as the scenario pairs them) gets the zero
    # checksum "updated" for the port change. Written with scapy, not with badsum.
    # Where the lab emulated the bug (KB-004 on a kernel with the fix: result.emulation), the captures
    # already carry the value the old kernel wrote, and are read as they are.
    before = {p["id"]: p["sport"] for p in outer_vxlan(Path(caps["node1:nflog"]), force_vxlan=True)}  # tcpdump's reading
    emulated = bool(result.emulation)
    rewritten = 0
    for label in ("node1:eth0", "node2:eth0"):
        pkts = rdpcap(str(caps[label]))
        for p in pkts:
            if IP in p and UDP in p and p[IP].src == NODE1 and p[UDP].dport == FLANNEL_PORT:
                old = before.get(p[IP].id)
                if old is None or old == p[UDP].sport:
                    continue
                if emulated:
                    rewritten += p[UDP].chksum != 0
                elif p[UDP].chksum == 0:
                    p[UDP].chksum = _rfc1624_update_of_zero(old, p[UDP].sport)
                    rewritten += 1
        if not emulated:
            out = tmp_path / f"buggy-{label.replace(':', '_')}.pcap"
            wrpcap(str(out), pkts)
            caps[label] = out
    assert rewritten
    code, data = trace(*(f"{label}={caps[label]}" for label in order))
    assert code == 1
    stale = [f["first_bad_hop"] for f in data["flows"] if f["first_bad_hop"]]
    assert stale
    for fb in stale:
        assert (fb["after"], fb["before"], fb["kind"]) == ("node1:nflog", "node1:eth0", "nat-stale"), fb


def test_a_lab_that_stops_reproducing_fails_with_its_evidence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The double-SNAT lab stood in by a run that saw no second masquerade: the test above must fail
    (it used to skip), and its message must carry the lab's verdict and evidence."""
    need_root()
    for tool in ("tcpdump", "iptables"):
        need_tool(tool)
    from types import SimpleNamespace

    from badsum.lab.result import ScenarioResult
    from badsum.lab.scenarios import vxlan_double_snat

    ran = ScenarioResult("vxlan-double-snat", "title", fix_applied=False, symptom_observed=False, reproduced=False,
                         verdict="not reproduced on this kernel (6.1.0): the outer packet was not masqueraded a second time")  # fmt: skip
    ran.add("tcpdump", "run: outer VXLAN source port before nat (NFLOG) vs. on node1:eth0: 0/40 packets rewritten")
    ran.traffic = {"run": {"outer_sport_pairs": [(8472, 8472, "tcp")]}}
    ran.captures = {"run node1:eth0": str(tmp_path / "x.pcap")}
    monkeypatch.setattr(vxlan_double_snat, "SCENARIO", SimpleNamespace(run=lambda out, **kw: ran))
    try:
        test_vxlan_double_snat_outer_port_and_nat_stale(tmp_path)
    except AssertionError as e:
        message = str(e)
    except pytest.skip.Exception as e:  # what a lab that stopped reproducing used to give
        pytest.fail(f"skipped instead of failing: {e}")
    else:
        pytest.fail("passed although the lab did not reproduce the incident")
    assert "the lab did not reproduce the incident (the outer VXLAN packet was not masqueraded a second time)" in message
    assert "vxlan-double-snat: not reproduced on this kernel (6.1.0)" in message
    assert "[tcpdump] run: outer VXLAN source port before nat (NFLOG) vs. on node1:eth0: 0/40 packets rewritten" in message
    assert "capture " not in message


def test_capture_then_trace_uses_the_recorded_order_not_the_names(tmp_path: Path) -> None:
    """The issue's run as a new user makes it: capture at the OVS path's four points in path order
    (which is not the names' sort order), then `trace DIR` and `trace DIR/*.pcapng` (the shell's
    name order). Both must name the OVS bridge's hop, and say the order came from the recording."""
    need_root()
    for tool in ("ovs-vswitchd",):
        need_tool(tool)
    import time

    from badsum.lab.lab import Lab
    from badsum.lab.scenarios.ovs_userspace_veth import C2, topology

    prefix = "bs" + secrets.token_hex(3)
    caps = tmp_path / "caps"
    with Lab(topology(), scenario="ovs-userspace-veth", out=tmp_path / "lab", prefix=prefix) as lab:
        lab.ovs["host"].vsctl("set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=false")
        path = [f"{prefix}-c1:eth0", f"{prefix}-host:c1-veth", f"{prefix}-host:c2-veth", f"{prefix}-c2:eth0"]
        assert sorted(path) != path
        cap = subprocess.Popen([*BADSUM, "capture", *(x for p in path for x in ("--point", p)), "-f", "tcp", "-d", "6",
                                "--json", "--no-progress", "-o", str(caps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            time.sleep(1.5)  # the capture workers open their sockets
            tcp = lab.tcp_transfer("c1", "c2", C2, port=9100, nbytes=20_000, timeout=3)
            out, err = cap.communicate(timeout=60)
        finally:
            if cap.poll() is None:
                cap.kill()
        assert cap.returncode == 0, err
        assert not tcp["ok"], "the OVS netdev path should break TCP (KB-005)"
    captured = json.loads(out)["data"]
    assert captured["path"] == path and Path(captured["manifest"]) == caps / "manifest.json"
    glob = sorted(str(p) for p in caps.glob("*.pcapng"))
    assert [Path(g).stem for g in glob] != path
    for argv in ([str(caps)], glob):
        code, data = trace(*argv)
        assert data["path"] == path and data["order"]["source"].startswith("recorded (manifest"), data["order"]
        hops = {(f["first_bad_hop"]["after"], f["first_bad_hop"]["before"]) for f in data["flows"] if f["first_bad_hop"]}
        assert code == 1 and hops == {(path[1], path[2])}, hops
