"""Builders for host snapshots used as rule fixtures, from the model's own dataclasses.

The fixtures in tests/rules/fixtures are written once by `python tests/rules/make_fixtures.py`
and then read as data (HostSnapshot.from_json); these builders keep that script short.
Addresses are documentation ranges only.
"""

from __future__ import annotations

import re
from dataclasses import replace

from badsum.host.model import (
    HOST_NS,
    CounterSample,
    Feature,
    HostSnapshot,
    KernelInfo,
    Link,
    Namespace,
    NatRules,
    OVSBridge,
    OVSInfo,
    OVSPort,
    Route,
    VxlanInfo,
)

TAKEN_AT = 1767225600.0  # 2026-01-01 00:00:00 UTC
TOOLS = {"ip": "6.1.0", "ethtool": "6.1", "iptables": "1.8.9 (nf_tables)", "nft": "1.0.6", "nstat": "6.1.0",
         "ovs-vsctl": "3.1.0", "nsenter": "2.38.1"}  # fmt: skip
ZERO = {"TcpInCsumErrors": 0, "UdpInCsumErrors": 0, "Udp6InCsumErrors": 0, "IcmpInCsumErrors": 0, "IpExtInCsumErrors": 0}


#: A fixture: the snapshot, and what the rule must find in it (None: nothing, for a quiet one).
Fixture = tuple[HostSnapshot, dict | None]


def obj(ns: str, name: str) -> dict[str, str]:
    return {"namespace": ns, "name": name}


def expect(outcome: str, *objects: dict[str, str], fix: list[str] | None = None) -> dict:
    out: dict = {"outcome": outcome, "objects": list(objects)}
    if fix is not None:
        out["fix"] = fix
    return out


def kernel(release: str) -> KernelInfo:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    assert m, release
    version = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    distro = re.search(r"\.(el\d+)", release)
    build = re.match(r"\d+\.\d+\.\d+-(\d+)", release) if distro else None
    return KernelInfo(release, version, distro.group(1) if distro else None, int(build.group(1)) if build else None)


def feats(on: tuple[str, ...] = (), off: tuple[str, ...] = (), fixed_on: tuple[str, ...] = (),
          fixed_off: tuple[str, ...] = ()) -> dict[str, Feature]:  # fmt: skip
    out = {n: Feature(True, False, True) for n in on}
    out.update({n: Feature(False, False, False) for n in off})
    out.update({n: Feature(True, True, None) for n in fixed_on})
    out.update({n: Feature(False, True, None) for n in fixed_off})
    return out


#: What a veth reports by default (ethtool --json -k names).
VETH_ON = ("rx-checksumming", "tx-checksumming", "tx-checksum-ip-generic", "scatter-gather",
           "tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload")  # fmt: skip
VETH = feats(on=VETH_ON)
VETH_TX_OFF = feats(on=("rx-checksumming", "generic-receive-offload"),
                    off=("tx-checksumming", "tx-checksum-ip-generic", "tcp-segmentation-offload"))  # fmt: skip
VXLAN_ON = feats(on=("tx-checksumming", "tx-checksum-ip-generic", "tcp-segmentation-offload"), fixed_off=("rx-checksumming",))
VXLAN_TX_OFF = feats(off=("tx-checksumming", "tx-checksum-ip-generic", "tcp-segmentation-offload"), fixed_off=("rx-checksumming",))
NIC = feats(on=("rx-checksumming", "tx-checksumming", "tx-checksum-ip-generic", "tcp-segmentation-offload",
                "generic-receive-offload"))  # fmt: skip


def nic(name: str = "eth0", ifindex: int = 2, mtu: int = 1500, driver: str = "virtio_net", features=None,
        addresses: tuple[str, ...] = ("198.51.100.1/24",)) -> Link:  # fmt: skip
    return Link(ifindex, name, "device", mtu, "up", driver=driver, features=NIC if features is None else features,
                addresses=addresses)  # fmt: skip


def lo() -> Link:
    return Link(1, "lo", "loopback", 65536, "unknown", features=feats(fixed_on=("rx-checksumming", "tx-checksumming")),
                addresses=("127.0.0.1/8",))  # fmt: skip


def veth(name: str, ifindex: int, peer_ns: str, peer_ifindex: int, peer_name: str, *, master: str | None = None,
         features=None, mtu: int = 1500, addresses: tuple[str, ...] = ()) -> Link:  # fmt: skip
    return Link(ifindex, name, "veth", mtu, "up", master=master, peer_ifindex=peer_ifindex, peer_ns=peer_ns,
                peer_name=peer_name, driver="veth", features=VETH if features is None else features, addresses=addresses)  # fmt: skip


