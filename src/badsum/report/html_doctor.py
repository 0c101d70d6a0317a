"""`doctor --html`: the host map as Graphviz DOT, and the page around the SVG `dot` makes of it. Pure:
snapshot and findings in, text out; running `dot` and writing the file live in report/html_io.py.

The map: one cluster per namespace holding its links; veth pairs are edges across clusters; a
link's `master` (Linux bridge) and OVS bridge ports are edges to the bridge; VXLAN and Geneve
devices name their underlay. Each link shows its MTU and the offloads checksum bugs turn on.
A finding's objects get a red outline and a `flagged` class; the list under the map says why.

Past COLLAPSE_OVER namespaces, those holding only a veth to the host (and named by no finding) are
drawn as one node per host-side bridge, their names listed in a table under the map; which ones
collapse is decided once, in report/host_view.py, for this map and `doctor -v`'s text tree alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from badsum.host.model import HOST_NS, HostSnapshot, Link, Namespace
from badsum.report.host_view import (
    COLLAPSE_OVER,
    collapse,
    flagged_refs,
    in_view,
    ovs_port_bridges,
    problems,
    underlay,
)
from badsum.report.html_page import esc, json_island, page
from badsum.rules.model import Finding, Outcome

#: The offloads that decide where a checksum gets filled in or trusted, with their short label on the map.
OFFLOADS = (
    ("tx-checksum-ip-generic", "txcsum"),
    ("rx-checksumming", "rxcsum"),
    ("generic-receive-offload", "gro"),
    ("rx-udp-gro-forwarding", "udpgrofwd"),
)
LINK_SHAPE = {"bridge": "box3d", "openvswitch": "box3d", "vxlan": "hexagon", "geneve": "hexagon",
              "device": "doubleoctagon"}  # fmt: skip


@dataclass
class HostMap:
    """The DOT text and what the page needs to tie SVG elements back to objects."""

    dot: str
    nodes: dict[str, dict[str, object]] = field(default_factory=dict)
    """SVG element id -> the object's facts (for the details panel)."""
    objects: dict[str, str] = field(default_factory=dict)
    """`ns:name` (and `ns` for a namespace's cluster) -> SVG element id."""
    collapsed: list[dict[str, object]] = field(default_factory=list)
    """Groups of namespaces drawn as one node: {node, via, namespaces}."""
    flagged: set[str] = field(default_factory=set)
    """SVG ids a finding names."""


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _offloads(link: Link) -> str:
    parts = []
    for name, short in OFFLOADS:
        on = link.feature_on(name)
        if on is not None:
            parts.append(f"{short} {'on' if on else 'off'}")
    return " ".join(parts)


def _facts(ns: Namespace, link: Link) -> dict[str, object]:
    d: dict[str, object] = {"namespace": ns.id, "name": link.name, "kind": link.kind, "mtu": link.mtu,
                            "state": link.state, "master": link.master, "driver": link.driver,
                            "addresses": list(link.addresses)}  # fmt: skip
    if link.peer_name:
        d["peer"] = f"{link.peer_ns}:{link.peer_name}"
    if link.features is not None:
        d["offloads"] = {name: link.feature_on(name) for name, _ in OFFLOADS if name in link.features}
    if link.vxlan:
        v = link.vxlan
        d["vxlan"] = {"vni": v.vni, "port": v.port, "local": v.local, "remote": v.remote, "lower": v.lower,
                      "udpcsum": v.udpcsum, "df": v.df}  # fmt: skip
    if link.geneve:
        g = link.geneve
        d["geneve"] = {"vni": g.vni, "port": g.port, "remote": g.remote, "udpcsum": g.udpcsum, "external": g.external}
    return d


def _label(link: Link, extra: str = "") -> str:
    lines = [link.name, f"{link.kind} mtu {link.mtu}" + ("" if link.state.upper() in ("UP", "UNKNOWN") else f" {link.state}")]
    if link.vxlan:
        v = link.vxlan
        lines.append(f"vni {v.vni} port {v.port}" + (f" remote {v.remote}" if v.remote else ""))
    if link.geneve:
        g = link.geneve
        lines.append(f"vni {'external' if g.external else g.vni} port {g.port}" + (f" remote {g.remote}" if g.remote else ""))
    if extra:
        lines.append(extra)
    if off := _offloads(link):
        lines.append(off)
    return "\n".join(lines)


