"""The canary: the offload matrix for the datapaths this host actually has, with its settings.

Calico's `ChecksumOffloadBroken` is a hard-coded guess (flipped four times); the canary asks the
kernel instead. It reads the root namespace (never writes it): `ip -j -d link show` for the kinds
present, `ethtool --json -k` for their offload settings, and `ovs-vsctl` (short timeout) for OVS
bridges, and a running Docker's networks through its API socket (GET only; `canary_docker`).
Then it builds each datapath in throwaway namespaces (`badsum.lab.matrix`), applies the
host's settings to the lab's interfaces, and runs the matrix cells. Nothing is started or changed
outside the lab's own namespaces; no tracefs instance, no kernel module.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from badsum.lab import canary_docker, matrix
from badsum.lab.lab import Lab, preflight
from badsum.lab.ovs import ovs_available

MAX_INTERFACES = 256  # ethtool reads per run: a bound on hosts with thousands of veths
SHOW_NAMES = 3
DEFAULT_TX, DEFAULT_RX = True, True  # what the kernel gives a new veth


@dataclass(frozen=True, slots=True)
class Setting:
    """Offloads for one cell, and where they were read."""

    tx: bool
    rx: bool
    device_tx: bool | None = None
    source: str = ""


@dataclass(slots=True)
class Presence:
    """Is a datapath on this host, on what evidence, and which settings to test it with."""

    datapath: str
    present: bool = False
    reasons: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    """Root-namespace interfaces whose tx/rx stand for the datapath's container side."""
    devices: list[str] = field(default_factory=list)
    """Root-namespace devices of the datapath itself (VXLAN) whose tx is copied."""
    skip: str | None = None
    """Present but not testable here, and why."""


@dataclass(frozen=True, slots=True)
class OvsBridges:
    """What a running ovsdb said: bridge -> (datapath_type, ports); or why it said nothing."""

    bridges: dict[str, tuple[str, tuple[str, ...]]]
    error: str | None = None


# -- reading the host (read-only) -----------------------------------------------------------------


def read_links() -> list[dict]:
    out = subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, text=True, timeout=10, check=True).stdout
    return json.loads(out or "[]")


def read_features(ifname: str) -> dict[str, bool] | None:
    r = subprocess.run(["ethtool", "--json", "-k", ifname], capture_output=True, text=True, timeout=5, check=False)
    if r.returncode != 0:
        return None
    try:
        doc = json.loads(r.stdout)[0]
    except (ValueError, IndexError):
        return None
    return {k: bool(v.get("active")) for k, v in doc.items() if isinstance(v, dict) and "active" in v}


def read_ovs() -> OvsBridges:
    """Bridges of a running OVS, via ovs-vsctl with a short timeout (never starts anything)."""
    if shutil.which("ovs-vsctl") is None:
        return OvsBridges({}, "ovs-vsctl not installed")
    base = ["ovs-vsctl", "--timeout=2"]
    try:
        r = subprocess.run([*base, "-f", "json", "--columns=name,datapath_type", "list", "Bridge"],
                           capture_output=True, text=True, timeout=4, check=False)  # fmt: skip
        if r.returncode != 0:
            return OvsBridges({}, (r.stderr.strip().splitlines() or ["ovsdb not reachable"])[-1])
        bridges = {}
        for name, dptype in json.loads(r.stdout)["data"]:
            ports = subprocess.run([*base, "list-ports", name], capture_output=True, text=True, timeout=4, check=False)
            bridges[name] = (dptype or "system", tuple(ports.stdout.split()))
        return OvsBridges(bridges)
    except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError) as e:
        return OvsBridges({}, f"ovs-vsctl: {e}")


# -- interpreting it (pure) -----------------------------------------------------------------------


def _kind(link: dict) -> str:
    return (link.get("linkinfo") or {}).get("info_kind", "")