def vxlan(name: str = "flannel.1", ifindex: int = 5, *, mtu: int = 1450, vni: int = 1, port: int = 8472,
          lower: str | None = "eth0", remote: str | None = None, local: str | None = "198.51.100.1",
          udpcsum: bool | None = False, df: str | None = None, features=None, master: str | None = None) -> Link:  # fmt: skip
    return Link(ifindex, name, "vxlan", mtu, "unknown", master=master, driver="vxlan",
                vxlan=VxlanInfo(vni, port, local, remote, lower, udpcsum, df),
                features=VXLAN_ON if features is None else features)  # fmt: skip


def counters(first: dict[str, int] | None = None, second: dict[str, int] | None = None, interval: float = 1.0) -> CounterSample:
    a = dict(ZERO, **(first or {}))
    b = dict(a, **(second or {}))
    return CounterSample(a, b, interval)


def host(links: tuple[Link, ...], *, routes: tuple[Route, ...] = (Route("default", "eth0", "198.51.100.254"),),
         nat: tuple[str, ...] | None = (), sample: CounterSample | None = None, errors: tuple[str, ...] = (),
         legacy_nat: tuple[str, ...] | None = None) -> Namespace:  # fmt: skip
    rules = NatRules(iptables_nat=nat, iptables_backend="nf_tables", iptables_legacy_nat=legacy_nat)
    return Namespace(HOST_NS, 4026531840, None, links=(lo(), *links), routes=routes,
                     counters=counters() if sample is None else sample, nat=rules, errors=errors)  # fmt: skip


def netns(name: str, inode: int, links: tuple[Link, ...], *, pid: int | None = None, command: str | None = None,
          sample: CounterSample | None = None, nat: tuple[str, ...] | None = ()) -> Namespace:  # fmt: skip
    """A named netns (`/run/netns/NAME`), or with `pid` one only held by a process (`pid:PID`)."""
    ns_id, enter, names = (f"pid:{pid}", f"/proc/{pid}/ns/net", ()) if pid else (name, f"/run/netns/{name}", (name,))
    return Namespace(ns_id, inode, enter, names=names, pid=pid, command=command, links=(lo(), *links),
                     counters=counters() if sample is None else sample,
                     nat=NatRules(iptables_nat=nat) if nat is not None else NatRules())  # fmt: skip


def snapshot(release: str, *namespaces: Namespace, ovs: tuple[OVSInfo, ...] = (), root: bool = True,
             tools: dict[str, str | None] | None = None, errors: tuple[str, ...] = (), hostname: str = "node1") -> HostSnapshot:  # fmt: skip
    return HostSnapshot(TAKEN_AT, hostname, kernel(release), root, namespaces, ovs, dict(TOOLS if tools is None else tools), errors)


def ovs_not_running() -> OVSInfo:
    return OVSInfo(False, error="Open vSwitch is installed but not running: no ovs-vswitchd process, no /var/run/openvswitch/db.sock")


def ovs_netdev(ports: tuple[str, ...], *, datapath: str = "netdev", other_config: dict[str, str] | None = None,
               namespace: str = HOST_NS) -> OVSInfo:  # fmt: skip
    br = OVSBridge("br0", datapath, (OVSPort("br0", "br0", "internal"), *(OVSPort(p, "br0", "system") for p in ports)))
    return OVSInfo(True, "unix:/var/run/openvswitch/db.sock", 1200, "3.1.0", (br,), other_config or {}, namespace)


# -- kube-proxy's KUBE-POSTROUTING, before and after kubernetes#92035 --------------------------

KUBE_HEAD = (
    "*nat",
    ":PREROUTING ACCEPT [0:0]",
    ":POSTROUTING ACCEPT [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    ":KUBE-MARK-MASQ - [0:0]",
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
)
KUBE_BEFORE = (*KUBE_HEAD,
               '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x4000/0x4000 -j MASQUERADE --random-fully',
               "COMMIT")  # fmt: skip
KUBE_AFTER = (*KUBE_HEAD,
              "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
              "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
              '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
              "COMMIT")  # fmt: skip


def with_host(snap: HostSnapshot, **changes: object) -> HostSnapshot:
    """The snapshot with its host namespace changed (links, nat, counters, errors, ...)."""
    nss = tuple(replace(ns, **changes) if ns.id == HOST_NS else ns for ns in snap.namespaces)
    return replace(snap, namespaces=nss)