def host_dot(snap: HostSnapshot, findings: list[Finding], collapse_over: int = COLLAPSE_OVER,
             scope: set[str] | None = None) -> HostMap:
    """The map of the namespaces in view (every one, or `scope` and its veths' peers)."""
    m = HostMap("")
    namespaces = in_view(snap, scope)
    flagged_objs, _ = flagged_refs(findings)
    ovs_port_bridge = ovs_port_bridges(snap)
    folded = collapse(snap, namespaces, findings, collapse_over)
    hidden, groups, collapsed_ns = folded.hidden, folded.groups, folded.namespaces

    out = ["graph host {", "  graph [rankdir=LR, compound=true, fontname=\"Helvetica\", fontsize=12, nodesep=0.25, ranksep=0.6];",
           "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", fontname=\"Helvetica\", fontsize=10];",
           "  edge [fontname=\"Helvetica\", fontsize=9, color=\"#555555\"];"]  # fmt: skip
    counter = 0

    def new_id(prefix: str) -> str:
        nonlocal counter
        counter += 1
        return f"{prefix}{counter}"

    edges: list[str] = []
    for ni, ns in enumerate(namespaces):
        if ns.id in collapsed_ns:
            continue
        cid = f"ns{ni}"
        m.objects[ns.id] = cid
        owner = snap.owners.get(ns.id)
        title = ns.id if ns.id != HOST_NS else f"host ({snap.hostname})"
        if owner:
            title += f"\n{owner.label()}"
        # A finding about the namespace itself, or about something in it the map does not draw (a
        # counter, a NAT chain), outlines the namespace.
        drawn = {lk.name for lk in ns.links} | {x for o in snap.ovs if o.namespace == ns.id for b in o.bridges
                                                 for x in (b.name, *(p.name for p in b.ports))}  # fmt: skip
        red = any(o.ns == ns.id and (o.kind == "namespace" or o.name not in drawn) for f in problems(findings) for o in f.objects)
        if red:
            m.flagged.add(cid)
        out.append(f"  subgraph cluster_{cid} {{")
        out.append(f"    graph [id={_q(cid)}, label={_q(title)}, style=\"rounded,filled\", fillcolor=\"#f4f7fb\", "
                   f"color={_q('#b00020' if red else '#8899aa')}, penwidth={3 if red else 1}];")  # fmt: skip
        m.nodes[cid] = {"namespace": ns.id, "owner": owner.label() if owner else None, "links": len(ns.links),
                        "errors": list(ns.errors)}  # fmt: skip
        for link in ns.links:
            if link.name == "lo" or link.kind == "loopback" or (ns.id, link.name) in hidden:
                continue
            nid = new_id("n")
            key = f"{ns.id}:{link.name}"
            m.objects[key] = nid
            m.nodes[nid] = _facts(ns, link)
            extra = ""
            dp = next((b.datapath_type for o in snap.ovs if o.namespace == ns.id for b in o.bridges if b.name == link.name), None)
            if dp:
                extra = f"OVS bridge, datapath {dp}"
                m.nodes[nid]["ovs_datapath"] = dp
            attrs = [f"id={_q(nid)}", f"label={_q(_label(link, extra))}", f"shape={LINK_SHAPE.get(link.kind, 'box')}"]
            if (ns.id, link.name) in flagged_objs:
                m.flagged.add(nid)
                attrs += ["color=\"#b00020\"", "penwidth=3", "fillcolor=\"#ffe4e8\"", "class=\"flagged\""]
            out.append(f"    {_q(key)} [{', '.join(attrs)}];")
        # OVS bridges that are not a link here (a netdev bridge's port is a tap the kernel may not list).
        for ovs in snap.ovs:
            if ovs.namespace != ns.id:
                continue
            for b in ovs.bridges:
                key = f"{ns.id}:{b.name}"
                if key in m.objects:
                    continue
                nid = new_id("n")
                m.objects[key] = nid
                m.nodes[nid] = {"namespace": ns.id, "name": b.name, "kind": "ovs-bridge", "ovs_datapath": b.datapath_type,
                                "ports": [f"{p.name} ({p.type})" for p in b.ports]}  # fmt: skip
                label = f"{b.name}\nOVS bridge, datapath {b.datapath_type}"
                attrs = [f"id={_q(nid)}", f"label={_q(label)}", "shape=box3d"]
                if (ns.id, b.name) in flagged_objs:
                    m.flagged.add(nid)
                    attrs += ["color=\"#b00020\"", "penwidth=3", "fillcolor=\"#ffe4e8\"", "class=\"flagged\""]
                out.append(f"    {_q(key)} [{', '.join(attrs)}];")
        out.append("  }")
    # Edges: veth pairs, bridge ports, OVS ports, tunnel underlays.
    drawn: set[tuple[str, str]] = set()
    for ns in namespaces:
        for link in ns.links:
            a = f"{ns.id}:{link.name}"
            if a not in m.objects:
                continue
            if link.kind == "veth" and link.peer_name and link.peer_ns:
                b = f"{link.peer_ns}:{link.peer_name}"
                pair = (min(a, b), max(a, b))
                if b in m.objects and pair not in drawn:
                    drawn.add(pair)
                    edges.append(f"  {_q(a)} -- {_q(b)} [label=\"veth\", color=\"#2a6fb0\", penwidth=2];")
            bridge = ovs_port_bridge.get((ns.id, link.name))
            if bridge and f"{ns.id}:{bridge}" in m.objects:
                edges.append(f"  {_q(a)} -- {_q(f'{ns.id}:{bridge}')} [label=\"ovs port\", style=dashed, color=\"#7a4fb0\"];")
            elif link.master and f"{ns.id}:{link.master}" in m.objects:
                edges.append(f"  {_q(a)} -- {_q(f'{ns.id}:{link.master}')} [label=\"port\", style=dashed];")
            under = underlay(ns, link) if link.vxlan or link.geneve else None
            if under and f"{ns.id}:{under[0]}" in m.objects:
                edges.append(f"  {_q(a)} -- {_q(f'{ns.id}:{under[0]}')} [label={_q(under[1])}, style=bold, color=\"#a0522d\"];")
    # OVS ports with no link of their own (internal ports of a netdev bridge, taps): a small node each.
    for ovs in snap.ovs:
        if ovs.namespace not in m.objects:
            continue
        for b in ovs.bridges:
            for p in b.ports:
                key = f"{ovs.namespace}:{p.name}"
                if p.name == b.name or key in m.objects or (ovs.namespace, p.name) in hidden:
                    continue
                nid = new_id("n")
                m.objects[key] = nid
                m.nodes[nid] = {"namespace": ovs.namespace, "name": p.name, "kind": "ovs-port", "type": p.type, "bridge": b.name}
                label = f"{p.name}\nOVS port {p.type}"
                out.append(f"  {_q(key)} [id={_q(nid)}, label={_q(label)}, shape=cds];")
                edges.append(f"  {_q(key)} -- {_q(f'{ovs.namespace}:{b.name}')} [style=dashed, color=\"#7a4fb0\"];")
    for via, members in groups.items():
        nid = new_id("g")
        mtus = sorted({leaf.mtu for _, leaf in members})
        mtu = f"mtu {mtus[0]}" if len(mtus) == 1 else f"mtu {mtus[0]}..{mtus[-1]}"
        label = f"{len(members)} namespaces\none veth each to the host\n{mtu}" + (f"\nvia {via}" if via else "")
        out.append(f"  {_q('group:' + via)} [id={_q(nid)}, label={_q(label)}, shape=folder, fillcolor=\"#eef3ff\"];")
        m.nodes[nid] = {"collapsed": len(members), "via": via or None, "mtus": mtus}
        m.collapsed.append({"node": nid, "via": via or None, "namespaces": [
            {"namespace": ns.id, "veth": leaf.name, "host_peer": leaf.peer_name, "mtu": leaf.mtu,
             "owner": snap.owners[ns.id].label() if ns.id in snap.owners else None} for ns, leaf in members]})  # fmt: skip
        target = f"{HOST_NS}:{via}" if via else None
        if target and target in m.objects:
            edges.append(f"  {_q('group:' + via)} -- {_q(target)} [label=\"veth x{len(members)}\", color=\"#2a6fb0\", penwidth=2];")
        for ns, _ in members:
            m.objects.setdefault(ns.id, nid)
    out += edges
    out.append("}")
    m.dot = "\n".join(out) + "\n"
    return m