def detect(links: list[dict], ovs: OvsBridges) -> dict[str, Presence]:
    """Which matrix datapaths the root namespace shows, from `ip -j -d link` and ovsdb."""
    p = {name: Presence(name) for name in matrix.DATAPATHS}
    by_kind: dict[str, list[str]] = {}
    for link in links:
        by_kind.setdefault(_kind(link), []).append(link["ifname"])
    bridges = set(by_kind.get("bridge", []))
    veths = by_kind.get("veth", [])
    if veths:
        p["veth"].present = True
        p["veth"].reasons.append(f"{len(veths)} veth: {_names(veths)}")
        p["veth"].interfaces = veths
    if bridges:
        ports = [lk["ifname"] for lk in links if lk.get("master") in bridges and _kind(lk) == "veth"]
        p["bridge"].present = True
        p["bridge"].reasons.append(f"bridge {_names(sorted(bridges))}" + (f" with veth ports {_names(ports)}" if ports else ""))
        p["bridge"].interfaces = ports
    if by_kind.get("vxlan"):
        p["vxlan"].present = True
        p["vxlan"].reasons.append(f"vxlan {_names(by_kind['vxlan'])}")
        p["vxlan"].devices = by_kind["vxlan"]
    o = p["ovs-netdev"]
    netdev = {b: ports for b, (dp, ports) in ovs.bridges.items() if dp == "netdev"}
    if netdev:
        o.present = True
        o.reasons.append(f"ovsdb: datapath_type=netdev on {_names(sorted(netdev))}")
        names = {lk["ifname"] for lk in links if _kind(lk) == "veth"}
        o.interfaces = [x for ports in netdev.values() for x in ports if x in names]
    if any(lk["ifname"] == "ovs-netdev" and _kind(lk) == "tun" for lk in links):
        o.present = True  # the userspace datapath's own tap; it stays after ovs-vswitchd exits
        o.reasons.append("tap ovs-netdev, the OVS userspace datapath's internal port"
                         + (f" (ovsdb: {ovs.error})" if not netdev and ovs.error else ""))  # fmt: skip
    system = [b for b, (dp, _) in ovs.bridges.items() if dp != "netdev"]
    if not o.present and (system or by_kind.get("openvswitch")):
        o.present = True
        o.reasons.append("OVS kernel datapath " + (f"bridges {_names(system)}" if system else "(openvswitch links)"))
        o.skip = "the OVS kernel datapath is not in the matrix (the lab loads no kernel module)"
    return p


def settings(pres: Presence, features: dict[str, dict[str, bool]]) -> list[Setting]:
    """The distinct settings to test: the host's where it has the interfaces, else the defaults."""
    seen: dict[tuple[bool, bool], list[str]] = {}
    for name in pres.interfaces:
        f = features.get(name)
        if f is not None:
            seen.setdefault((f.get("tx-checksumming", False), f.get("rx-checksumming", False)), []).append(name)
    what = {"bridge": "veth bridge ports", "ovs-netdev": "veth OVS ports"}.get(pres.datapath, "veths")
    if seen:
        base = [Setting(tx, rx, None, f"{what} {_names(names)}") for (tx, rx), names in sorted(seen.items(), reverse=True)]
    elif not pres.present:
        base = [Setting(DEFAULT_TX, DEFAULT_RX, None, "defaults (not on this host)")]
    elif pres.datapath == "vxlan":
        base = [Setting(DEFAULT_TX, DEFAULT_RX, None, "defaults on the container side")]
    else:
        base = [Setting(DEFAULT_TX, DEFAULT_RX, None, f"defaults (no {what} in the root namespace)")]
    dev_seen: dict[bool, list[str]] = {}
    for name in pres.devices:
        f = features.get(name)
        if f is not None:
            dev_seen.setdefault(f.get("tx-checksumming", False), []).append(name)
    if not dev_seen:
        return base
    return [Setting(s.tx, s.rx, dtx, f"{s.source}; device tx {'on' if dtx else 'off'} as on {_names(names)}")
            for s in base for dtx, names in sorted(dev_seen.items(), reverse=True)]  # fmt: skip


def _names(names: list[str]) -> str:
    more = len(names) - SHOW_NAMES
    return ", ".join(names[:SHOW_NAMES]) + (f" (+{more})" if more > 0 else "")


