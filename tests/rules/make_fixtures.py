"""Write the rule fixtures: `python tests/rules/make_fixtures.py` (then review the diff).

fixtures/<RULE-ID>/fire-NAME.json must make the rule fail or warn, naming the objects in
fire-NAME.expect.json (and, where given there, exactly those fix commands); quiet-NAME.json
must not. fixtures/clean-host.json is a fresh, healthy node: no rule may fire on it.
"""

from __future__ import annotations

import json
from dataclasses import replace
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rule_fixtures import (
    Fixture,
    expect,
    obj,
    KUBE_AFTER,
    KUBE_BEFORE,
    NIC,
    VETH,
    VETH_TX_OFF,
    VXLAN_TX_OFF,
    counters,
    feats,
    host,
    netns,
    nic,
    ovs_netdev,
    ovs_not_running,
    snapshot,
    veth,
    vxlan,
)

from fixtures_wave2 import FIXTURES as WAVE2

from badsum.host.model import HostSnapshot, KernelLog, KernelLogEvent, Link, Route, TcBpf

HERE = Path(__file__).resolve().parent / "fixtures"
#: What `tc -j filter show dev X egress` gives for the labs' emulation programs (tests/data/tc/).
KB001_PROG = TcBpf("egress", "kb001_veth_xmit", 6475, "4d2de98c921725fb", "kb001_veth.bpf.o:[tc]", True, 49152)
KB004_PROG = TcBpf("egress", "kb004_nat_csum", 6127, "0ba607106429b2e2", "kb004_nat.bpf.o:[tc]", True, 49152)


def pod(release: str, *, rx: bool = True, bridge: str | None = None, v6: bool = False,
        emulated: bool = False) -> HostSnapshot:  # fmt: skip
    """A host with one container namespace `pod1` behind a veth; the host end on `bridge` or routed;
    with `emulated`, badsum's KB-001 lab program on the host end's tc egress."""
    features = VETH if rx else feats(on=("tx-checksumming", "tx-checksum-ip-generic"), off=("rx-checksumming",))
    addrs = ("192.0.2.10/24",) + (("2001:db8:1::10/64",) if v6 else ())
    host_veth = veth("veth1a2b", 10, "pod1", 2, "eth0", master=bridge)
    if emulated:
        host_veth = replace(host_veth, tc_bpf=(KB001_PROG,))
    host_links: tuple[Link, ...] = (nic(), host_veth)
    if bridge:
        host_links = (*host_links, Link(3, bridge, "bridge", 1500, "up", addresses=("192.0.2.1/24",)))
    return snapshot(release, host(host_links), netns("pod1", 4026532200, (veth("eth0", 2, "host", 10, "veth1a2b", features=features, addresses=addrs),)))


def kb001() -> dict[str, Fixture]:
    return {
        "fire-routed-el7": (pod("3.10.0-327.el7.x86_64"),
                            expect("fail", obj("pod1", "eth0"), obj("host", "veth1a2b"),
                                   fix=["nsenter --net=/run/netns/pod1 -- ethtool -K eth0 rx off"])),
        "fire-bridged-upstream": (pod("4.2.0", bridge="docker0"), expect("warn", obj("pod1", "eth0"), obj("host", "veth1a2b"))),
        "fire-bridged-ipv6": (pod("4.1.5", bridge="docker0", v6=True), expect("fail", obj("pod1", "eth0"), obj("host", "veth1a2b"))),
        "quiet-el7-backport": (pod("3.10.0-514.el7.x86_64"), None),
        "quiet-rx-off": (pod("4.1.5", rx=False), None),
        "quiet-kernel-4.4": (pod("4.4.0"), None),
        "fire-lab-emulation": (pod("6.18.44", emulated=True),
                               expect("fail", obj("pod1", "eth0"), obj("host", "veth1a2b"),
                                      obj("host", "veth1a2b/tc-egress/kb001_veth_xmit"),
                                      fix=["nsenter --net=/run/netns/pod1 -- ethtool -K eth0 rx off"])),
        "quiet-lab-emulation-rx-off": (pod("6.18.44", rx=False, emulated=True), None),
    }  # fmt: skip


