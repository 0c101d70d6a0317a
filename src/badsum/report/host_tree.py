"""`doctor -v`'s host map as a compact text tree, in the manner of `ovs-vsctl show`: per namespace
its interfaces (kind, MTU, the offloads checksum bugs turn on, the veth peer), bridges with their
ports nested under them (Linux and OVS, with the OVS datapath type), tunnels with VNI, port,
local/remote and underlay; `!! KB-005` after each object a finding names. Pure: snapshot and
findings in, lines out. Which namespaces are in view and which collapse into one line per bridge
is report/host_view.py's choice, the same as the HTML map's.

    namespace host (node1)
        br0 tun mtu 1500, OVS bridge datapath netdev
            port br0 (internal)
            port c1-veth veth mtu 1500 -> bs1a2b3c-c1:eth0 [txcsum on, gro on]  !! KB-005
"""

from __future__ import annotations

from collections import defaultdict

from badsum.host.model import HOST_NS, HostSnapshot, Link, Namespace
from badsum.report.host_view import (
    COLLAPSE_OVER,
    Collapse,
    collapse,
    in_view,
    ovs_port_bridges,
    problems,
    underlay,
)
from badsum.rules.model import Finding

#: The offloads shown, first the kernel name the link reports wins: (label, kernel names).
OFFLOADS = (
    ("txcsum", ("tx-checksum-ip-generic", "tx-checksumming")),
    ("rxcsum", ("rx-checksum", "rx-checksumming")),
    ("tso", ("tcp-segmentation-offload",)),
    ("gso", ("generic-segmentation-offload",)),
    ("gro", ("generic-receive-offload",)),
    ("udpgrofwd", ("rx-udp-gro-forwarding",)),
)
#: Names listed for a collapsed group before "... and N more".
GROUP_NAMES = 6
INDENT = "    "


def offloads(link: Link) -> str:
    """`txcsum on, gro off ...` for the offloads the snapshot has for `link` ("" when none were read)."""
    parts = []
    for label, names in OFFLOADS:
        on = next((link.feature_on(n) for n in names if link.feature_on(n) is not None), None)
        if on is not None:
            parts.append(f"{label} {'on' if on else 'off'}")
    return ", ".join(parts)


def link_text(ns: Namespace, link: Link, role: str = "") -> str:
    """One interface: `name kind mtu N`, then what else matters about it (`role`: what else it is)."""
    words = [f"{link.name} {link.kind} mtu {link.mtu}"]
    if link.state.upper() not in ("UP", "UNKNOWN"):
        words.append(link.state.lower())
    if link.kind == "veth":
        words.append(f"-> {link.peer_ns}:{link.peer_name}" if link.peer_name and link.peer_ns else "-> peer unknown")
    if v := link.vxlan:
        words.append(f"vni {v.vni} port {v.port}" + (f" local {v.local}" if v.local else "")
                     + (f" remote {v.remote}" if v.remote else "") + (f" df {v.df}" if v.df else ""))  # fmt: skip
    if g := link.geneve:
        words.append(f"vni {'external' if g.external else g.vni} port {g.port}" + (f" remote {g.remote}" if g.remote else ""))
    if link.vxlan or link.geneve:
        under = underlay(ns, link)
        words.append(f"via {under[0]}" + ("" if under[1] == "underlay" else " (route)") if under else "no underlay known")
    text = " ".join(words) + role
    if off := offloads(link):
        text += f" [{off}]"
    return text


def _marks(rules: list[str]) -> str:
    return f"  !! {' '.join(sorted(set(rules)))}" if rules else ""


def host_tree(snap: HostSnapshot, findings: list[Finding], scope: set[str] | None = None,
              collapse_over: int = COLLAPSE_OVER) -> list[str]:  # fmt: skip
    """The tree's lines: the namespaces in view (every one, or `scope` and its veths' peers)."""
    namespaces = in_view(snap, scope)
    folded = collapse(snap, namespaces, findings, collapse_over)
    grouped = folded.namespaces
    port_bridge = ovs_port_bridges(snap)
    named: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in problems(findings):
        for o in f.objects:
            named[(o.ns, o.name if o.kind != "namespace" else "")].append(f.rule)
    shown = len(namespaces) - len(grouped)
    lines = [f"host map: {len(namespaces)} namespace{'s' if len(namespaces) != 1 else ''}"
             + (f" ({shown} one by one, {len(grouped)} as one line per bridge)" if grouped else "")
             + "; !! marks what a finding names"]  # fmt: skip
    for ns in namespaces:
        if ns.id not in grouped:
            lines += _namespace(snap, ns, folded, port_bridge, named)
    return lines


