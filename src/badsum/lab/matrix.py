"""The offload matrix: container datapaths as data, and one measured cell per offload setting.

A datapath joins two "containers" (`c1` sends, `c2` receives, 198.51.100.1 -> .2):

    veth        c1:eth0 ─veth─ c2:eth0
    bridge      c1:eth0 ─veth─ br-host:br0 ─veth─ c2:eth0
    ovs-netdev  c1:eth0 ─veth─ ovs-host:br0 (OVS userspace datapath, AF_PACKET ports) ─veth─ c2:eth0
    vxlan       c1:eth0 ─veth─ h1:br0+vx0 ═ underlay 203.0.113.0/24 ═ h2:vx0+br0 ─veth─ c2:eth0

A cell sets `tx`/`rx` (ethtool -K) on the container-side interfaces, then measures three things,
each with an oracle of its own:

1. valid traffic: one TCP transfer; the receiving application hashes what it got;
2. a corrupt datagram: UDP with a wrong checksum built by the agent and sent through a raw socket
   (no offload touches it), then a valid marker; dropped = the application never saw it AND the
   receiver's UdpInCsumErrors (nstat) rose; delivered = corrupt data reached the application;
3. checksums on the wire: a capture between the datapath and the receiver (for VXLAN the
   underlay), with the kernel's per-packet status. A partial checksum on a packet the kernel
   still marks CHECKSUM_PARTIAL (TP_STATUS_CSUMNOTREADY) is offload pending: the receiver's stack
   trusts the skb. The same bytes without that mark were re-created (a userspace forwarder,
   KB-005) or put on the wire unfinished: not complete. tcpdump -vv counts the raw incorrect ones.

Topologies are built once per datapath (one Lab, one prefix) and cells only flip offloads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from badsum.capture import open_capture
from badsum.checksum.detailed import DetailedJudge
from badsum.checksum.verdict import Layer, Status, VerdictFlag
from badsum.lab import evidence
from badsum.lab.lab import Lab
from badsum.lab.ovs import ovs_available
from badsum.lab.runner import Background, wait_for
from badsum.lab.topology import Address, Bridge, OVSBridge, Topology, Veth, Vxlan

C1, C2 = "198.51.100.1", "198.51.100.2"
UL1, UL2 = "203.0.113.1", "203.0.113.2"
VXLAN_PORT = 4789  # IANA: tcpdump decodes the inner packets on it as well as badsum
VXLAN_MTU = 1450
TCP_BYTES = 100_000
TCP_TIMEOUT = 2.5  # a healthy transfer takes milliseconds; a broken one costs this much
CORRUPT_COUNT = 3
MARKER = "badsum-marker"


@dataclass(frozen=True, slots=True)
class Datapath:
    """How two containers are joined, where to look, and which interfaces the offloads go on."""

    name: str
    title: str
    topology: Callable[[], Topology]
    sender: str
    receiver: str
    point: tuple[str, str]
    """(namespace, device) between the datapath and the receiver."""
    point_role: str
    """What the capture point is: `receiver`, `bridge egress`, `re-created by ovs-vswitchd`, `underlay`."""
    containers: tuple[tuple[str, str], ...]
    """The container-side interfaces that `tx`/`rx` are set on."""
    devices: tuple[tuple[str, str], ...] = ()
    """The datapath's own devices (the VXLAN devices): where a host's device setting is copied."""
    wire_filter: str = f"tcp and dst host {C2}"
    """tcpdump filter for the packets judged at the point (towards the receiver)."""
    needs_ovs: bool = False
    kb: tuple[str, ...] = ()


def _veth() -> Topology:
    return Topology(
        name="veth",
        namespaces=["veth-c1", "veth-c2"],
        veths=[Veth("veth-c1", "eth0", "veth-c2", "eth0")],
        addresses=[Address("veth-c1", "eth0", f"{C1}/24"), Address("veth-c2", "eth0", f"{C2}/24")],
    )


def _two_ports(tag: str) -> Topology:
    host, c1, c2 = f"{tag}-host", f"{tag}-c1", f"{tag}-c2"
    return Topology(
        name=tag,
        namespaces=[host, c1, c2],
        veths=[Veth(c1, "eth0", host, "c1-veth"), Veth(c2, "eth0", host, "c2-veth")],
        addresses=[Address(c1, "eth0", f"{C1}/24"), Address(c2, "eth0", f"{C2}/24")],
    )


def _bridge() -> Topology:
    t = _two_ports("br")
    t.bridges.append(Bridge("br-host", "br0", ("c1-veth", "c2-veth")))
    return t


def _ovs() -> Topology:
    t = _two_ports("ovs")
    t.ovs.append(OVSBridge("ovs-host", "br0", ("c1-veth", "c2-veth"), datapath="netdev"))
    return t


def _vxlan() -> Topology:
    veths = [Veth("vx-h1", "ul0", "vx-h2", "ul0"),
             Veth("vx-c1", "eth0", "vx-h1", "c1-veth", mtu=VXLAN_MTU),
             Veth("vx-c2", "eth0", "vx-h2", "c2-veth", mtu=VXLAN_MTU)]  # fmt: skip
    vxlans = [Vxlan("vx-h1", "vx0", 42, VXLAN_PORT, UL1, UL2, "ul0", mtu=VXLAN_MTU),
              Vxlan("vx-h2", "vx0", 42, VXLAN_PORT, UL2, UL1, "ul0", mtu=VXLAN_MTU)]  # fmt: skip
    addresses = [Address("vx-h1", "ul0", f"{UL1}/24"), Address("vx-h2", "ul0", f"{UL2}/24"),
                 Address("vx-c1", "eth0", f"{C1}/24"), Address("vx-c2", "eth0", f"{C2}/24")]  # fmt: skip
    # vx0 joins br0 in prepare(): bridge ports are enslaved when the bridge is made.
    bridges = [Bridge("vx-h1", "br0", ("c1-veth",)), Bridge("vx-h2", "br0", ("c2-veth",))]
    return Topology("vxlan", ["vx-h1", "vx-h2", "vx-c1", "vx-c2"], veths=veths, bridges=bridges, vxlans=vxlans,
                    addresses=addresses)  # fmt: skip


#: Every datapath, in the order tables show them.
_ALL = (
    Datapath("veth", "veth pair only", _veth, "veth-c1", "veth-c2", ("veth-c2", "eth0"), "receiver",
             (("veth-c1", "eth0"), ("veth-c2", "eth0")), kb=("KB-001",)),
    Datapath("bridge", "Linux bridge", _bridge, "br-c1", "br-c2", ("br-host", "c2-veth"), "bridge egress",
             (("br-c1", "eth0"), ("br-c2", "eth0"))),
    Datapath("ovs-netdev", "Open vSwitch userspace (netdev) datapath", _ovs, "ovs-c1", "ovs-c2",
             ("ovs-host", "c2-veth"), "re-created by ovs-vswitchd", (("ovs-c1", "eth0"), ("ovs-c2", "eth0")),
             needs_ovs=True, kb=("KB-005",)),
    Datapath("vxlan", "VXLAN over a bridge", _vxlan, "vx-c1", "vx-c2", ("vx-h2", "ul0"), "underlay",
             (("vx-c1", "eth0"), ("vx-c2", "eth0")), devices=(("vx-h1", "vx0"), ("vx-h2", "vx0")),
             wire_filter=f"udp port {VXLAN_PORT} and dst host {UL2}"),
)  # fmt: skip
DATAPATHS: dict[str, Datapath] = {d.name: d for d in _ALL}


def runnable(names: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The datapaths that can run here, and why the others cannot."""
    skipped: dict[str, str] = {}
    out = []
    for name in names or list(DATAPATHS):
        why = ovs_available() if DATAPATHS[name].needs_ovs else None
        if why:
            skipped[name] = why
        else:
            out.append(name)
    return out, skipped