# -- the page -------------------------------------------------------------------------------------


def _where(o, m: HostMap) -> tuple[str | None, bool]:
    """(SVG id to light up, whether the object itself is on the map). An object the map does not
    draw (a NAT chain, a counter, the kernel) lights up its namespace's cluster instead."""
    key = f"{o.ns}:{o.name}"
    if o.kind != "namespace" and key in m.objects:
        return m.objects[key], True
    return m.objects.get(o.ns), o.kind == "namespace" and o.ns in m.objects


def _finding_html(i: int, f: Finding, m: HostMap) -> str:
    where = [(o, *_where(o, m)) for o in f.objects]
    ids = sorted({sid for _, sid, _ in where if sid})
    objs = ", ".join(f"<code>{esc(o)}</code> ({esc(o.kind)})" + ("" if on else " <span class=\"muted\">not on the map"
                     + (", its namespace is outlined" if sid else "") + "</span>") for o, sid, on in where) or "-"  # fmt: skip
    fixes = "\n".join(a.command() for a in f.fix) or "no single command: see the remediation in `badsum doctor`"
    cls = "warn" if f.outcome == Outcome.WARN else "fail"
    refs = (f"<details><summary>references ({len(f.references)})</summary>"
            + "<br>".join(f"<code>{esc(r)}</code>" for r in f.references) + "</details>") if f.references else ""
    return (f'<div class="finding is-{cls}" id="finding-{i}" data-nodes="{esc(" ".join(ids))}">'
            f'<b class="{cls}">{esc(f.outcome.value.upper())} {esc(f.severity.label)} {esc(f.rule)}</b> {esc(f.title)}<br>'
            f"objects: {objs}<br>why: {esc(f.reason)}<br>evidence: {esc(f.evidence)}"
            f"<pre>fix:\n{esc(fixes)}</pre>{refs}</div>")  # fmt: skip


