"""Fixtures for KB-011..KB-020 (known-issues-2.md), written by make_fixtures.py.

Each builder says which real host its facts are shaped after. None of these faults can be shown on
the CI kernel (6.18 has every fix), so the snapshots are built from the reports: interface names,
drivers and rules as those CNIs, NICs and kernels produce them. Addresses are documentation ranges.
"""

from __future__ import annotations

from dataclasses import replace

from rule_fixtures import (
    Fixture,
    expect,
    obj,
    KUBE_AFTER,
    KUBE_BEFORE,
    NIC,
    VETH,
    VETH_TX_OFF,
    VXLAN_ON,
    VXLAN_TX_OFF,
    counters,
    feats,
    host,
    netns,
    nic,
    snapshot,
    veth,
    vxlan,
    with_host,
)

from badsum.host.model import (
    CniSighting,
    GeneveInfo,
    HostSnapshot,
    KernelLog,
    KernelLogEvent,
    Link,
    NatRules,
    Route,
)

def hw_csum_log(device: str, n: int = 3) -> KernelLog:
    """What /dev/kmsg gives after netdev_rx_csum_fault(): "<dev>: hw csum failure" (then a call trace)."""
    events = tuple(KernelLogEvent("hw-csum-failure", device, 5_000_000 + i, 700 + i, f"{device}: hw csum failure")
                   for i in range(n))  # fmt: skip
    return KernelLog("/dev/kmsg", events, {"hw-csum-failure": n}, 5200)


CLEAN_LOG = KernelLog("/dev/kmsg", (), {}, 5200)


# -- KB-011: IPv6 NAT --------------------------------------------------------------------------

#: Docker with "ipv6": true and "ip6tables": true (dockerd 20.10+): its ip6tables nat table.
DOCKER6_NAT = (
    "*nat",
    ":PREROUTING ACCEPT [0:0]",
    ":POSTROUTING ACCEPT [0:0]",
    ":DOCKER - [0:0]",
    "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
    "-A POSTROUTING -s 2001:db8:d0c::/64 ! -o docker0 -j MASQUERADE",
    "-A DOCKER -i docker0 -j RETURN",
    "COMMIT",
)
EMPTY6_NAT = ("*nat", ":PREROUTING ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]", "COMMIT")
#: firewalld's own nft table with IPv6 masquerading (a zone with masquerade=yes).
FIREWALLD_INET = """table inet firewalld {
\tchain nat_POSTROUTING {
\t\ttype nat hook postrouting priority srcnat + 10; policy accept;
\t\toifname "eth0" ip6 saddr 2001:db8:d0c::/64 masquerade
\t}
}
"""


def docker6(release: str, nat6: tuple[str, ...] | None = DOCKER6_NAT, nft: str | None = None, udp6: int = 0) -> HostSnapshot:
    """A Docker host with IPv6 NAT for its containers, mlx5 uplink (the kind of NIC that hands up CHECKSUM_COMPLETE)."""
    uplink = nic(driver="mlx5_core", addresses=("198.51.100.1/24", "2001:db8:1::1/64"))
    links = (uplink, Link(3, "docker0", "bridge", 1500, "up", addresses=("192.0.2.1/24", "2001:db8:d0c::1/64")),
             veth("veth3f2a", 10, "pid:4100", 2, "eth0", master="docker0"))  # fmt: skip
    pod = netns("c1", 4026532800, (veth("eth0", 2, "host", 10, "veth3f2a", addresses=("192.0.2.2/24", "2001:db8:d0c::2/64")),),
                pid=4100, command="/usr/sbin/unbound -d",
                sample=counters({"Udp6InCsumErrors": 0}, {"Udp6InCsumErrors": udp6}))  # fmt: skip
    snap = snapshot(release, host(links), pod)
    nat = NatRules(iptables_nat=(), iptables_backend="nf_tables", ip6tables_nat=nat6, nft_ruleset=nft)
    return with_host(snap, nat=nat)


