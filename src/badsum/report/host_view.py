"""What a picture of the host shows, shared by its two drawings: `doctor --html`'s map
(report/html_doctor.py) and `doctor -v`'s text tree (report/host_tree.py). Pure: snapshot and
findings in, the choices out; so the two never disagree on which namespaces are in view, which
collapse, what a tunnel's underlay is or which objects a finding names.

Hundreds of containers make hundreds of namespaces holding one veth to the host: past
COLLAPSE_OVER namespaces those (when no finding names them) are shown as one group per host-side
bridge ("212 namespaces, one veth each").
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field

from badsum.host.model import HOST_NS, HostSnapshot, Link, Namespace
from badsum.rules.model import Finding, Outcome

#: Collapse namespaces holding only a veth to the host when there are more than this many namespaces.
COLLAPSE_OVER = 40


def problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.outcome in (Outcome.FAIL, Outcome.WARN)]


def flagged_refs(findings: list[Finding]) -> tuple[set[tuple[str, str]], set[str]]:
    """((ns, name) of every object a problem names, the namespaces they are in)."""
    objs, nss = set(), set()
    for f in problems(findings):
        for o in f.objects:
            nss.add(o.ns)
            objs.add((o.ns, o.name))
    return objs, nss


def ovs_port_bridges(snap: HostSnapshot) -> dict[tuple[str, str], str]:
    """(namespace, port) -> the OVS bridge it is a port of (a bridge's own internal port left out)."""
    out: dict[tuple[str, str], str] = {}
    for ovs in snap.ovs:
        for b in ovs.bridges:
            for p in b.ports:
                if p.name != b.name:
                    out[(ovs.namespace, p.name)] = b.name
    return out


def in_view(snap: HostSnapshot, scope: set[str] | None) -> list[Namespace]:
    """The namespaces shown: all, or those in `scope` and the ones their veths lead to (`doctor -n`)."""
    if scope is None:
        return list(snap.namespaces)
    near = set(scope)
    for ns in snap.namespaces:
        if ns.id in scope:
            near.update(lk.peer_ns for lk in ns.links if lk.peer_ns)
    return [ns for ns in snap.namespaces if ns.id in near]


def underlay(ns: Namespace, link: Link) -> tuple[str, str] | None:
    """(device, how it is known) a tunnel device sends its outer packets through: the VXLAN `dev`
    it is bound to, else the route to its remote (longest prefix; Geneve has no bound device)."""
    if link.vxlan and link.vxlan.lower:
        return link.vxlan.lower, "underlay"
    remote = (link.vxlan.remote if link.vxlan else None) or (link.geneve.remote if link.geneve else None)
    if not remote:
        return None
    try:
        addr = ipaddress.ip_address(remote)
    except ValueError:
        return None
    best: tuple[int, str] | None = None
    for r in ns.routes:
        if not r.dev or r.dev == link.name:
            continue
        try:
            net = ipaddress.ip_network("0.0.0.0/0" if r.dst == "default" and addr.version == 4 else
                                       "::/0" if r.dst == "default" else r.dst, strict=False)  # fmt: skip
        except ValueError:
            continue
        if addr.version == net.version and addr in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, r.dev)
    return (best[1], f"underlay (route to {remote})") if best else None


def leaf_veth(ns: Namespace) -> Link | None:
    """The one veth of a namespace that holds nothing else (besides lo) and whose peer is on the host."""
    links = [lk for lk in ns.links if lk.name != "lo" and lk.kind != "loopback"]
    if len(links) == 1 and links[0].kind == "veth" and links[0].peer_ns == HOST_NS and links[0].peer_name:
        return links[0]
    return None


@dataclass
class Collapse:
    """Which namespaces are shown as a group instead of one by one."""

    groups: dict[str, list[tuple[Namespace, Link]]] = field(default_factory=dict)
    """Host-side bridge (OVS or Linux; "" for none) -> the namespaces behind it, each with its one veth."""
    hidden: set[tuple[str, str]] = field(default_factory=set)
    """(ns, link) not shown on their own: both ends of every grouped veth pair."""

    @property
    def namespaces(self) -> set[str]:
        return {ns.id for members in self.groups.values() for ns, _ in members}


def collapse(snap: HostSnapshot, namespaces: list[Namespace], findings: list[Finding],
             collapse_over: int = COLLAPSE_OVER) -> Collapse:  # fmt: skip
    """Past `collapse_over` namespaces, those holding only a veth to the host that no finding names,
    grouped by what their host-side end is plugged into."""
    c = Collapse()
    if len(namespaces) <= collapse_over:
        return c
    flagged_objs, flagged_ns = flagged_refs(findings)
    port_bridge = ovs_port_bridges(snap)
    host = snap.ns(HOST_NS)
    groups: dict[str, list[tuple[Namespace, Link]]] = defaultdict(list)
    for ns in namespaces:
        leaf = leaf_veth(ns) if ns.id != HOST_NS else None
        if leaf is None or ns.id in flagged_ns or (HOST_NS, leaf.peer_name) in flagged_objs:
            continue
        peer = host.link(leaf.peer_name) if host else None
        via = port_bridge.get((HOST_NS, leaf.peer_name)) or (peer.master if peer else None) or ""
        groups[via].append((ns, leaf))
        c.hidden.add((ns.id, leaf.name))
        c.hidden.add((HOST_NS, leaf.peer_name))
    c.groups = dict(sorted(groups.items()))
    return c


__all__ = ["COLLAPSE_OVER", "Collapse", "collapse", "flagged_refs", "in_view", "leaf_veth", "ovs_port_bridges",
           "problems", "underlay"]  # fmt: skip