def kb002() -> dict[str, Fixture]:
    ufo_on = feats(on=("rx-checksumming", "tx-checksumming", "udp-fragmentation-offload"))
    ufo_off = feats(on=("rx-checksumming", "tx-checksumming"), fixed_off=("udp-fragmentation-offload",))
    return {
        "fire-virtio-el7.0": (snapshot("3.10.0-123.el7.x86_64", host((nic(features=ufo_on),))),
                              expect("fail", obj("host", "eth0"), fix=["ethtool -K eth0 ufo off"])),
        "quiet-el7.1": (snapshot("3.10.0-229.el7.x86_64", host((nic(features=ufo_on),))), None),
        "quiet-ufo-off": (snapshot("3.12.0", host((nic(features=ufo_off),))), None),
    }  # fmt: skip


def tunnel_host(release: str, tun: Link, lower_mtu: int = 1450, routes: tuple[Route, ...] | None = None,
                extra: tuple[Link, ...] = ()) -> HostSnapshot:  # fmt: skip
    links = (nic(mtu=lower_mtu), tun, *extra)
    return snapshot(release, host(links) if routes is None else host(links, routes=routes))


def kb003() -> dict[str, Fixture]:
    df = vxlan("vxlan0", vni=42, port=4789, remote="198.51.100.2", df="set", mtu=1450, udpcsum=True)
    return {
        "fire-openstack-1450": (tunnel_host("6.1.110", df),
                                expect("fail", obj("host", "vxlan0"), obj("host", "eth0"), fix=["ip link set dev vxlan0 mtu 1400"])),
        "fire-el7.0-warn": (tunnel_host("3.10.0-123.el7.x86_64", df), expect("warn", obj("host", "vxlan0"), obj("host", "eth0"))),
        "quiet-fits": (tunnel_host("6.1.110", vxlan("vxlan0", vni=42, port=4789, df="set", mtu=1400)), None),
        "quiet-df-unset": (tunnel_host("6.1.110", vxlan("vxlan0", vni=42, port=4789, df="unset", mtu=1450)), None),
    }  # fmt: skip


def kube_node(release: str, nat: tuple[str, ...], *, tx: bool = True, node_ns: str | None = None,
              udpcsum: bool | None = False, tools: dict | None = None, emulated: str | None = None) -> HostSnapshot:  # fmt: skip
    """`emulated`: the device badsum's KB-004 lab program is attached to (tc egress)."""
    links = (nic(), vxlan(features=None if tx else VXLAN_TX_OFF, udpcsum=udpcsum))
    if emulated is not None:
        links = tuple(replace(x, tc_bpf=(KB004_PROG,) if x.name == emulated else ()) for x in links)
    if node_ns:  # the node is itself a namespace (a lab, or a node-in-a-container)
        ns = netns(node_ns, 4026532300, links, nat=nat)
        return snapshot(release, host((nic(),)), ns, tools=tools)
    return snapshot(release, host(links, nat=nat), tools=tools)


KB004_FIX_HOST = [
    "iptables -t nat -I KUBE-POSTROUTING 1 -m mark '!' --mark 0x4000/0x4000 -j RETURN",
    "iptables -t nat -I KUBE-POSTROUTING 2 -j MARK --xor-mark 0x4000",
    "iptables -t nat -R KUBE-POSTROUTING 3 -m comment --comment 'kubernetes service traffic requiring SNAT' -j MASQUERADE --random-fully",
    "ethtool -K flannel.1 tx-checksum-ip-generic off",
]