def kb011() -> dict[str, Fixture]:
    kernel = lambda rel: obj("host", rel)
    return {
        "fire-docker-ipv6-udp6-errors": (docker6("5.3.18", udp6=12), expect("fail", kernel("5.3.18"), obj("host", "nat6"))),
        "fire-docker-ipv6-no-symptoms": (docker6("5.3.18"), expect("warn", kernel("5.3.18"), obj("host", "nat6"))),
        "fire-firewalld-inet-masquerade": (docker6("5.3.18", nat6=EMPTY6_NAT, nft=FIREWALLD_INET),
                                           expect("warn", kernel("5.3.18"), obj("host", "nat6"))),
        "fire-unplaced-kernel-with-symptoms": (docker6("5.4.10", udp6=3), expect("warn", kernel("5.4.10"), obj("host", "nat6"))),
        "quiet-unplaced-kernel-no-symptoms": (docker6("5.4.10"), None),
        "quiet-kernel-5.6": (docker6("5.6.0", udp6=12), None),
        "quiet-no-ipv6-nat": (docker6("5.3.18", nat6=EMPTY6_NAT), None),
    }  # fmt: skip


# -- KB-012: Cilium IPv6 -----------------------------------------------------------------------

CILIUM = CniSighting("cilium", "cni", "vxlan or geneve", ("host:cilium_host", "host:lxc1a2b3c4d5e6f"), 2, ("cilium-agent",))


def cilium_node(release: str, *, v6: bool = True, log: KernelLog | None = None) -> HostSnapshot:
    """A Cilium node (native routing, IPv6 underlay as in cilium PR 38296) with one pod."""
    host_addrs = ("10.0.0.1/32",) + (("2001:db8:c1::1/128",) if v6 else ())
    pod_addrs = ("10.0.0.17/32",) + (("2001:db8:c1::17/128",) if v6 else ())
    links = (nic(driver="mlx5_core", addresses=("198.51.100.1/24",) + (("2001:db8:1::1/64",) if v6 else ())),
             veth("cilium_host", 3, "host", 4, "cilium_net", addresses=host_addrs),
             veth("cilium_net", 4, "host", 3, "cilium_host"),
             veth("lxc1a2b3c4d5e6f", 10, "pid:5100", 2, "eth0"))  # fmt: skip
    pod = netns("pod", 4026532810, (veth("eth0", 2, "host", 10, "lxc1a2b3c4d5e6f", addresses=pod_addrs),), pid=5100,
                command="/pause")  # fmt: skip
    return replace(snapshot(release, host(links), pod), kernel_log=log, cni=(CILIUM,))


def kb012() -> dict[str, Fixture]:
    return {
        "fire-ipv6-hw-csum-failure": (cilium_node("6.8.12", log=hw_csum_log("eth0")),
                                      expect("fail", obj("host", "6.8.12"), obj("host", "cilium_host"))),
        "fire-unplaced-kernel-warn": (cilium_node("6.1.100", log=hw_csum_log("eth0")),
                                      expect("warn", obj("host", "6.1.100"), obj("host", "cilium_host"))),
        "quiet-log-clean": (cilium_node("6.8.12", log=CLEAN_LOG), None),
        "quiet-ipv4-only": (cilium_node("6.8.12", v6=False, log=hw_csum_log("eth0")), None),
        "quiet-kernel-6.16": (cilium_node("6.16.0", log=hw_csum_log("eth0")), None),
    }  # fmt: skip


# -- KB-013: UDP GRO forwarding with the tunnel in another namespace ---------------------------

GRO_FWD_ON = dict(VETH, **feats(on=("rx-udp-gro-forwarding",), off=("rx-gro-list",)))
GRO_LIST_ON = dict(VETH, **feats(on=("rx-gro-list",), off=("rx-udp-gro-forwarding",)))


def kind_host(release: str, features=GRO_FWD_ON, tunnel_in_host: bool = False) -> HostSnapshot:
    """A workstation running kind: the worker node is a container (its own netns) with flannel's VXLAN; the
    host end of its veth has UDP GRO forwarding on (as after Tailscale's exit-node advice, applied to all links)."""
    host_links: tuple[Link, ...] = (nic(), Link(3, "br-4f1c2a", "bridge", 1500, "up", addresses=("172.18.0.1/16",)),
                                    veth("vethk1", 10, "pid:6100", 2, "eth0", master="br-4f1c2a", features=features))  # fmt: skip
    if tunnel_in_host:
        host_links = (*host_links, vxlan())
    node_links: tuple[Link, ...] = (veth("eth0", 2, "host", 10, "vethk1", addresses=("172.18.0.3/16",)),)
    if not tunnel_in_host:
        node_links = (*node_links, vxlan(ifindex=5, lower="eth0", local="172.18.0.3"))
    node = netns("kind-worker", 4026532820, node_links, pid=6100, command="/sbin/init")
    return snapshot(release, host(host_links), node)


