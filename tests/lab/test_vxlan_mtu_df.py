"""vxlan-mtu-df on the real kernel, judged by oracles of its own: `tcpdump -vv -r` on the run's
captures (ICMP frag-needed and the MTU it reports, heartbeats along the path), the agent's
results, nstat's deltas, `ip -j link` while the fixed lab is still up, and `ip -j netns list`
afterwards (nothing left behind)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from support import need_root, need_tool

from badsum.lab.result import ScenarioResult
from badsum.lab.topology import build_commands

H1, H2, C1, C2 = "203.0.113.1", "203.0.113.2", "203.0.113.11", "203.0.113.12"
UNDERLAYS = (1450, 1454)
_FRAG = re.compile(r"(?P<src>[\d.]+) > (?P<dst>[\d.]+): ICMP [\d.]+ unreachable - need to frag \(mtu (?P<mtu>\d+)\)")


class Run(NamedTuple):
    result: ScenarioResult
    out: Path
    prefix: str
    seconds: float


def netns_of(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10, check=True).stdout
    return [e["name"] for e in json.loads(out.strip() or "[]") if e["name"].startswith(prefix + "-")]


def start(tmp_path_factory: pytest.TempPathFactory, fix: bool, keep: bool = False) -> Run:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump"):
        need_tool(tool)
    from badsum.lab.scenarios.vxlan_mtu_df import SCENARIO
    from badsum.lab.state import new_prefix

    out, prefix = tmp_path_factory.mktemp("vxlan-mtu-df-fix" if fix else "vxlan-mtu-df"), new_prefix()
    t0 = time.monotonic()
    result = SCENARIO.run(out, fix=fix, keep=keep, prefix=prefix)
    return Run(result, out, prefix, time.monotonic() - t0)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return start(tmp_path_factory, fix=False)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    from badsum.lab.state import clean

    run = start(tmp_path_factory, fix=True, keep=True)
    try:
        # The lab is still up: read the MTUs the fix left with `ip -j`, then remove it.
        last = UNDERLAYS[-1]
        want_mtu = {("h1", "eth0"): last, ("h2", "eth0"): last, ("h1", "vxlan0"): last - 50, ("h1", "br0"): last - 50,
                    ("c1", "eth0"): last - 50, ("c2", "eth0"): last - 50}  # fmt: skip
        for (ns, dev), want in want_mtu.items():
            doc = json.loads(subprocess.run(["ip", "-n", f"{run.prefix}-{ns}", "-j", "link", "show", dev],
                                            capture_output=True, text=True, timeout=10, check=True).stdout)  # fmt: skip
            assert doc[0]["mtu"] == want, (ns, dev, doc[0]["mtu"])
    finally:
        report = clean(run.prefix)
    assert not report.errors, report.errors
    return run


def capture(run: Run, phase: str, point: str) -> Path:
    path = Path(run.result.captures[f"{phase} {point}"])
    assert path.exists(), path
    return path


def tcpdump(path: Path, *opts: str, expr: str | None = None) -> list[str]:
    argv = ["tcpdump", "-n", *opts, "-r", str(path), *([expr] if expr else [])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()


def frag_needed(path: Path) -> list[tuple[str, str, int]]:
    """(source, destination, reported MTU) of each ICMP type 3 code 4, as tcpdump decodes it."""
    lines = tcpdump(path, "-vv", expr="icmp[icmptype] == icmp-unreach and icmp[icmpcode] == 4")
    return [(m["src"], m["dst"], int(m["mtu"])) for line in lines if (m := _FRAG.search(line))]


def heartbeats(path: Path, underlay: bool = False) -> int:
    """Datagrams to h2's heartbeat port. On the underlay tcpdump must be told the UDP is VXLAN
    (`-T vxlan`): it picks a dissector by either port, and the random source port can be a
    known one (49152 reads as BCM-LI-SHIM)."""
    lines = tcpdump(path, "-T", "vxlan", expr="udp port 4789") if underlay else tcpdump(path)
    return sum(1 for line in lines if f"> {H2}.6784:" in line)


def test_topology_unbound_vxlan_is_created_before_its_bridge_and_address() -> None:
    """Pure: the broken overlay needs a VXLAN without `dev` (the kernel caps a bound one's MTU at
    the underlay's - 50), created before the bridge that enslaves it."""
    from badsum.lab.scenarios.vxlan_mtu_df import topology

    cmds = build_commands(topology(), "bs000000")
    vx = next(i for i, c in enumerate(cmds) if c[3:6] == ["link", "add", "vxlan0"] and c[1:3] == ["-n", "bs000000-h1"])
    assert "dev" not in cmds[vx] and cmds[vx][cmds[vx].index("df") + 1] == "set"
    enslave = cmds.index(["ip", "-n", "bs000000-h1", "link", "set", "vxlan0", "master", "br0"])
    mtu = cmds.index(["ip", "-n", "bs000000-h1", "link", "set", "vxlan0", "mtu", "1500"])
    assert vx < mtu < enslave


@pytest.mark.root
def test_broken_overlay_heartbeat_fails_with_frag_needed(broken: Run) -> None:
    r = broken.result
    assert broken.seconds < 30
    assert r.symptom_observed and r.reproduced and not r.fix_applied
    for u in UNDERLAYS:
        phase = f"u{u}-o1500"
        hb = r.traffic[phase]["heartbeat"]["client"]
        assert hb["replies"] < 3 and "EMSGSIZE" in hb["errors"], hb
        # The VXLAN device answers each sender with frag-needed for the MTU the underlay allows.
        to_h1 = [m for _, dst, m in frag_needed(capture(broken, phase, "h1:br0")) if dst == H1]
        to_c1 = [m for _, dst, m in frag_needed(capture(broken, phase, "c1:eth0")) if dst == C1]
        assert to_h1 and set(to_h1) == {u - 50}, to_h1
        assert to_c1 and set(to_c1) == {u - 50}, to_c1
        # The heartbeat reached the VXLAN device and never the underlay.
        assert heartbeats(capture(broken, phase, "h1:vxlan0")) >= 1
        assert heartbeats(capture(broken, phase, "h1:eth0"), underlay=True) == 0
        assert heartbeats(capture(broken, phase, "h2:eth0"), underlay=True) == 0
        nstat = r.traffic[phase]["nstat"]
        assert nstat["c1"]["IcmpInDestUnreachs"] >= 1 and nstat["h1"]["IcmpInDestUnreachs"] >= 1, nstat
        tcp = r.traffic[phase]["tcp"]
        # Whatever TCP does (recover by PMTU discovery or stall), the result says the same.
        stalled = not tcp["ok"] or tcp["client"]["elapsed_s"] >= 1.0
        row = next(x for x in r.table if x["phase"] == phase)
        assert row["tcp"] == ("ok" if tcp["ok"] else "failed")
        if not stalled:
            assert nstat["c1"]["TcpRetransSegs"] >= 1, nstat  # the oversize segments were sent again, smaller
    assert not netns_of(broken.prefix)


@pytest.mark.root
def test_fixed_overlay_heartbeat_and_tcp_work(fixed: Run) -> None:
    r = fixed.result
    assert fixed.seconds < 30
    assert r.fix_applied and r.reproduced and not r.symptom_observed
    for u in UNDERLAYS:
        phase = f"u{u}-o{u - 50}"
        hb = r.traffic[phase]["heartbeat"]["client"]
        assert hb["replies"] == 3 and not hb["errors"] and hb["size"] == u - 50 - 28, hb
        for point in ("c1:eth0", "h1:br0", "h1:eth0", "h2:eth0"):
            assert frag_needed(capture(fixed, phase, point)) == [], (phase, point)
        for point in ("h1:eth0", "h2:eth0", "h2:vxlan0"):
            assert heartbeats(capture(fixed, phase, point), underlay=point.endswith("eth0")) == 3, (phase, point)
        tcp = r.traffic[phase]["tcp"]
        assert tcp["ok"] and tcp["server"]["sha256"] == tcp["client"]["sha256"], tcp
        assert r.traffic[phase]["nstat"]["c1"]["IcmpInDestUnreachs"] == 0
    # The broken phases of the same run still showed the symptom.
    assert any(m == 1400 for _, _, m in frag_needed(capture(fixed, "u1450-o1500", "c1:eth0")))
    assert not netns_of(fixed.prefix)


def _follow(run: Run, phase: str) -> dict:
    data = run.result.follow.get(phase)
    assert data is not None and "not_run" not in data, f"badsum follow did not run in {phase}: {data}"
    return data


def test_follow_sees_the_inner_packet_through_the_tunnel_and_the_icmp_in_h1(broken: Run) -> None:
    """badsum follow (eBPF): the container's TCP packets are one journey from c1:eth0 through
    h1:vxlan0 and, encapsulated, the underlay (h1:eth0, h2:eth0) to c2:eth0; the frag-needed the
    VXLAN device sends back stays in h1 (h1:vxlan0, h1:br0), as tcpdump sees it at h1:br0."""
    for u in UNDERLAYS:
        phase = f"u{u}-o1500"
        data = _follow(broken, phase)
        tcp = [f for f in data["flows"] if f["flow"]["proto"] == 6 and (f["flow"]["src"], f["flow"]["dst"]) == (C1, C2)]
        assert tcp, data["summary"]
        devices = {h["device"] for f in tcp for h in f["hops"]}
        assert {"c1:eth0", "h1:vxlan0", "h1:eth0", "h2:eth0", "h2:vxlan0", "c2:eth0"} <= devices, devices
        assert data["summary"]["flows_bad"] == 0, [f["first_bad_hop"] for f in data["flows"] if f["first_bad_hop"]]
        icmp_to_h1 = [f for f in data["flows"] if f["flow"]["proto"] == 1 and f["flow"]["dst"] == H1]
        assert icmp_to_h1, [f["text"] for f in data["flows"]]
        assert {h["device"].split(":")[0] for f in icmp_to_h1 for h in f["hops"]} == {"h1"}
        assert [m for _, dst, m in frag_needed(capture(broken, phase, "h1:br0")) if dst == H1]
        # The heartbeat itself never reached the underlay: no hop of its flow outside h1.
        hb = [f for f in data["flows"] if f["flow"]["proto"] == 17 and f["flow"]["dport"] == 6784]
        assert hb and {h["device"].split(":")[0] for f in hb for h in f["hops"]} == {"h1"}
