"""KB-005: the OVS userspace datapath forwards CHECKSUM_PARTIAL packets unfinished.

Two containers on an OVS `netdev` bridge through veth pairs with TX checksum offload on (the
veth default). The sender's TCP segments carry only the pseudo-header sum (offload pending);
ovs-vswitchd reads them with AF_PACKET (no vnet header unless userspace-tso-enable=true) and
re-injects the bytes on the other veth, where the receiver's kernel checks and drops them.
ICMP works because its checksum is always computed in software: "ping works, TCP fails".
"""

from __future__ import annotations

from collections.abc import Callable

from badsum.lab.lab import Lab
from badsum.lab.result import ScenarioResult
from badsum.lab.scenarios import checks
from badsum.lab.scenarios.base import Scenario
from badsum.lab.topology import Address, OVSBridge, Topology, Veth

C1, C2 = "198.51.100.1", "198.51.100.2"
#: The interfaces whose transmit offload leaves the sum pending: the containers' eth0.
FIX_TARGETS = (("c1", "eth0"), ("c2", "eth0"))


def topology() -> Topology:
    return Topology(
        name="ovs-userspace-veth",
        namespaces=["host", "c1", "c2"],
        veths=[Veth("c1", "eth0", "host", "c1-veth"), Veth("c2", "eth0", "host", "c2-veth")],
        ovs=[OVSBridge("host", "br0", ("c1-veth", "c2-veth"))],
        addresses=[Address("c1", "eth0", f"{C1}/24"), Address("c2", "eth0", f"{C2}/24")],
    )


POINTS = {
    "c1:eth0": ("c1", "eth0"),
    "host:c1-veth": ("host", "c1-veth"),
    "host:c2-veth": ("host", "c2-veth"),
    "c2:eth0": ("c2", "eth0"),
}


def phase(lab: Lab, result: ScenarioResult, label: str, port: int, points: dict[str, tuple[str, str]] = POINTS,
          ping: Callable[[], dict] | None = None) -> bool:  # fmt: skip
    """One round of traffic with captures at `points` (c2:eth0 among them); returns whether the
    symptom showed. `ping` pings c2 from c1 (default: the host's ping inside c1)."""
    before = lab.counters(["c2"])
    with lab.capture(points, tag=label) as caps, lab.follow(f"host {C2}") as fol:
        ping_result = ping() if ping is not None else lab.ping("c1", C2, count=3)
        tcp = lab.tcp_transfer("c1", "c2", C2, port=port, nbytes=100_000, timeout=4)
    after = lab.counters(["c2"])
    result.follow[label] = fol.data if fol.data is not None else {"not_run": fol.why_not}
    result.add("badsum follow", f"{label}: {fol.summary()}; TCP_CSUM drops at c2:eth0: {fol.drops('TCP_CSUM', 'c2:eth0')}",
               fol.first_bad_hops())  # fmt: skip
    csum_errors = after["c2"]["TcpInCsumErrors"] - before["c2"]["TcpInCsumErrors"]
    for point, path in caps.items():
        result.captures[f"{label} {point}"] = str(path)
    result.traffic[label] = {"ping": ping_result, "tcp": tcp}
    result.add("ping", f"{label}: ICMP echo {ping_result['received']}/{ping_result['sent']} answered", ping_result)
    result.add("application", f"{label}: TCP transfer {'delivered intact' if tcp['ok'] else 'failed'}"
               + (" (CORRUPT data delivered)" if tcp["corrupt_delivered"] else ""), tcp["server"])  # fmt: skip
    result.add("nstat", f"{label}: TcpInCsumErrors in c2 rose by {csum_errors}", csum_errors)
    arriving = checks.tcpdump_incorrect(caps["c2:eth0"], "tcp")
    result.add("tcpdump", f"{label}: {arriving} TCP segments arrive at c2:eth0 with an incorrect checksum", arriving)
    partial = checks.badsum_statuses(caps["c2:eth0"]).get(("tcp", "partial"), 0)
    result.add("badsum pcap", f"{label}: {partial} of them hold the pseudo-header sum alone (partial)", partial)
    return ping_result["ok"] and not tcp["ok"] and csum_errors > 0


def body(lab: Lab, result: ScenarioResult, fix: bool) -> None:
    observe_and_fix(lab, result, fix)


def observe_and_fix(lab: Lab, result: ScenarioResult, fix: bool, points: dict[str, tuple[str, str]] = POINTS,
                    ping: Callable[[], dict] | None = None) -> None:  # fmt: skip
    """The scenario's phases (shared with docker-ovs): the symptom, then with `fix` the same traffic
    after `ethtool -K eth0 tx off` in c1 and c2; sets the result's verdict."""
    lab.ovs["host"].vsctl("set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=false")
    feats = lab.features("c1", "eth0")
    result.add("ethtool", f"c1:eth0 tx-checksum-ip-generic is {'on' if feats.get('tx-checksum-ip-generic') else 'off'}",
               feats.get("tx-checksum-ip-generic"))  # fmt: skip
    broken = phase(lab, result, "before fix" if fix else "run", 9000, points, ping)
    symptom = broken
    if fix:
        for ns, dev in FIX_TARGETS:
            lab.set_feature(ns, dev, "tx", False)
        off = all(not lab.features(ns, dev).get("tx-checksum-ip-generic") for ns, dev in FIX_TARGETS)
        result.add("ethtool", f"fix: `ethtool -K eth0 tx off` in c1 and c2; ethtool --json -k confirms off: {off}", off)
        result.fix_applied = True
        symptom = phase(lab, result, "after fix", 9002, points, ping)
    result.symptom_observed = symptom
    result.reproduced = broken
    if fix:
        result.verdict = (f"before the fix ping worked and TCP failed: {'yes' if broken else 'no'}; "
                          f"after `ethtool -K eth0 tx off` TCP {'still fails' if symptom else 'works'}")  # fmt: skip
    elif broken:
        result.verdict = ("reproduced: ping works, TCP fails; the OVS userspace datapath delivers segments with "
                          "the pseudo-header sum alone and c2's kernel drops them (TcpInCsumErrors)")  # fmt: skip
    else:
        result.verdict = "not reproduced on this host: TCP works across the OVS userspace datapath"


SCENARIO = Scenario(
    name="ovs-userspace-veth",
    title="OVS userspace datapath forwards offloaded TCP checksums unfinished: ping works, TCP fails",
    kb=("KB-005",),
    topology=topology,
    body=body,
    needs_ovs=True,
    watch=("c1", "c2"),
)