def kb013() -> dict[str, Fixture]:
    return {
        "fire-kind-veth-6.8.4": (kind_host("6.8.4"), expect("fail", obj("host", "vethk1"),
                                                            fix=["ethtool -K vethk1 rx-udp-gro-forwarding off"])),
        "fire-gro-list-6.6-warn": (kind_host("6.6.20", GRO_LIST_ON), expect("warn", obj("host", "vethk1"),
                                                                            fix=["ethtool -K vethk1 rx-gro-list off"])),
        "quiet-tunnel-in-same-namespace": (kind_host("6.8.4", tunnel_in_host=True), None),
        "quiet-kernel-6.8.5": (kind_host("6.8.5"), None),
        "quiet-default-features": (kind_host("6.8.4", VETH), None),
    }  # fmt: skip


# -- KB-014: overlay over Tailscale ------------------------------------------------------------


def tailnet_node(release: str, *, bound: str = "lower", underlay_tun: bool = True) -> HostSnapshot:
    """A node whose flannel VXLAN runs over Tailscale (flannel --iface=tailscale0; tailscale#11026's setup)."""
    ts = Link(7, "tailscale0", "tun", 1280, "unknown", driver="tun", addresses=("100.101.102.103/32", "fd7a:115c:a1e0::1/128"))
    if not underlay_tun:
        tun = vxlan(mtu=1230, lower="eth0")
    elif bound == "lower":
        tun = vxlan(mtu=1230, lower="tailscale0", local="100.101.102.103")
    else:  # bound only by its source address (no dev): found through the address tailscale0 holds
        tun = vxlan(mtu=1230, lower=None, local="100.101.102.103")
    return snapshot(release, host((nic(), ts, tun)))


def kb014() -> dict[str, Fixture]:
    return {
        "fire-flannel-over-tailscale0": (tailnet_node("6.5.13"), expect("warn", obj("host", "flannel.1"), obj("host", "tailscale0"))),
        "fire-bound-by-address": (tailnet_node("6.7.12", bound="local"),
                                  expect("warn", obj("host", "flannel.1"), obj("host", "tailscale0"))),
        "quiet-kernel-6.8.5": (tailnet_node("6.8.5"), None),
        "quiet-kernel-5.15": (tailnet_node("5.15.150"), None),
        "quiet-underlay-eth0": (tailnet_node("6.5.13", underlay_tun=False), None),
    }  # fmt: skip


# -- KB-015: vmxnet3 LRO -----------------------------------------------------------------------


def vmware_vm(release: str, lro: bool = True, overlay: bool = True) -> HostSnapshot:
    """A vSphere VM (vmxnet3 ens192, LRO on as the driver sets it; ip_forward off) that is a Docker Swarm
    overlay endpoint: its VXLAN device sits in Docker's overlay namespace."""
    f = dict(NIC, **(feats(on=("large-receive-offload",)) if lro else feats(off=("large-receive-offload",))))
    links: tuple[Link, ...] = (nic("ens192", driver="vmxnet3", features=f),)
    nss = ()
    if overlay:
        nss = (netns("1-k3v9x2m4pq", 4026532830, (vxlan("vxlan0", vni=4097, port=4789, lower=None, local=None, mtu=1450),)),)
    return snapshot(release, host(links, routes=(Route("default", "ens192", "198.51.100.254"),)), *nss)


def kb015() -> dict[str, Fixture]:
    return {
        "fire-6.11-lro-on": (vmware_vm("6.11.5"), expect("fail", obj("host", "ens192"), fix=["ethtool -K ens192 lro off"])),
        "quiet-6.12-unplaced": (vmware_vm("6.12.20"), None),  # unknown: the 6.12.y release with the fix is not known
        "quiet-lro-off": (vmware_vm("6.11.5", lro=False), None),
        "quiet-kernel-6.8.4": (vmware_vm("6.8.4"), None),
        "quiet-kernel-6.16": (vmware_vm("6.16.0"), None),
        "quiet-no-overlay": (vmware_vm("6.11.5", overlay=False), None),
    }  # fmt: skip


# -- KB-016: zero outer UDP checksum -----------------------------------------------------------