def kb004() -> dict[str, Fixture]:
    objs = (obj("host", "flannel.1"), obj("host", "nat/KUBE-POSTROUTING"))
    return {
        "fire-kernel-4.19.100": (kube_node("4.19.100", KUBE_BEFORE), expect("fail", *objs, fix=KB004_FIX_HOST)),
        "fire-fixed-kernel-warn": (kube_node("5.10.200", KUBE_BEFORE), expect("warn", *objs)),
        "fire-node-namespace": (kube_node("5.4.0-26-generic", KUBE_BEFORE, node_ns="node1"),
                                expect("fail", obj("node1", "flannel.1"), obj("node1", "nat/KUBE-POSTROUTING"))),
        "fire-legacy-backend": (snapshot("4.19.100", host((nic(), vxlan()), nat=(), legacy_nat=KUBE_BEFORE)),
                                expect("fail", *objs, fix=["ethtool -K flannel.1 tx-checksum-ip-generic off"])),
        "quiet-unmark-rules": (kube_node("4.19.100", KUBE_AFTER), None),
        "quiet-tx-off": (kube_node("4.19.100", KUBE_BEFORE, tx=False), None),
        "quiet-udpcsum-on": (kube_node("4.19.100", KUBE_BEFORE, udpcsum=True), None),
        "quiet-no-vxlan": (snapshot("4.19.100", host((nic(),), nat=KUBE_BEFORE)), None),
        # The lab (vxlan-double-snat) on a fixed kernel: its emulation on the uplink makes it fail again.
        "fire-lab-emulation": (kube_node("6.18.44", KUBE_BEFORE, node_ns="bs1a2b3c-node1", emulated="eth0"),
                               expect("fail", obj("bs1a2b3c-node1", "flannel.1"), obj("bs1a2b3c-node1", "nat/KUBE-POSTROUTING"),
                                      obj("bs1a2b3c-node1", "eth0/tc-egress/kb004_nat_csum"))),
        "quiet-lab-emulation-unmark-rules": (kube_node("6.18.44", KUBE_AFTER, node_ns="bs1a2b3c-node1", emulated="eth0"),
                                             None),
    }  # fmt: skip


def ovs_lab(peer_features=VETH, *, other_config=None, datapath="netdev", pid: int | None = None, running: bool = True) -> HostSnapshot:
    c1 = netns("bs1a2b3c-c1", 4026532400, (veth("eth0", 2, "host", 20, "c1-veth", features=peer_features),), pid=pid)
    host_veth = veth("c1-veth", 20, c1.id, 2, "eth0", features=VETH)
    ovs = ovs_netdev(("c1-veth",), datapath=datapath, other_config=other_config) if running else ovs_not_running()
    return snapshot("6.1.110", host((nic(), host_veth)), c1, ovs=(ovs,))


def kb005() -> dict[str, Fixture]:
    return {
        "fire-netdev-veth": (ovs_lab(), expect("fail", obj("bs1a2b3c-c1", "eth0"), obj("host", "c1-veth"),
                                                fix=["nsenter --net=/run/netns/bs1a2b3c-c1 -- ethtool -K eth0 tx off"])),
        "fire-process-namespace": (ovs_lab(pid=4242), expect("fail", obj("pid:4242", "eth0"), obj("host", "c1-veth"),
                                                             fix=["nsenter --net=/proc/4242/ns/net -- ethtool -K eth0 tx off"])),
        "quiet-peer-tx-off": (ovs_lab(VETH_TX_OFF), None),
        "quiet-userspace-tso": (ovs_lab(other_config={"userspace-tso-enable": "true"}), None),
        "quiet-kernel-datapath": (ovs_lab(datapath="system"), None),
        "quiet-ovs-not-running": (ovs_lab(running=False), None),
    }  # fmt: skip


def vsphere(release: str, tnl: bool = True, overlay: bool = True) -> HostSnapshot:
    names = ("tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation")
    f = dict(NIC, **(feats(on=names) if tnl else feats(off=names)))
    links: tuple[Link, ...] = (nic("ens192", driver="vmxnet3", features=f),)
    if overlay:
        links = (*links, vxlan("vxlan.calico", vni=4096, port=4789, lower="ens192"))
    return snapshot(release, host(links, routes=(Route("default", "ens192", "198.51.100.254"),)))


