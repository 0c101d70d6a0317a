"""Which CNI (and kube-proxy mode, and container engine) a node runs, from what can be seen without
asking any of them: the interfaces they create and the processes they run.

Each signature is data: interface-name patterns and process names, with the overlay it implies.
A sighting lists what matched, so a user can tell a guess from a certainty ("cali* veths and
calico-node" is stronger than "tunl0" alone, which any IPIP user has). Pure over the snapshot's
links and a list of process names; `process_names()` reads /proc once, bounded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from badsum.host.model import CniSighting, HostSnapshot

#: Bound on processes read (a node runs a few thousand at most).
MAX_PROCESSES = 20_000


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    interfaces: tuple[str, ...] = ()
    """Regular expressions matched against whole interface names, in any namespace."""
    processes: tuple[str, ...] = ()
    """Process names (`comm`, at most 15 characters as the kernel keeps them)."""
    overlay: str | None = None
    """What carries pod traffic between nodes when this is seen: vxlan, geneve, ipip, wireguard, ..."""
    kind: str = "cni"
    """`cni`, `kube-proxy` or `engine`."""


SIGNATURES: tuple[Signature, ...] = (
    Signature("flannel", (r"flannel\.\d+", r"flannel-wg(-v6)?", r"cni0"), ("flanneld",), "vxlan"),
    Signature("calico", (r"cali[0-9a-f]{11}", r"vxlan\.calico", r"vxlan-v6\.calico", r"wireguard\.cali",
                         r"bpfin\.cali", r"bpfout\.cali"), ("calico-node", "calico-felix"), "vxlan or ipip"),  # fmt: skip
    Signature("calico-ipip", (r"tunl0",), (), "ipip"),
    Signature("cilium", (r"cilium_host", r"cilium_net", r"cilium_vxlan", r"cilium_geneve", r"lxc[0-9a-f]{12}",
                         r"lxc_health", r"cilium_wg0"), ("cilium-agent",), "vxlan or geneve"),  # fmt: skip
    Signature("antrea", (r"antrea-gw0", r"antrea-tun0", r"antrea-egress0"), ("antrea-agent",), "geneve"),
    Signature("ovn-kubernetes", (r"ovn-k8s-mp\d+", r"breth\d+"), ("ovnkube",), "geneve"),
    Signature("kube-ovn", (r"ovn0", r"mirror0"), ("kube-ovn-daemon", "kube-ovn-cni"), "geneve"),
    Signature("ovs-geneve", (r"genev_sys_\d+",), (), "geneve"),
    Signature("ovs-vxlan", (r"vxlan_sys_\d+",), (), "vxlan"),
    Signature("weave", (r"weave", r"vethwe-.*", r"datapath", r"vxlan-6784"), ("weaver",), "vxlan (fastdp) or sleeve"),
    Signature("kube-router", (r"kube-bridge", r"kube-dummy-if"), ("kube-router",), "ipip"),
    Signature("kube-proxy-ipvs", (r"kube-ipvs0",), (), None, "kube-proxy"),
    Signature("kube-proxy", (), ("kube-proxy",), None, "kube-proxy"),
    Signature("docker", (r"docker0", r"docker_gwbridge"), ("dockerd",), None, "engine"),
    Signature("containerd", (), ("containerd",), None, "engine"),
    Signature("cri-o", (), ("crio",), None, "engine"),
)
_COMPILED = tuple((s, tuple(re.compile(p) for p in s.interfaces)) for s in SIGNATURES)


#: The snapshot's record (host/model.py).
Sighting = CniSighting


def detect(snapshot: HostSnapshot, processes: Iterable[str] = ()) -> tuple[Sighting, ...]:
    """Every signature with at least one matching interface or process, in SIGNATURES order."""
    procs = set(processes)
    links = [(ns.id, link.name) for ns in snapshot.namespaces for link in ns.links]
    out = []
    for sig, patterns in _COMPILED:
        hits = [f"{ns}:{name}" for ns, name in links if any(p.fullmatch(name) for p in patterns)]
        seen = tuple(p for p in sig.processes if p in procs)
        if hits or seen:
            out.append(Sighting(sig.name, sig.kind, sig.overlay, tuple(hits[:5]), len(hits), seen))
    return tuple(out)


def process_names(proc: str = "/proc", limit: int = MAX_PROCESSES) -> set[str]:
    """The `comm` of every process (read-only, bounded; a process that exits meanwhile is skipped)."""
    names: set[str] = set()
    try:
        entries = os.listdir(proc)
    except OSError:
        return names
    for n, entry in enumerate(e for e in entries if e.isdigit()):
        if n >= limit:
            break
        try:
            with open(os.path.join(proc, entry, "comm"), "rb") as f:
                names.add(f.read(64).decode("utf-8", errors="replace").strip())
        except OSError:
            continue
    return names


__all__ = ["SIGNATURES", "Sighting", "Signature", "detect", "process_names"]