def kb016() -> dict[str, Fixture]:
    cilium_vx = vxlan("cilium_vxlan", vni=0, port=8472, lower=None, local=None, mtu=1500)
    rhel = snapshot("4.18.0-240.el8.x86_64", host((nic(), cilium_vx)))  # cilium#15485: RHEL 8.3 with Cilium's VXLAN
    flannel = snapshot("5.8.18", host((nic(), vxlan())))  # flannel's default VXLAN (noudpcsum)
    return {
        "fire-rhel-8.3-cilium": (rhel, expect("warn", obj("host", "cilium_vxlan"))),
        "fire-flannel-5.8": (flannel, expect("warn", obj("host", "flannel.1"))),
        "quiet-udpcsum-on": (snapshot("5.8.18", host((nic(), vxlan(udpcsum=True)))), None),
        "quiet-kernel-5.12": (snapshot("5.12.0", host((nic(), vxlan()))), None),
        "quiet-unplaced-ubuntu-5.4": (snapshot("5.4.0-26-generic", host((nic(), vxlan()))), None),  # unknown, not a warning
    }  # fmt: skip


# -- KB-017: PMTU for bridged tunnels ----------------------------------------------------------


def bridged_vxlan(release: str, mtu: int = 1500) -> HostSnapshot:
    """LXD/libnetwork-style L2 overlay: vxlan0 is a port of br0 together with containers' veths, 1500 on a 1500 underlay."""
    c1 = netns("c1", 4026532840, (veth("eth0", 2, "host", 10, "vethc1", mtu=mtu),))
    links = (nic(), Link(3, "br0", "bridge", mtu, "up"),
             vxlan("vxlan0", 4, mtu=mtu, vni=42, port=4789, lower="eth0", master="br0", udpcsum=True),
             veth("vethc1", 10, "c1", 2, "eth0", master="br0", mtu=mtu))  # fmt: skip
    return snapshot(release, host(links), c1)


def ovs_geneve_node(release: str, *, pod_mtu: int = 1500, under_mtu: int = 1500, cni: CniSighting | None = None) -> HostSnapshot:
    """An OVS kernel-datapath CNI node (Antrea, OVN): genev_sys_6081 and a pod veth on ovs-system."""
    pod = netns("pod", 4026532850, (veth("eth0", 2, "host", 10, "web-1a2b3c", mtu=pod_mtu),))
    gnv = Link(5, "genev_sys_6081", "geneve", 65000, "unknown", master="ovs-system", driver="geneve", features=VXLAN_ON,
               geneve=GeneveInfo(None, 6081, None, False, external=True))  # fmt: skip
    links = (nic(mtu=under_mtu), Link(4, "ovs-system", "openvswitch", 1500, "down"), gnv,
             veth("web-1a2b3c", 10, "pod", 2, "eth0", master="ovs-system", mtu=pod_mtu))  # fmt: skip
    snap = snapshot(release, host(links), pod)
    return replace(snap, cni=(cni,)) if cni else snap


OVNK = CniSighting("ovn-kubernetes", "cni", "geneve", ("host:ovn-k8s-mp0",), 1, ("ovnkube",))


def kb017() -> dict[str, Fixture]:
    return {
        "fire-linux-bridge-4.19": (bridged_vxlan("4.19.100"),
                                   expect("fail", obj("host", "vxlan0"), obj("host", "eth0"),
                                          fix=["ip link set dev vxlan0 mtu 1450", "ip link set dev vethc1 mtu 1450",
                                               "nsenter --net=/run/netns/c1 -- ip link set dev eth0 mtu 1450"])),
        "fire-ovs-geneve-ubuntu-5.4": (ovs_geneve_node("5.4.0-100-generic"),
                                       expect("fail", obj("host", "genev_sys_6081"), obj("host", "eth0"),
                                              fix=["ip link set dev web-1a2b3c mtu 1450",
                                                   "nsenter --net=/run/netns/pod -- ip link set dev eth0 mtu 1450"])),
        "fire-ovn-geneve-options-6.12": (ovs_geneve_node("6.12.10", pod_mtu=1420, under_mtu=1460, cni=OVNK),
                                         expect("warn", obj("host", "genev_sys_6081"), obj("host", "eth0"))),
        "quiet-kernel-5.9": (bridged_vxlan("5.9.0"), None),
        "quiet-fits": (bridged_vxlan("4.19.100", mtu=1450), None),
        "quiet-ovs-6.12-no-ovn": (ovs_geneve_node("6.12.10", pod_mtu=1420, under_mtu=1460), None),
    }  # fmt: skip