def kb006() -> dict[str, Fixture]:
    fix = ["ethtool -K ens192 tx-udp_tnl-segmentation off", "ethtool -K ens192 tx-udp_tnl-csum-segmentation off"]
    return {
        "fire-rhel-8.3": (vsphere("4.18.0-240.el8.x86_64"), expect("fail", obj("host", "ens192"), fix=fix)),
        "fire-fixed-kernel-warn": (vsphere("6.1.110"), expect("warn", obj("host", "ens192"))),
        "quiet-offload-off": (vsphere("4.18.0-240.el8.x86_64", tnl=False), None),
        "quiet-no-overlay": (vsphere("4.18.0-240.el8.x86_64", overlay=False), None),
    }  # fmt: skip


def vpp(command: str = "/usr/bin/vpp -c /etc/vpp/startup.conf", peer=VETH) -> HostSnapshot:
    c1 = netns("c1", 4026532500, (veth("eth0", 2, "pid:777", 30, "vpp1", features=peer),))
    fwd = netns("vpp", 4026532501, (veth("vpp1", 30, "c1", 2, "eth0"),), pid=777, command=command)
    return snapshot("6.1.110", host((nic(),)), c1, fwd)


def kb007() -> dict[str, Fixture]:
    return {
        "fire-vpp-af-packet": (vpp(), expect("warn", obj("c1", "eth0"), obj("pid:777", "vpp1"),
                                             fix=["nsenter --net=/run/netns/c1 -- ethtool -K eth0 tx off"])),
        "quiet-peer-tx-off": (vpp(peer=VETH_TX_OFF), None),
        "quiet-no-forwarder": (vpp(command="/usr/sbin/nginx -g daemon off;"), None),
    }  # fmt: skip


def kb008() -> dict[str, Fixture]:
    def node(release: str, tunnel: bool = True, log: KernelLog | None = None) -> HostSnapshot:
        snap = pod(release, bridge="cni0")
        if tunnel:
            snap = snapshot(release, host((*snap.namespaces[0].links[1:], vxlan())), *snap.namespaces[1:])
        return replace(snap, kernel_log=log)

    el72 = "3.10.0-327.36.3.el7.x86_64"
    # weave#2267's report shape: the fault named on the VXLAN device, then a call trace (not events).
    faults = KernelLog("/dev/kmsg", tuple(KernelLogEvent("hw-csum-failure", "vxlan_sys_4789", 81_000_000 + i, 900 + i,
                                                         "vxlan_sys_4789: hw csum failure") for i in range(3)),
                       {"hw-csum-failure": 3}, 4100)  # fmt: skip
    clean_log = KernelLog("/dev/kmsg", (), {}, 4100)
    unreadable = KernelLog(None, error="kernel log unreadable (/dev/kmsg: Operation not permitted; dmesg: read kernel buffer failed)")
    kernel_and_tunnel = (obj("host", el72), obj("host", "flannel.1"))
    return {
        "fire-el7.2-vxlan": (node(el72), expect("warn", *kernel_and_tunnel)),
        "fire-el7.2-log-hw-csum-failure": (node(el72, log=faults), expect("fail", *kernel_and_tunnel)),
        "fire-el7.2-log-unreadable": (node(el72, log=unreadable), expect("warn", *kernel_and_tunnel)),
        "quiet-el7.2-log-clean": (node(el72, log=clean_log), expect("pass", *kernel_and_tunnel)),
        "quiet-el7.3": (node("3.10.0-514.el7.x86_64"), None),
        "quiet-no-tunnel": (node("3.10.0-327.el7.x86_64", tunnel=False), None),
    }  # fmt: skip


def tailscale(release: str, tun: bool = True) -> HostSnapshot:
    links: tuple[Link, ...] = (nic(),)
    if tun:
        links = (*links, Link(7, "tailscale0", "tun", 1280, "unknown", driver="tun", addresses=("100.64.0.1/32",)))
    return snapshot(release, host(links))