# -- the run --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """One datapath's answer."""

    datapath: str
    status: str
    """PASS, FAIL, UNKNOWN (could not decide), SKIP (present, not testable), ABSENT (not run)."""
    why: str
    present: bool
    reasons: list[str]
    cells: list[dict] = field(default_factory=list)


@dataclass(slots=True)
class CanaryReport:
    outcomes: list[Outcome]
    prefix: str = ""
    duration_s: float = 0.0
    kernel: str = field(default_factory=platform.release)
    all: bool = False
    docker: list[canary_docker.DockerEngine] = field(default_factory=list)
    """Each running dockerd's datapath, and the cell that tested it (empty: no Docker here)."""

    @property
    def status(self) -> str:
        tested = [o.status for o in self.outcomes]
        return "FAIL" if "FAIL" in tested else "UNKNOWN" if "UNKNOWN" in tested else "PASS"

    def as_dict(self) -> dict:
        return asdict(self) | {"status": self.status}


def run(*, all_datapaths: bool = False, prefix: str | None = None, out: Path | None = None,
        progress: Callable[[str], None] | None = None, docker_host: str | None = None) -> CanaryReport:  # fmt: skip
    """Detect, build, measure, tear down. Raises LabError when it cannot run (exit code 3).
    `docker_host` (unix://PATH) asks that engine only; by default every running dockerd is asked."""
    preflight()
    t0 = time.monotonic()
    links = read_links()
    ovs = read_ovs()
    pres = detect(links, ovs)
    engines = canary_docker.discover(docker_host, ovs.bridges)
    docker_features = docker_presence(pres, engines)
    wanted = [n for n, p in pres.items() if (p.present or all_datapaths) and not p.skip]
    why_not = {n: w for n in wanted if matrix.DATAPATHS[n].needs_ovs and (w := ovs_available())}
    names = [n for n in wanted if n not in why_not]
    asked = [x for n in names for x in (*pres[n].interfaces, *pres[n].devices) if x not in docker_features][:MAX_INTERFACES]
    features = {x: f for x in dict.fromkeys(asked) if (f := read_features(x)) is not None} | docker_features
    plan = [(matrix.Cell(n, s.tx, s.rx, s.device_tx), s.source) for n in names for s in settings(pres[n], features)]
    results: list[tuple[matrix.CellResult, str]] = []
    lab_prefix = ""
    if plan:
        scratch = out or Path(tempfile.mkdtemp(prefix="badsum-canary-"))
        try:
            with Lab(matrix.topology(names), scenario="canary", out=scratch, prefix=prefix) as lab:
                lab_prefix = lab.prefix
                if progress:
                    progress(f"built {', '.join(names)} in namespaces {lab.prefix}-*")
                matrix.prepare(lab, names)
                for i, (cell, source) in enumerate(plan):
                    if progress:
                        progress(f"testing {cell.label}; settings from {source}")
                    results.append((matrix.run_cell(lab, cell, port=9200 + i, out=scratch / "cells"), source))
        finally:
            if out is None:
                shutil.rmtree(scratch, ignore_errors=True)
    outcomes = [outcome(pres[n], [(r, s) for r, s in results if r.cell.datapath == n], why_not.get(n))
                for n in matrix.DATAPATHS]  # fmt: skip
    docker_verdicts(engines, outcomes)
    return CanaryReport(outcomes, lab_prefix, round(time.monotonic() - t0, 2), all=all_datapaths, docker=engines)


def docker_presence(pres: dict[str, Presence], engines: list[canary_docker.DockerEngine]) -> dict[str, dict[str, bool]]:
    """A Docker network makes its cell's datapath present. A dockerd in another network namespace
    keeps its bridges where the root namespace's `ip link` does not show them: its containers'
    veths, as `veth@container`, join the cell's interfaces, with the offloads read there (returned)."""
    features: dict[str, dict[str, bool]] = {}
    for eng in engines:
        for n in eng.networks:
            if not n.cell:
                continue
            pres[n.cell].present = True
            pres[n.cell].reasons.append(f"Docker network {n.name} ({n.driver}{f' {n.bridge}' if n.bridge else ''})")
            if eng.netns == "root":
                continue  # detect() already has these veths as the root namespace's bridge ports
            for e in n.containers:
                if e.veth and e.tx is not None and e.rx is not None:
                    label = f"{e.veth}@{e.container}"
                    pres[n.cell].interfaces.append(label)
                    features[label] = {"tx-checksumming": e.tx, "rx-checksumming": e.rx}
        for p in eng.ovs_ports:
            if p.cell:
                pres[p.cell].present = True
                pres[p.cell].reasons.append(f"ovs-docker port {p.port} of {p.container}")
    return features