def topology(names: list[str]) -> Topology:
    """One topology holding every named datapath (their namespaces never overlap)."""
    t = Topology(name="+".join(names), namespaces=[])
    for name in names:
        part = DATAPATHS[name].topology()
        for f in ("namespaces", "veths", "bridges", "ovs", "vxlans", "mtus", "addresses", "routes", "features",
                  "sysctls", "nft"):  # fmt: skip
            getattr(t, f).extend(getattr(part, f))
    return t


def prepare(lab: Lab, names: list[str]) -> None:
    """What the declarative build cannot say, done once per datapath before the cells."""
    if "vxlan" in names:
        for ns in ("vx-h1", "vx-h2"):
            lab.exec(ns, ["ip", "link", "set", "vx0", "master", "br0"])
    if "ovs-netdev" in names:
        # The OVS default, said explicitly: with TSO support on, netdev-linux reads the vnet header.
        lab.ovs["ovs-host"].vsctl("set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=false")


@dataclass(frozen=True, slots=True)
class Cell:
    """One offload setting on one datapath."""

    datapath: str
    tx: bool
    rx: bool
    device_tx: bool | None = None
    """tx on the datapath's own devices (VXLAN); None leaves the kernel default."""

    @property
    def label(self) -> str:
        s = f"{self.datapath} tx={_onoff(self.tx)} rx={_onoff(self.rx)}"
        return s if self.device_tx is None else f"{s} device-tx={_onoff(self.device_tx)}"