def kb009() -> dict[str, Fixture]:
    return {
        "fire-6.6.44": (tailscale("6.6.44"), expect("fail", obj("host", "6.6.44"), obj("host", "eth0"), obj("host", "tailscale0"))),
        "fire-6.10.5-warn": (tailscale("6.10.5"), expect("warn", obj("host", "6.10.5"), obj("host", "eth0"), obj("host", "tailscale0"))),
        "quiet-6.6.46": (tailscale("6.6.46"), None),
        "quiet-6.6.44-no-gso-device": (snapshot("6.6.44", host((nic(driver="e1000e"),))), None),
    }  # fmt: skip


def weave(release: str, overlay_mtu: int = 8916) -> HostSnapshot:
    links = (
        nic(mtu=9001),
        Link(8, "datapath", "openvswitch", overlay_mtu, "unknown"),
        Link(9, "weave", "bridge", overlay_mtu, "up"),
        veth("vethwe-datapath", 10, "host", 11, "vethwe-bridge", master="datapath", mtu=overlay_mtu),
        veth("vethwe-bridge", 11, "host", 10, "vethwe-datapath", master="weave", mtu=overlay_mtu),
        vxlan("vxlan-6784", 12, mtu=1500, vni=0, port=6784, lower=None, local=None, master="datapath"),
    )
    return snapshot(release, host(links))


def kb010() -> dict[str, Fixture]:
    return {
        "fire-coreos-4.3": (weave("4.3.3"), expect("fail", obj("host", "vxlan-6784"), obj("host", "datapath"))),
        "quiet-kernel-4.5": (weave("4.5.0"), None),
        "quiet-weave-mtu-1376": (weave("4.4.6", overlay_mtu=1376), None),
    }  # fmt: skip


def cfg_mtu() -> dict[str, Fixture]:
    v6 = vxlan("vxlan6", vni=7, port=4789, lower=None, local="2001:db8::1", remote="2001:db8::2", mtu=1450)
    eth1 = nic("eth1", 3, addresses=("2001:db8::1/64",))
    v6_routes = (Route("default", "eth0", "198.51.100.254"), Route("2001:db8::/64", "eth1"))
    geneve = Link(6, "gnv0", "geneve", 1500, "unknown", driver="geneve", features=VXLAN_TX_OFF)
    cilium = vxlan("cilium_vxlan", vni=0, lower=None, local=None, mtu=1500)
    ovs_vport = vxlan("vxlan_sys_4789", vni=0, port=4789, lower=None, local=None, mtu=65000, master="ovs-system")
    return {
        "fire-vxlan-1500": (tunnel_host("6.1.110", vxlan("vxlan0", vni=42, port=4789, mtu=1500), lower_mtu=1500),
                            expect("fail", obj("host", "vxlan0"), obj("host", "eth0"), fix=["ip link set dev vxlan0 mtu 1450"])),
        "fire-vxlan-ipv6-route": (tunnel_host("6.1.110", v6, lower_mtu=1500, routes=v6_routes, extra=(eth1,)),
                                  expect("fail", obj("host", "vxlan6"), obj("host", "eth1"), fix=["ip link set dev vxlan6 mtu 1430"])),
        "fire-geneve-default-route": (tunnel_host("6.1.110", geneve, lower_mtu=1500), expect("fail", obj("host", "gnv0"), obj("host", "eth0"))),
        "fire-route-mtu": (tunnel_host("6.1.110", vxlan(mtu=1450, lower=None), lower_mtu=1500,
                                       routes=(Route("default", "eth0", "198.51.100.254", mtu=1400),)),
                           expect("fail", obj("host", "flannel.1"), obj("host", "eth0"), fix=["ip link set dev flannel.1 mtu 1350"])),
        "quiet-flannel-1450": (tunnel_host("6.1.110", vxlan(), lower_mtu=1500), None),
        "quiet-flow-based": (tunnel_host("6.1.110", cilium, lower_mtu=1500), None),
        "quiet-ovs-vport": (tunnel_host("6.1.110", ovs_vport, lower_mtu=1500,
                                        extra=(Link(9, "ovs-system", "openvswitch", 1500, "down"),)), None),
    }  # fmt: skip