# -- KB-018: Antrea L7 -------------------------------------------------------------------------


def antrea_node(*, l7: bool = True, tx: bool = True, gw_tx: bool | None = None) -> HostSnapshot:
    """An Antrea 2.x node with L7NetworkPolicy on (antrea#6806): antrea-gw0 and the L7 taps are OVS internal ports."""
    on_off = lambda on: feats(**{"on" if on else "off": ("tx-checksumming", "tx-checksum-ip-generic", "tcp-segmentation-offload")})
    internal, gw = on_off(tx), on_off(tx if gw_tx is None else gw_tx)
    pod = netns("pod", 4026532860, (veth("eth0", 2, "host", 10, "web-7f9c-a1b2c3", features=VETH if tx else VETH_TX_OFF),),
                pid=7100, command="/pause")  # fmt: skip
    links: tuple[Link, ...] = (nic(), Link(4, "ovs-system", "openvswitch", 1500, "down"),
                               Link(6, "antrea-gw0", "openvswitch", 1450, "up", master="ovs-system", features=gw,
                                    addresses=("10.10.1.1/24",)),
                               veth("web-7f9c-a1b2c3", 10, "pid:7100", 2, "eth0", master="ovs-system", mtu=1450))  # fmt: skip
    if l7:
        links = (*links, Link(7, "antrea-l7-tap0", "openvswitch", 1450, "up", master="ovs-system", features=internal),
                 Link(8, "antrea-l7-tap1", "openvswitch", 1450, "up", master="ovs-system", features=internal))
    cni = CniSighting("antrea", "cni", "geneve", ("host:antrea-gw0",), 1, ("antrea-agent",))
    return replace(snapshot("6.8.0-45-generic", host(links), pod), cni=(cni,))


def kb018() -> dict[str, Fixture]:
    return {
        "fire-l7-gateway": (antrea_node(), expect("fail", obj("host", "antrea-gw0"), obj("host", "antrea-l7-tap0"),
                                                  fix=["ethtool -K antrea-gw0 tx off"])),
        # Antrea with PR 6843 turns it off on antrea-gw0; pods created before disableTXChecksumOffload keep it (#4231).
        "fire-l7-pod": (antrea_node(gw_tx=False), expect("fail", obj("pid:7100", "eth0"), obj("host", "antrea-l7-tap0"),
                                              fix=["nsenter --net=/proc/7100/ns/net -- ethtool -K eth0 tx off"])),
        "quiet-no-l7-engine": (antrea_node(l7=False), None),
        "quiet-tx-off": (antrea_node(tx=False), None),
    }  # fmt: skip


# -- KB-019: IPIP over mlx5 --------------------------------------------------------------------


def ipip_node(name: str = "tunl0", *, tx: bool = True, driver: str = "mlx5_core",
              release: str = "4.18.0-240.el8.x86_64") -> HostSnapshot:  # fmt: skip
    """A RHEL 8.3 Calico IPIP node on a ConnectX-4 (mlx5_core, MLNX_OFED 5.6): kube-router#1436, kubespray#7268."""
    f = feats(on=("tx-checksumming", "tx-checksum-ip-generic", "tcp-segmentation-offload")) if tx else \
        feats(off=("tx-checksumming", "tx-checksum-ip-generic", "tcp-segmentation-offload"))  # fmt: skip
    tun = Link(5, name, "ipip", 1480, "unknown", driver="ipip", features=f, addresses=("10.233.64.0/32",))
    return snapshot(release, host((nic("ens1f0", driver=driver), tun),
                                                  routes=(Route("default", "ens1f0", "198.51.100.254"),)))  # fmt: skip


def kb019() -> dict[str, Fixture]:
    return {
        "fire-calico-tunl0-mlx5": (ipip_node(), expect("warn", obj("host", "tunl0"), obj("host", "ens1f0"),
                                                       fix=["ethtool -K tunl0 tx off"])),
        "fire-kube-router-tun": (ipip_node("tun-c0a8010c"), expect("warn", obj("host", "tun-c0a8010c"), obj("host", "ens1f0"),
                                                                   fix=["ethtool -K tun-c0a8010c tx off"])),
        "quiet-tx-off": (ipip_node(tx=False), None),
        "quiet-no-mlx5": (ipip_node(driver="i40e"), None),
        "quiet-not-el8": (ipip_node(release="6.1.110"), None),
    }  # fmt: skip


