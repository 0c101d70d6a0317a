"""`capture --auto`: the capture points along a container's path, read from a HostSnapshot.

The path a person would tcpdump, in order: the container's interface, the host end of its veth,
the bridge (Linux or Open vSwitch) it is a port of, a VXLAN/Geneve device on that bridge, and the
uplink (the tunnel's lower device, the route to its remote, or the default route's device).
Pure: the snapshot comes in, points go out.
"""

from __future__ import annotations

import ipaddress

from badsum.capture.session import CaptureError, Point
from badsum.host.model import HostSnapshot, Link, Namespace

TUNNEL_KINDS = frozenset({"vxlan", "geneve"})


def find_namespace(snap: HostSnapshot, target: str, *, pid_inode: int | None = None) -> tuple[Namespace, Link | None]:
    """The container's namespace (by pid, namespace name or IP address) and, for an address, its link."""
    if target.isdigit() or target.startswith("pid:") and target[4:].isdigit():
        pid = int(target.removeprefix("pid:"))
        for ns in snap.namespaces:
            if (pid_inode is not None and ns.inode == pid_inode) or ns.pid == pid:
                return ns, None
        raise CaptureError(f"--auto {target}: no network namespace found for process {pid}",
                           code="namespace.unknown", usage=True)  # fmt: skip
    try:
        addr = ipaddress.ip_address(target)
    except ValueError:
        addr = None
    if addr is not None:
        # A container's address, not the host's: look in other namespaces first.
        for ns in sorted(snap.namespaces, key=lambda n: n.enter is None):
            for link in ns.links:
                if any(ipaddress.ip_interface(a).ip == addr for a in link.addresses):
                    return ns, link
        raise CaptureError(f"--auto {target}: no interface holds this address in any namespace",
                           code="address.unknown", usage=True)  # fmt: skip
    for ns in snap.namespaces:
        if ns.id == target or target in ns.names:
            return ns, None
    raise CaptureError(f"--auto {target}: unknown namespace (not a pid, a namespace name or an address)",
                       code="namespace.unknown", usage=True)  # fmt: skip


def auto_points(snap: HostSnapshot, target: str, *, pid_inode: int | None = None) -> list[Point]:
    ns, held = find_namespace(snap, target, pid_inode=pid_inode)
    if held is not None:
        first = [held]
    else:
        first = [link for link in ns.links if link.kind == "veth"] or [
            link for link in ns.links if link.name != "lo" and link.kind != "loopback"
        ]
    if not first:
        raise CaptureError(f"--auto {target}: namespace {ns.id} has no interface to capture on",
                           code="namespace.empty", usage=True)  # fmt: skip
    points: list[Point] = []

    def add(where: Namespace, name: str, why: str) -> None:
        p = Point(where.id, name, where.enter, why)
        if all(q.label != p.label for q in points):
            points.append(p)

    for link in first:
        add(ns, link.name, "container interface")
        peer_ns = snap.ns(link.peer_ns) if link.peer_ns else None
        peer = peer_ns.link(link.peer_name) if peer_ns and link.peer_name else None
        if peer_ns is None or peer is None:
            continue
        add(peer_ns, peer.name, "host end of the veth")
        bridge, ports = _bridge_of(snap, peer_ns, peer)
        if bridge is not None:
            add(peer_ns, bridge, "bridge" if peer_ns.link(bridge) and peer_ns.link(bridge).kind == "bridge"  # type: ignore[union-attr]
                else "Open vSwitch bridge")  # fmt: skip
        uplinks: list[str] = []
        for port in ports:
            tun = peer_ns.link(port)
            if tun is None or tun.kind not in TUNNEL_KINDS:
                continue
            add(peer_ns, tun.name, f"{tun.kind.upper() if tun.kind == 'vxlan' else 'Geneve'} device")
            lower = tun.vxlan.lower if tun.vxlan else None
            if lower is None and tun.vxlan and tun.vxlan.remote:
                lower = _route_dev(peer_ns, tun.vxlan.remote)
            if lower:
                uplinks.append(lower)
        if not uplinks:
            dev = next((r.dev for r in peer_ns.routes if r.dst == "default" and r.dev), None)
            if dev and dev != bridge and dev != peer.name:
                uplinks.append(dev)
        for dev in uplinks:
            if peer_ns.link(dev) is not None:
                add(peer_ns, dev, "uplink")
    return points


def _bridge_of(snap: HostSnapshot, ns: Namespace, link: Link) -> tuple[str | None, list[str]]:
    """The bridge `link` is a port of, and the bridge's other ports; OVS bridges through OVSDB."""
    if link.master:
        master = ns.link(link.master)
        if master is not None and master.kind == "bridge":
            return master.name, [x.name for x in ns.links if x.master == master.name and x.name != link.name]
    for ovs in snap.ovs:
        for br in ovs.bridges:
            names = [p.name for p in br.ports]
            if link.name in names and (ovs.namespace == ns.id or ns.link(br.name) is not None):
                return (br.name if ns.link(br.name) else None), [n for n in names if n != link.name]
    return None, []


def _route_dev(ns: Namespace, remote: str) -> str | None:
    """The link whose own subnet holds `remote` (a directly connected underlay), else the default route's."""
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return None
    for link in ns.links:
        for a in link.addresses:
            iface = ipaddress.ip_interface(a)
            if iface.version == ip.version and ip in iface.network and iface.network.prefixlen < iface.max_prefixlen:
                return link.name
    return next((r.dev for r in ns.routes if r.dst == "default" and r.dev), None)


__all__ = ["auto_points", "find_namespace"]