def counter_node(host_sample, pod_sample=None) -> HostSnapshot:
    pod = netns("pod", 4026532600, (veth("eth0", 2, "host", 10, "cali0a1b"),), pid=1234, command="nginx: master process",
                sample=pod_sample)  # fmt: skip
    return snapshot("6.12.10", host((nic(), veth("cali0a1b", 10, "pid:1234", 2, "eth0")), sample=host_sample), pod)


def counters_rising() -> dict[str, Fixture]:
    return {
        "fire-pod-tcp": (counter_node(counters(), counters({"TcpInCsumErrors": 10}, {"TcpInCsumErrors": 14})),
                         expect("fail", obj("pid:1234", "TcpInCsumErrors"))),
        "fire-host-udp": (counter_node(counters({"UdpInCsumErrors": 3, "TcpInCsumErrors": 2}, {"UdpInCsumErrors": 9, "TcpInCsumErrors": 2}, 2.0)),
                          expect("fail", obj("host", "UdpInCsumErrors"))),
        "quiet-flat-nonzero": (counter_node(counters({"TcpInCsumErrors": 5})), None),
        "quiet-zero": (counter_node(counters()), None),
    }  # fmt: skip


def counters_past() -> dict[str, Fixture]:
    return {
        "fire-flat-nonzero": (counter_node(counters(), counters({"TcpInCsumErrors": 5, "IpExtInCsumErrors": 1})),
                              expect("warn", obj("pid:1234", "IpExtInCsumErrors"), obj("pid:1234", "TcpInCsumErrors"))),
        "quiet-zero": (counter_node(counters()), None),
        "quiet-only-rising": (counter_node(counters({"UdpInCsumErrors": 3}, {"UdpInCsumErrors": 4})), None),
    }  # fmt: skip


def clean_host() -> HostSnapshot:
    """A healthy Kubernetes node with flannel: modern kernel, kube-proxy's unmark rules, counters at zero."""
    pods = [netns(f"cni-{i}", 4026532700 + i, (veth("eth0", 2, "host", 20 + i, f"veth{i:04x}", addresses=(f"192.0.2.{10 + i}/24",)),),
                  pid=2000 + i, command="pause")
            for i in range(3)]
    links = (nic(), Link(4, "cni0", "bridge", 1450, "up", addresses=("192.0.2.1/24",)), vxlan(),
             *(veth(f"veth{i:04x}", 20 + i, f"pid:{2000 + i}", 2, "eth0", master="cni0") for i in range(3)))
    return snapshot("6.12.10", host(links, nat=KUBE_AFTER), *pods, ovs=(ovs_not_running(),))


FIXTURES = {
    "KB-001": kb001, "KB-002": kb002, "KB-003": kb003, "KB-004": kb004, "KB-005": kb005, "KB-006": kb006,
    "KB-007": kb007, "KB-008": kb008, "KB-009": kb009, "KB-010": kb010, "CFG-OVERLAY-MTU": cfg_mtu,
    "CSUM-COUNTERS-RISING": counters_rising, "CSUM-COUNTERS-PAST": counters_past,
    **WAVE2,
}  # fmt: skip


def main() -> None:
    for rule_id, make in FIXTURES.items():
        folder = HERE / rule_id
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):
            old.unlink()
        for name, (snap, exp) in make().items():
            (folder / f"{name}.json").write_text(snap.to_json() + "\n")
            if exp is not None:
                (folder / f"{name}.expect.json").write_text(json.dumps(exp, indent=1) + "\n")
    (HERE / "clean-host.json").write_text(clean_host().to_json() + "\n")


if __name__ == "__main__":
    main()
