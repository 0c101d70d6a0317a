"""How big the `doctor --html` page is and how long it takes to make for a host with N namespaces.

    PYTHONPATH=src python3 bench/html_report.py --namespaces 500          # collapsed (what doctor does)
    PYTHONPATH=src python3 bench/html_report.py --namespaces 500 --no-collapse
    PYTHONPATH=src python3 bench/html_report.py --browser        # also: headless Chromium loads and paints it

The host is synthetic: eth0, a docker0 bridge, an OVS br-int (system datapath) and a VXLAN device
on eth0; N namespaces with one veth each (half on docker0, half on br-int), every 50th with a
second veth to another namespace; KB-005-like findings on two veth ends. tests/report/test_html_doctor.py
builds the same host.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time

from badsum.host.model import (
    HOST_NS,
    Feature,
    HostSnapshot,
    KernelInfo,
    Link,
    Namespace,
    OVSBridge,
    OVSInfo,
    OVSPort,
    VxlanInfo,  # fmt: skip
)
from badsum.rules.model import Finding, ObjectRef, Outcome, Severity

FEATURES = {"tx-checksum-ip-generic": Feature(True, False), "rx-checksumming": Feature(True, False),
            "generic-receive-offload": Feature(True, False), "rx-udp-gro-forwarding": Feature(False, False)}  # fmt: skip


def synthetic_host(n: int) -> tuple[HostSnapshot, list[Finding]]:
    host_links = [Link(1, "lo", "loopback", 65536, "UNKNOWN"),
                  Link(2, "eth0", "device", 1500, "UP", features=FEATURES, driver="virtio_net"),
                  Link(3, "docker0", "bridge", 1500, "UP"),
                  Link(4, "br-int", "openvswitch", 1450, "UP"),
                  Link(5, "vxlan0", "vxlan", 1450, "UP", vxlan=VxlanInfo(42, 4789, "10.0.0.1", None, "eth0", False, "unset"),
                       features=FEATURES)]  # fmt: skip
    namespaces, ovs_ports = [], [OVSPort("br-int", "br-int", "internal"), OVSPort("vxlan0", "br-int", "system")]
    for i in range(n):
        name, host_end = f"c{i}", f"veth{i}"
        on_ovs = i % 2 == 1
        host_links.append(Link(100 + i, host_end, "veth", 1450, "UP", master=None if on_ovs else "docker0",
                               peer_ifindex=2, peer_ns=name, peer_name="eth0", features=FEATURES))  # fmt: skip
        if on_ovs:
            ovs_ports.append(OVSPort(host_end, "br-int", "system"))
        links = [Link(1, "lo", "loopback", 65536, "UNKNOWN"),
                 Link(2, "eth0", "veth", 1450, "UP", peer_ifindex=100 + i, peer_ns=HOST_NS, peer_name=host_end, features=FEATURES)]
        if i % 50 == 0 and i + 1 < n:  # a sidecar pair to the next namespace: not collapsible
            links.append(Link(3, "side0", "veth", 1500, "UP", peer_ifindex=4, peer_ns=f"c{i + 1}", peer_name="side1"))
        if i % 50 == 1:
            links.append(Link(4, "side1", "veth", 1500, "UP", peer_ifindex=3, peer_ns=f"c{i - 1}", peer_name="side0"))
        namespaces.append(Namespace(name, 4026532000 + i, f"/run/netns/{name}", (name,), links=tuple(links)))
    host = Namespace(HOST_NS, 4026531840, None, links=tuple(host_links))
    snap = HostSnapshot(0.0, "node500", KernelInfo("6.1.0", (6, 1, 0)), True, (host, *namespaces),
                        ovs=(OVSInfo(True, bridges=(OVSBridge("br-int", "system", tuple(ovs_ports)),)),))  # fmt: skip
    bad = min(7, n - 1)
    findings = [Finding("KB-005", "OVS userspace datapath forwards veth packets with unfinished checksums", Severity.HIGH,
                        Outcome.FAIL, (ObjectRef(f"c{bad}", "eth0", "veth"), ObjectRef(HOST_NS, f"veth{bad}", "ovs-port")),
                        "evidence text", "why text")]  # fmt: skip
    return snap, findings


def browser_seconds(html: str) -> float:
    """Wall time of a headless Chromium opening the page and writing a screenshot (start-up included)."""
    with tempfile.TemporaryDirectory() as d:
        page = f"{d}/page.html"
        with open(page, "w") as f:
            f.write(html)
        t0 = time.perf_counter()
        subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        f"--user-data-dir={d}/profile", f"--screenshot={d}/shot.png", "--window-size=1400,1000",
                        f"file://{page}"], capture_output=True, timeout=300, check=True)  # fmt: skip
        return time.perf_counter() - t0


def measure(n: int, collapse: bool, browser: bool = False) -> dict[str, object]:
    from badsum.report.html_doctor import COLLAPSE_OVER, doctor_page, host_dot
    from badsum.report.html_io import dot_to_svg

    snap, findings = synthetic_host(n)
    t0 = time.perf_counter()
    m = host_dot(snap, findings, collapse_over=COLLAPSE_OVER if collapse else 10**9)
    t1 = time.perf_counter()
    svg = dot_to_svg(m.dot, timeout=900)
    t2 = time.perf_counter()
    html = doctor_page(snap, findings, m, svg)
    t3 = time.perf_counter()
    size = re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg)
    extra = {"svg_pt": f"{float(size[1]):.0f}x{float(size[2]):.0f}"} if size else {}
    if browser:
        extra["chromium_s"] = browser_seconds(html)
    return {**extra, "namespaces": n, "map_nodes": sum(1 for k in m.nodes if not k.startswith("ns")), "dot_bytes": len(m.dot),
            "html_bytes": len(html.encode()), "build_dot_s": t1 - t0, "dot_layout_s": t2 - t1, "page_s": t3 - t2,
            "total_s": t3 - t0}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--namespaces", type=int, default=500)
    ap.add_argument("--no-collapse", action="store_true", help="draw every namespace (what the collapse avoids)")
    ap.add_argument("--browser", action="store_true", help="also time headless Chromium opening the page")
    a = ap.parse_args(argv)
    r = measure(a.namespaces, collapse=not a.no_collapse, browser=a.browser)
    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