def full_matrix(names: list[str]) -> list[Cell]:
    return [Cell(n, tx, rx) for n in names for tx in (True, False) for rx in (True, False)]


@dataclass(slots=True)
class CellResult:
    cell: Cell
    tcp: bool
    corrupt_dropped: bool | None
    """True: dropped by the receiver's checksum check; False: delivered to the application; None: undecided."""
    wire_complete: bool | None
    """None when no TCP checksum towards the receiver was captured."""
    applied: dict[str, dict[str, bool]] = field(default_factory=dict)
    """ethtool --json -k read back after setting: `ns:dev` -> {tx, rx}."""
    tcp_detail: dict = field(default_factory=dict)
    udp: dict = field(default_factory=dict)
    wire: dict = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    """The receiver's checksum counters over the cell (nstat deltas)."""
    capture: str = ""
    seconds: float = 0.0

    @property
    def fails(self) -> bool:
        """Breaks valid traffic or delivers corruption: what the canary's exit code is about."""
        return not self.tcp or self.corrupt_dropped is False

    def row(self) -> dict:
        return {"datapath": self.cell.datapath, "tx": _onoff(self.cell.tx), "rx": _onoff(self.cell.rx),
                "tcp": self.tcp, "corrupt_dropped": self.corrupt_dropped, "wire_complete": self.wire_complete}  # fmt: skip

    def as_dict(self) -> dict:
        d = asdict(self)
        d["cell"]["label"] = self.cell.label
        return d


def run_cell(lab: Lab, cell: Cell, *, port: int, out: Path) -> CellResult:
    """Set the offloads, then measure valid traffic, a corrupt datagram and the wire."""
    dp = DATAPATHS[cell.datapath]
    t0 = time.monotonic()
    tag = cell.label.replace(" ", "_").replace("=", "-")
    for ns, dev in dp.containers:
        lab.exec(ns, ["ethtool", "-K", dev, "tx", _onoff(cell.tx), "rx", _onoff(cell.rx)])
    if cell.device_tx is not None:
        for ns, dev in dp.devices:
            lab.exec(ns, ["ethtool", "-K", dev, "tx", _onoff(cell.device_tx)])
    applied = {}
    for ns, dev in (*dp.containers, *(dp.devices if cell.device_tx is not None else ())):
        f = lab.features(ns, dev)
        applied[f"{ns}:{dev}"] = {"tx": f.get("tx-checksumming", False), "rx": f.get("rx-checksumming", False)}
    before = evidence.counters(lab.ns(dp.receiver))

    out.mkdir(parents=True, exist_ok=True)
    pcap = out / f"{tag}.pcapng"
    sniffer = _start(lab, f"sniff-{tag}", dp.point[0],
                     ["-m", "badsum.capture.live", "--dev", dp.point[1], "--out", str(pcap), "--timeout", "30", "--count", "10000"])  # fmt: skip
    try:
        tcp = lab.tcp_transfer(dp.sender, dp.receiver, C2, port=port, nbytes=TCP_BYTES, timeout=TCP_TIMEOUT)
    finally:
        sniffer.stop()  # it drains what it already holds: every segment towards c2 passed the point
    udp = corrupt_datagrams(lab, dp, port=port, tag=tag)
    after = evidence.counters(lab.ns(dp.receiver))
    counters = evidence.delta(before, after)

    wire = judge_wire(pcap, dp)
    delivered = udp.get("others", 0)
    csum_errors = counters.get("UdpInCsumErrors", 0)
    udp["UdpInCsumErrors"] = csum_errors
    if delivered > 0:
        dropped: bool | None = False
    elif csum_errors >= udp.get("sent", CORRUPT_COUNT) and udp.get("marker_seen"):
        dropped = True
    else:
        dropped = None  # lost before the checksum check, or the path is down: not the receiver's doing
    return CellResult(cell, tcp=bool(tcp["ok"]), corrupt_dropped=dropped, wire_complete=wire["complete"],
                      applied=applied, tcp_detail=tcp, udp=udp, wire=wire, counters=counters,
                      capture=str(pcap) if pcap.exists() else "", seconds=round(time.monotonic() - t0, 2))  # fmt: skip