def _collapsed_html(m: HostMap) -> str:
    if not m.collapsed:
        return ""
    rows = []
    for g in m.collapsed:
        for n in g["namespaces"]:  # type: ignore[union-attr]
            rows.append(f"<tr><td>{esc(n['namespace'])}</td><td>{esc(n['owner'] or '')}</td><td>{esc(n['veth'])}</td>"
                        f"<td>{esc(n['host_peer'])}</td><td>{esc(n['mtu'])}</td><td>{esc(g['via'] or '-')}</td></tr>")  # fmt: skip
    total = sum(len(g["namespaces"]) for g in m.collapsed)  # type: ignore[arg-type, misc]
    return (f"<h2>Namespaces drawn as one node ({total})</h2><details><summary>Each holds only a veth to the host and "
            "no finding names it; the list</summary><table><tr><th>namespace</th><th>owner</th><th>veth</th>"
            f"<th>host side</th><th>mtu</th><th>via</th></tr>{''.join(rows)}</table></details>")  # fmt: skip


SCRIPT = """
(function(){
  var facts = JSON.parse(document.getElementById('map-facts').textContent);
  var panel = document.getElementById('details');
  function node(id){ return document.getElementById(id); }
  function clear(){ document.querySelectorAll('#map .selected').forEach(function(e){e.classList.remove('selected');});
                    document.querySelectorAll('.finding.active').forEach(function(e){e.classList.remove('active');}); }
  document.querySelectorAll('.finding').forEach(function(div){
    div.addEventListener('click', function(){
      clear(); div.classList.add('active');
      var ids = (div.getAttribute('data-nodes') || '').split(' ').filter(Boolean);
      ids.forEach(function(id){ var e = node(id); if (e) { e.classList.add('selected'); } });
      if (ids.length && node(ids[0])) { node(ids[0]).scrollIntoView({block: 'center', inline: 'center'}); }
    });
  });
  document.querySelectorAll('#map g.node, #map g.cluster').forEach(function(g){
    g.addEventListener('click', function(ev){
      ev.stopPropagation(); clear(); g.classList.add('selected');
      var f = facts[g.id];
      panel.textContent = f ? JSON.stringify(f) : g.id;
    });
  });
  document.body.setAttribute('data-ready', '1');  // the handlers are wired: the browser test looks for it
})();
"""


def doctor_page(snap: HostSnapshot, findings: list[Finding], m: HostMap, svg: str) -> str:
    """The page: the answer, the findings (click: their objects light up), the map, the collapsed list."""
    found = problems(findings)
    when = f"{snap.taken_at:.0f}"
    head = (f"<h1>badsum doctor: {esc(snap.hostname)}</h1><p>kernel {esc(snap.kernel.release)}, "
            f"{len(snap.namespaces)} namespaces ({len([k for k in m.nodes if k.startswith('ns')])} drawn as clusters), snapshot taken at unix time {esc(when)}. "
            + (f'<b class="fail">{len(found)} problem{"s" if len(found) != 1 else ""}</b>' if found
               else '<b class="ok">nothing wrong found</b>') + "</p>")  # fmt: skip
    legend = ("<p class=\"muted\">Click a finding to highlight its objects, an object for its facts. Offloads: "
              + ", ".join(f"<code>{short}</code> = <code>{name}</code>" for name, short in OFFLOADS)
              + ". Edges: veth pair (blue), bridge or OVS port (dashed), tunnel underlay (brown).</p>")  # fmt: skip
    body = [head, "<h2>Findings</h2>"]
    body += [_finding_html(i, f, m) for i, f in enumerate(found)] or ['<p class="ok">none</p>']
    body += ["<h2>Host map</h2>", legend, '<div id="details" class="mono">click an object on the map</div>',
             f'<div id="map">{svg}</div>', _collapsed_html(m), json_island("map-facts", m.nodes)]
    return page(f"badsum doctor {snap.hostname}", "\n".join(body), SCRIPT)


__all__ = ["COLLAPSE_OVER", "OFFLOADS", "HostMap", "doctor_page", "host_dot"]
