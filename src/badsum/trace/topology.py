"""What the host snapshot says about the hop between two points: does the packet stay in the
same kernel buffer (a pending checksum is legitimate), or is it re-created on the way (a
pending checksum must have been completed before)?"""

from __future__ import annotations

from dataclasses import dataclass

from badsum.host.model import HostSnapshot, Link, Namespace
from badsum.trace.model import Point

SAME_BUFFER = "same-buffer"
RECREATES = "recreates"
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Hop:
    """The nature of the way from one point to the next."""

    kind: str
    """`same-buffer`, `recreates` or `unknown`."""
    why: str


class Topology:
    """The snapshot's view of the points; without a snapshot every hop is `unknown`."""

    def __init__(self, snapshot: HostSnapshot | None) -> None:
        self.snapshot = snapshot

    def resolve(self, point: Point) -> tuple[Namespace, Link] | None:
        """The namespace and link an `NS:IFNAME` label names. A lab's namespaces (`PREFIX-NS`)
        are found by their suffix when exactly one of them holds the interface."""
        if self.snapshot is None or point.ns is None or point.ifname is None:
            return None
        ns, ifname = point.ns, point.ifname
        found = []
        for n in self.snapshot.namespaces:
            if n.id == ns or ns in n.names or n.id.endswith(f"-{ns}"):
                link = n.link(ifname)
                if link is not None:
                    found.append((n, link))
        exact = [f for f in found if f[0].id == ns or ns in f[0].names]
        pick = exact if len(exact) == 1 else found
        return pick[0] if len(pick) == 1 else None

    def hop(self, a: Point, b: Point) -> Hop:
        if self.snapshot is None:
            return Hop(UNKNOWN, "no snapshot")
        ra, rb = self.resolve(a), self.resolve(b)
        if ra is None or rb is None:
            missing = a.label if ra is None else b.label
            return Hop(UNKNOWN, f"{missing} is not an interface of the snapshot")
        (na, la), (nb, lb) = ra, rb
        if na.id == nb.id and la.ifindex == lb.ifindex:
            return Hop(SAME_BUFFER, "the same interface")
        for x, nx, y, ny in ((la, na, lb, nb), (lb, nb, la, na)):
            if x.kind == "veth" and x.peer_ns == ny.id and (x.peer_ifindex == y.ifindex or x.peer_name == y.name):
                return Hop(SAME_BUFFER, f"veth pair {nx.id}:{x.name} - {ny.id}:{y.name}")
        ovs = self._ovs_bridge(na, la, nb, lb)
        if ovs is not None:
            name, dp = ovs
            if dp == "netdev":
                return Hop(RECREATES, f"OVS bridge {name} uses the userspace datapath (netdev): it reads and "
                           "re-sends packets through AF_PACKET, so a pending checksum must be completed first")  # fmt: skip
            return Hop(SAME_BUFFER, f"OVS bridge {name} (kernel datapath {dp})")
        if na.id == nb.id:
            bridges = {lk.name for lk in na.links if lk.kind == "bridge"}
            if la.master is not None and la.master == lb.master and la.master in bridges:
                return Hop(SAME_BUFFER, f"ports of the bridge {la.master}")
            if la.master == lb.name and lb.name in bridges or lb.master == la.name and la.name in bridges:
                return Hop(SAME_BUFFER, "a bridge and its port")
        if lb.kind == "tun" or la.kind == "tun":
            return Hop(RECREATES, "a tun/tap device hands the packet to a userspace program")
        return Hop(UNKNOWN, f"no direct link between {a.label} and {b.label} in the snapshot")

    def _ovs_bridge(self, na: Namespace, la: Link, nb: Namespace, lb: Link) -> tuple[str, str] | None:
        if self.snapshot is None or na.id != nb.id:
            return None
        for info in self.snapshot.ovs:
            if info.namespace not in (na.id, "unknown"):
                continue
            for br in info.bridges:
                names = {p.name for p in br.ports}
                if la.name in names and lb.name in names:
                    return br.name, br.datapath_type
        return None