def corrupt_datagrams(lab: Lab, dp: Datapath, *, port: int, tag: str) -> dict:
    """CORRUPT_COUNT datagrams with a wrong UDP checksum, then a valid marker; what the app got."""
    listener = _start(lab, f"udp-echo-{tag}", dp.receiver,
                      ["-m", "badsum.lab.agent", "udp-echo", "--bind", C2, "--port", str(port),
                       "--count", str(CORRUPT_COUNT + 1), "--timeout", "3", "--stop-on", MARKER])  # fmt: skip
    sender = _start(lab, f"udp-raw-{tag}", dp.sender,
                    ["-m", "badsum.lab.agent", "udp-raw", "--src", C1, "--dst", C2, "--dport", str(port),
                     "--count", str(CORRUPT_COUNT), "--marker", MARKER], ready=False)  # fmt: skip
    sent = _result(sender, 5)
    got = _result(listener, 5)
    return {"sent": sent.get("sent", 0), "stored": sent.get("stored"), "correct": sent.get("correct"),
            "received": got.get("received", 0), "others": got.get("others", 0),
            "marker_seen": bool(got.get("marker_seen")), **({"error": got["error"]} if "error" in got else {})}  # fmt: skip


def judge_wire(pcap: Path, dp: Datapath) -> dict:
    """TCP checksums towards the receiver at the capture point: badsum's verdicts with the
    kernel's status, and tcpdump's raw count of incorrect ones (an independent reading)."""
    counts = {"ok": 0, "partial_pending": 0, "partial": 0, "bad": 0, "other": 0}
    frames = 0
    if pcap.exists():
        judge = DetailedJudge()
        with open_capture(pcap) as reader:
            for b in reader:
                for i in range(len(b)):
                    frames += 1
                    res = judge.judge(b.first_frame + i, int(b.ts_ns[i]), b.packet(i), int(b.origlen[i]),
                                      int(b.linktype[i]), int(b.tp_status[i]))  # fmt: skip
                    for v in res.verdicts:
                        if v.layer != Layer.TCP or v.flow is None or v.flow.dst != C2:
                            continue
                        if v.status == Status.OK:
                            counts["ok"] += 1
                        elif v.status == Status.PARTIAL:
                            counts["partial_pending" if v.flags & VerdictFlag.KERNEL else "partial"] += 1
                        elif v.status == Status.BAD:
                            counts["bad"] += 1
                        else:
                            counts["other"] += 1
    judged = counts["ok"] + counts["partial_pending"] + counts["partial"] + counts["bad"]
    return {"point": f"{dp.point[0]}:{dp.point[1]}", "role": dp.point_role, "frames": frames, "tcp": counts,
            "tcpdump_incorrect": tcpdump_incorrect(pcap, dp.wire_filter) if pcap.exists() else None,
            "complete": None if judged == 0 else counts["partial"] + counts["bad"] == 0}  # fmt: skip


def tcpdump_incorrect(pcap: Path, bpf: str) -> int:
    """How many checksums `tcpdump -vv` calls incorrect (inner ones of VXLAN included)."""
    r = subprocess.run(["tcpdump", "-n", "-vv", "-r", str(pcap), bpf], capture_output=True, text=True, timeout=60, check=False)
    return r.stdout.count("(incorrect")


# -- small helpers: agents and the sniffer run as their own processes in the namespaces -----------


def _start(lab: Lab, name: str, ns: str, args: list[str], ready: bool = True) -> Background:
    p = lab.spawn(name, ns, [sys.executable, *args], stdout_file=lab.state.dir / f"{name}.out")
    if ready:
        wait_for(lambda: "READY" in _stdout(lab, name) or not p.alive(), 10, what=f"{name} ready")
    return p


def _stdout(lab: Lab, name: str) -> str:
    try:
        return (lab.state.dir / f"{name}.out").read_text(errors="replace")
    except OSError:
        return ""


def _result(p: Background, timeout: float) -> dict:
    try:
        p.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        p.stop()
    text = p.log.with_suffix(".out").read_text(errors="replace") if p.log.with_suffix(".out").exists() else ""
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": "agent produced no result", "log": p.output()[-400:]}


def _onoff(on: bool) -> str:
    return "on" if on else "off"