# -- KB-020: kube-ovn --------------------------------------------------------------------------

#: kube-ovn's nat rules (gateway_linux.go) beside kube-proxy's; OVN-MASQUERADE clears the mark (#2919).
KUBE_OVN_NAT = (
    ":OVN-POSTROUTING - [0:0]",
    ":OVN-MASQUERADE - [0:0]",
    '-A POSTROUTING -m comment --comment "kube-ovn postrouting rules" -j OVN-POSTROUTING',
    "-A OVN-POSTROUTING -m mark --mark 0x4000/0x4000 -j OVN-MASQUERADE",
    "-A OVN-POSTROUTING -m set --match-set ovn40subnets-nat src -m set ! --match-set ovn40subnets dst -j OVN-MASQUERADE",
    "-A OVN-MASQUERADE -j MARK --set-xmark 0x0/0xffffffff",
    "-A OVN-MASQUERADE -j MASQUERADE",
)
NFT_FILTER_PLAIN = """table ip filter {
\tchain OUTPUT {
\t\ttype filter hook output priority filter; policy accept;
\t\tmeta l4proto tcp ct state new counter packets 0 bytes 0 jump KUBE-SERVICES
\t}
}
"""
NFT_FILTER_UNMARK = """table ip filter {
\tchain OUTPUT {
\t\ttype filter hook output priority filter; policy accept;
\t\tmeta l4proto udp udp dport 6081 counter packets 0 bytes 0 meta mark set 0x0
\t}
}
"""
KUBE_OVN = CniSighting("kube-ovn", "cni", "geneve", ("host:ovn0",), 1, ("kube-ovn-daemon",))


def kube_ovn_node(release: str, *, kube: tuple[str, ...] = KUBE_BEFORE, nft: str | None = NFT_FILTER_PLAIN,
                  tx: bool = True) -> HostSnapshot:  # fmt: skip
    """A kube-ovn node (Ubuntu 20.04 GA kernel; kube-proxy before kubernetes#92035; iptables-nft) with OVS's Geneve vport."""
    gnv = Link(5, "genev_sys_6081", "geneve", 65000, "unknown", master="ovs-system", driver="geneve",
               features=VXLAN_ON if tx else VXLAN_TX_OFF, geneve=GeneveInfo(None, 6081, None, False, external=True))  # fmt: skip
    links = (nic(), Link(4, "ovs-system", "openvswitch", 1500, "down"), gnv,
             Link(6, "ovn0", "openvswitch", 1400, "unknown", master="ovs-system", addresses=("100.64.0.2/16",)))  # fmt: skip
    nat = (*kube[:-1], *KUBE_OVN_NAT, kube[-1])
    snap = snapshot(release, host(links))
    snap = with_host(snap, nat=NatRules(iptables_nat=nat, iptables_backend="nf_tables" if nft is not None else "legacy",
                                        nft_ruleset=nft))  # fmt: skip
    return replace(snap, cni=(KUBE_OVN,))


def kb020() -> dict[str, Fixture]:
    objs = (obj("host", "genev_sys_6081"), obj("host", "nat/KUBE-POSTROUTING"))
    return {
        "fire-kube-ovn-ubuntu-5.4": (kube_ovn_node("5.4.0-26-generic"), expect("fail", *objs, fix=[
            "iptables -t filter -I OUTPUT 1 -p udp -m udp --dport 6081 -j MARK --set-xmark 0x0",
            "ethtool -K genev_sys_6081 tx off"])),
        "fire-legacy-backend-warn": (kube_ovn_node("5.4.0-26-generic", nft=None), expect("warn", *objs)),
        "quiet-output-unmark": (kube_ovn_node("5.4.0-26-generic", nft=NFT_FILTER_UNMARK), None),
        "quiet-vport-tx-off": (kube_ovn_node("5.4.0-26-generic", tx=False), None),
        "quiet-kube-proxy-unmark": (kube_ovn_node("5.4.0-26-generic", kube=KUBE_AFTER), None),
        "quiet-kernel-5.7": (kube_ovn_node("5.7.0"), None),
    }  # fmt: skip


FIXTURES = {
    "KB-011": kb011, "KB-012": kb012, "KB-013": kb013, "KB-014": kb014, "KB-015": kb015,
    "KB-016": kb016, "KB-017": kb017, "KB-018": kb018, "KB-019": kb019, "KB-020": kb020,
}  # fmt: skip
