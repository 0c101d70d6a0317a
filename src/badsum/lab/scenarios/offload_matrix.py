"""offload-matrix: every container datapath under every TX/RX checksum offload setting.

For each datapath (veth only, Linux bridge, OVS userspace `netdev`, VXLAN) and each `tx`/`rx`
setting on the container-side interfaces: does TCP work, is a datagram with a wrong UDP checksum
dropped (or delivered: KB-001), and are checksums complete where the packet is re-created or on
the wire (KB-005)? The measuring is `badsum.lab.matrix`, shared with `badsum canary`; this module
only runs the 16 cells and words the answer. On current kernels the expected failures are the OVS
netdev cells with tx on (KB-005); rx is varied everywhere because it is cheap, although since
v4.4 (ce8c839b74e3) it changes nothing for veth.
"""

from __future__ import annotations

from badsum.lab import matrix
from badsum.lab.lab import Lab
from badsum.lab.result import ScenarioResult
from badsum.lab.scenarios.base import Scenario
from badsum.lab.topology import Topology

PORT_BASE = 9100


def topology() -> Topology:
    names, _ = matrix.runnable()
    return matrix.topology(names)


def built(lab: Lab) -> list[str]:
    return [n for n, d in matrix.DATAPATHS.items() if d.sender in lab.topology.namespaces]


def body(lab: Lab, result: ScenarioResult, fix: bool) -> None:
    names = built(lab)
    for name, why in matrix.runnable()[1].items():
        result.add("preflight", f"{name}: skipped ({why})")
    matrix.prepare(lab, names)
    cells = [matrix.run_cell(lab, c, port=PORT_BASE + i, out=lab.out / "cells")
             for i, c in enumerate(matrix.full_matrix(names))]  # fmt: skip
    for r in cells:
        label = r.cell.label
        result.table.append(r.row())
        result.captures[label] = r.capture
        result.traffic[label] = {"tcp": r.tcp_detail, "udp": r.udp, "wire": r.wire, "applied": r.applied,
                                 "counters": r.counters, "seconds": r.seconds}  # fmt: skip
        record(result, r)
    mismatched = [r.cell.label for r in cells if not settings_applied(r)]
    result.add("ethtool", "every cell's tx/rx read back as set" if not mismatched
               else f"tx/rx did not read back as set in: {', '.join(mismatched)}", mismatched)  # fmt: skip
    if fix:
        result.add("scenario", "--fix: nothing to apply; the matrix already measures every tx/rx setting")
    failing = [r for r in cells if r.fails]
    result.symptom_observed = bool(failing)
    ovs_tx_on = [r for r in cells if r.cell.datapath == "ovs-netdev" and r.cell.tx]
    result.reproduced = all(not r.tcp for r in ovs_tx_on) if ovs_tx_on else None
    result.verdict = verdict(cells)


def settings_applied(r: matrix.CellResult) -> bool:
    return all(v["tx"] == r.cell.tx and v["rx"] == r.cell.rx for k, v in r.applied.items()
               if k in {f"{ns}:{dev}" for ns, dev in matrix.DATAPATHS[r.cell.datapath].containers})  # fmt: skip


def record(result: ScenarioResult, r: matrix.CellResult) -> None:
    """Evidence lines for the cells worth reading: those that fail or leave sums unfinished."""
    label, w = r.cell.label, r.wire
    if not r.tcp:
        t = r.tcp_detail
        result.add("application", f"{label}: TCP transfer failed ({t['client'].get('error') or 'hash mismatch'})"
                   + (" (CORRUPT data delivered)" if t.get("corrupt_delivered") else ""), t["server"])  # fmt: skip
        result.add("nstat", f"{label}: TcpInCsumErrors in the receiver rose by {r.counters.get('TcpInCsumErrors', 0)}",
                   r.counters.get("TcpInCsumErrors", 0))  # fmt: skip
    if r.corrupt_dropped is not True:
        what = "DELIVERED to the application" if r.corrupt_dropped is False else "neither delivered nor counted"
        result.add("application", f"{label}: {r.udp['sent']} datagrams with a wrong UDP checksum: {what} "
                   f"(UdpInCsumErrors +{r.udp['UdpInCsumErrors']})", r.udp)  # fmt: skip
    if w["complete"] is False:
        result.add("badsum pcap", f"{label}: {w['tcp']['partial']} TCP checksums at {w['point']} ({w['role']}) hold "
                   f"the pseudo-header sum alone and the kernel no longer owes them (no TP_STATUS_CSUMNOTREADY); "
                   f"{w['tcp']['bad']} bad", w["tcp"])  # fmt: skip
        result.add("tcpdump", f"{label}: tcpdump -vv calls {w['tcpdump_incorrect']} checksums at {w['point']} incorrect",
                   w["tcpdump_incorrect"])  # fmt: skip


def verdict(cells: list[matrix.CellResult]) -> str:
    failing = [r for r in cells if r.fails]
    if not failing:
        return f"all {len(cells)} cells pass: TCP works, corrupt datagrams are dropped, sums complete"
    parts = []
    for r in failing:
        why = []
        if not r.tcp:
            why.append("breaks TCP")
        if r.corrupt_dropped is False:
            why.append("delivers corrupt data")
        if r.wire_complete is False:
            why.append(f"unfinished checksums at {r.wire['point']}")
        parts.append(f"{r.cell.label} ({', '.join(why)})")
    kb = " (KB-005: OVS netdev forwards offloaded checksums unfinished; fix: ethtool -K <container veth> tx off)" \
        if any(r.cell.datapath == "ovs-netdev" and r.cell.tx and not r.tcp for r in failing) else ""  # fmt: skip
    return f"{len(failing)} of {len(cells)} cells fail: " + "; ".join(parts) + kb


SCENARIO = Scenario(
    name="offload-matrix",
    title="every datapath x TX/RX checksum offload: does TCP work, is corruption dropped, are sums complete",
    kb=("KB-005", "KB-001"),
    topology=topology,
    body=body,
)
