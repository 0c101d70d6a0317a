"""Open vSwitch instances (a badsum lab's private OVS, judged by ovs-vsctl itself) and a host with
many namespaces (every one found, every veth peer resolved; the time is printed, not asserted)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from support import need_root, need_tool
from hostkit import Netns, ip_links, run

from badsum.host.collect import collect_snapshot
from badsum.host.model import HOST_NS
from badsum.host.ovs import DEFAULT_SOCKET, find_vswitchd

pytestmark = pytest.mark.root


def _need_ovs() -> None:
    need_root()
    from badsum.lab.ovs import ovs_available

    if why := ovs_available():
        pytest.skip(why)


def test_private_ovs_instance_matches_ovs_vsctl(tmp_path: Path) -> None:
    _need_ovs()
    from badsum.lab.lab import Lab
    from badsum.lab.scenarios.ovs_userspace_veth import topology

    with Lab(topology(), scenario="host-collector-test", out=tmp_path) as lab:
        priv = lab.ovs["host"]
        priv.vsctl("set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=false")
        hostns, c1 = lab.ns("host"), lab.ns("c1")
        s = collect_snapshot(time.time(), counter_interval=0.0, namespaces={hostns, c1})
        db = f"unix:{priv.sock}"
        vsctl = lambda *a: run(["ovs-vsctl", f"--db={db}", "--timeout=5", *a]).strip()
        vswitchd = next(p for p in priv.procs if p.name == "ovs-vswitchd")
        rows = json.loads(vsctl("--format=json", "--columns=name,type", "list", "Interface"))["data"]
        oracle_ifaces = {name: kind or "system" for name, kind in rows}  # OVS's empty type is `system`
        oracle_bridges = vsctl("list-br").split()
        oracle_other = vsctl("get", "Open_vSwitch", ".", "other_config")
        oracle_dp = vsctl("get", "Bridge", "br0", "datapath_type")
        oracle_version = run(["ovs-vswitchd", "--version"]).split()[3]
        c1_eth0 = s.ns(c1).link("eth0") if s.ns(c1) else None
    info = next((o for o in s.ovs if o.db == db), None)
    assert info is not None, s.ovs
    assert (info.running, info.pid, info.namespace, info.error) == (True, vswitchd.pid, hostns, None)
    assert [b.name for b in info.bridges] == oracle_bridges == ["br0"]
    br0 = info.bridges[0]
    assert br0.datapath_type == oracle_dp.strip('"') == "netdev"
    assert {p.name: p.type for p in br0.ports} == oracle_ifaces
    assert {p.name for p in br0.ports} == {"br0", "c1-veth", "c2-veth"}
    assert info.other_config == {"userspace-tso-enable": "false"} and "userspace-tso-enable=\"false\"" in oracle_other
    assert info.version == oracle_version
    # The container end of the veth names the OVS port on the other side.
    assert c1_eth0 is not None and (c1_eth0.peer_ns, c1_eth0.peer_name) == (hostns, "c1-veth")


def test_ovs_installed_but_not_running() -> None:
    need_root()
    need_tool("ovs-vsctl")
    if find_vswitchd() or Path(DEFAULT_SOCKET).exists():
        pytest.skip("an Open vSwitch runs on this host now")
    s = collect_snapshot(time.time(), counter_interval=0.0, namespaces={HOST_NS})
    assert len(s.ovs) == 1
    assert s.ovs[0].running is False and s.ovs[0].bridges == () and "not running" in (s.ovs[0].error or "")


N = 50


def test_fifty_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "nsenter"):
        need_tool(tool)
    with Netns() as n:
        (hub,) = n.add("hub")
        batch = []
        for i in range(N):
            batch.append(f"netns add {n.name(f'c{i}')}")
        run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")
        n.created += [n.name(f"c{i}") for i in range(N)]
        links = []
        for i in range(N):
            links.append(f"link add h{i} type veth peer name eth0 netns {n.name(f'c{i}')}")
        run(["ip", "-n", hub, "-batch", "-"], input="\n".join(links) + "\n")
        ids = {hub, *(n.name(f"c{i}") for i in range(N))}
        t0 = time.monotonic()
        s = collect_snapshot(time.time(), counter_interval=1.0, namespaces=ids)
        took = time.monotonic() - t0
        t0 = time.monotonic()
        whole = collect_snapshot(time.time(), counter_interval=1.0)
        took_all = time.monotonic() - t0
        hub_oracle = {e["ifname"]: e["ifindex"] for e in ip_links(hub)}
    assert {ns.id for ns in s.namespaces} == ids
    assert all(ns.errors == () and ns.counters is not None for ns in s.namespaces)
    h = s.ns(hub)
    assert h is not None
    for i in range(N):
        c = s.ns(n.name(f"c{i}"))
        assert c is not None and c.link("eth0") is not None
        eth0 = c.link("eth0")
        assert (eth0.peer_ns, eth0.peer_name, eth0.peer_ifindex) == (hub, f"h{i}", hub_oracle[f"h{i}"])
        hl = h.link(f"h{i}")
        assert hl is not None and (hl.peer_ns, hl.peer_name) == (c.id, "eth0")
    assert ids <= {ns.id for ns in whole.namespaces}
    with capsys.disabled():
        print(f"\n[host collector] {N + 1} namespaces ({2 * N} veths, counter_interval=1.0): {took:.2f} s; "
              f"whole host then ({len(whole.namespaces)} namespaces): {took_all:.2f} s", file=sys.stderr)