def docker_verdicts(engines: list[canary_docker.DockerEngine], outcomes: list[Outcome]) -> None:
    """Each Docker network gets the status of the cell that exercised its datapath."""
    status = {o.datapath: o.status for o in outcomes if o.status != "ABSENT"}
    for eng in engines:
        for n in eng.networks:
            n.canary = status.get(n.cell) if n.cell else None
        for p in eng.ovs_ports:
            p.canary = status.get(p.cell) if p.cell else None


def outcome(pres: Presence, results: list[tuple[matrix.CellResult, str]], cannot: str | None) -> Outcome:
    o = Outcome(pres.datapath, "ABSENT", "not on this host (--all tests it anyway)", pres.present, pres.reasons)
    if pres.skip or cannot:
        o.status, o.why = "SKIP", pres.skip or cannot or ""
        return o
    if not results:
        return o
    o.cells = [r.row() | {"settings": src, "point": r.wire["point"], "tcp_csum_errors": r.counters.get("TcpInCsumErrors", 0),
                          "udp_csum_errors": r.counters.get("UdpInCsumErrors", 0), "wire": r.wire["tcp"],
                          "tcpdump_incorrect": r.wire["tcpdump_incorrect"], "seconds": r.seconds}
               for r, src in results]  # fmt: skip
    bad = [r for r, _ in results if r.fails]
    if bad:
        o.status, o.why = "FAIL", "; ".join(_why_fail(r) for r in bad)
    elif all(r.corrupt_dropped for r, _ in results):
        o.status, o.why = "PASS", "; ".join(_why_pass(r) for r, _ in results)
    else:
        o.status = "UNKNOWN"
        o.why = "; ".join(f"{r.cell.label}: the corrupt datagrams were neither delivered nor counted "
                          f"(UdpInCsumErrors +{r.udp['UdpInCsumErrors']}, marker seen: {r.udp['marker_seen']})"
                          for r, _ in results if r.corrupt_dropped is None)  # fmt: skip
    return o


def _settings(c: matrix.Cell) -> str:
    return c.label.split(" ", 1)[1]


def _why_fail(r: matrix.CellResult) -> str:
    parts = []
    if not r.tcp:
        s = f"valid TCP broken with {_settings(r.cell)} (receiver TcpInCsumErrors +{r.counters.get('TcpInCsumErrors', 0)})"
        if r.wire["complete"] is False:
            s += f"; {r.wire['tcp']['partial']} segments reached {r.wire['point']} with the pseudo-header sum alone"
        if r.cell.datapath == "ovs-netdev" and r.cell.tx:
            s += "; KB-005, fix: ethtool -K <container-side veth> tx off"
        parts.append(s)
    if r.corrupt_dropped is False:
        parts.append(f"CORRUPT data delivered to the application with {_settings(r.cell)} "
                     f"({r.udp['others']} of {r.udp['sent']} bad-checksum datagrams; KB-001: ethtool -K <container eth0> rx off)")  # fmt: skip
    return "; ".join(parts)


def _why_pass(r: matrix.CellResult) -> str:
    w = r.wire["tcp"]
    sums = "sums complete" if not w["partial_pending"] else "sums still owed by the kernel (offload pending), none unfinished"
    return (f"{_settings(r.cell)}: TCP intact, {r.udp['sent']} corrupt datagrams dropped "
            f"(UdpInCsumErrors +{r.udp['UdpInCsumErrors']}), {sums} at {r.wire['point']}")  # fmt: skip