def _namespace(snap: HostSnapshot, ns: Namespace, folded: Collapse, port_bridge: dict[tuple[str, str], str],
               named: dict[tuple[str, str], list[str]]) -> list[str]:  # fmt: skip
    links = [lk for lk in ns.links if lk.name != "lo" and lk.kind != "loopback"]
    by_name = {lk.name: lk for lk in links}
    ovs_bridges = [b for o in snap.ovs if o.namespace == ns.id for b in o.bridges]
    ovs_names = {b.name for b in ovs_bridges}
    # What each bridge holds: OVS ports by OVSDB, Linux bridge ports by their master.
    ports: dict[str, list[Link]] = defaultdict(list)
    for lk in links:
        master = port_bridge.get((ns.id, lk.name)) or (lk.master if lk.master in by_name or lk.master in ovs_names else None)
        if master and master != lk.name:
            ports[master].append(lk)
    nested = {lk.name for members in ports.values() for lk in members}
    shown_names = set(by_name) | ovs_names | {p.name for b in ovs_bridges for p in b.ports}
    # A finding about the namespace, or about something in it the tree has no line for (a NAT
    # chain, a counter), is marked on the namespace's own line.
    ns_rules = [r + (f" ({name})" if name else "") for (n, name), rules in named.items()
                if n == ns.id and (not name or name not in shown_names) for r in rules]  # fmt: skip
    title = ns.id if ns.id != HOST_NS else f"host ({snap.hostname})"
    if owner := snap.owners.get(ns.id):
        title += f" = {owner.label()}"
    out = [f"namespace {title}{_marks(ns_rules)}"]

    def mark(name: str) -> str:
        return _marks(named.get((ns.id, name), []))

    printed: set[str] = set()

    def emit(name: str, head: str, depth: int) -> None:
        printed.add(name)
        out.append(depth * INDENT + head + mark(name))
        ovs = next((b for b in ovs_bridges if b.name == name), None)
        for p in ovs.ports if ovs else ():
            if (p.name == name or p.name not in by_name) and (ns.id, p.name) not in folded.hidden:
                out.append((depth + 1) * INDENT + f"port {p.name} ({p.type})" + mark(p.name))
        for port in ports.get(name, []):
            if (ns.id, port.name) not in folded.hidden and port.name not in printed:
                emit(port.name, "port " + _head(port), depth + 1)
        if ns.id == HOST_NS and (members := folded.groups.get(name)):
            out.append((depth + 1) * INDENT + _group_text(members))

    def _head(lk: Link) -> str:
        dp = next((b.datapath_type for b in ovs_bridges if b.name == lk.name), None)
        return link_text(ns, lk, f", OVS bridge datapath {dp}" if dp else "")

    for lk in links:
        if lk.name not in nested and (ns.id, lk.name) not in folded.hidden:
            emit(lk.name, _head(lk), 1)
    for b in ovs_bridges:
        if b.name not in by_name:  # a netdev bridge whose tap the kernel does not list here
            emit(b.name, f"{b.name} OVS bridge datapath {b.datapath_type}", 1)
    for lk in links:  # masters in a loop (a snapshot file can say anything): each still once
        if lk.name not in printed and (ns.id, lk.name) not in folded.hidden:
            emit(lk.name, _head(lk), 1)
    if ns.id == HOST_NS:
        for via, members in folded.groups.items():
            if via not in by_name and via not in ovs_names:
                out.append(INDENT + _group_text(members) + (f" (via {via}, not in view)" if via else ""))
    return out


def _group_text(members: list) -> str:
    mtus = sorted({leaf.mtu for _, leaf in members})
    mtu = f"mtu {mtus[0]}" if len(mtus) == 1 else f"mtu {mtus[0]}..{mtus[-1]}"
    names = [ns.id for ns, _ in members]
    more = f" ... and {len(names) - GROUP_NAMES} more" if len(names) > GROUP_NAMES else ""
    return f"+ {len(members)} namespaces, one veth each to the host ({mtu}): {', '.join(names[:GROUP_NAMES])}{more}"


__all__ = ["OFFLOADS", "host_tree", "link_text", "offloads"]
