"""KB-003 and CFG-OVERLAY-MTU: a tunnel device's MTU plus its overhead against its underlay."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from badsum.host.model import HostSnapshot, Link, Namespace, Route
from badsum.rules.kernels import KERNEL_FIXES, kernel_has
from badsum.rules.model import Finding, FixAction, Outcome, Rule
from badsum.rules.toolkit import (
    TUNNEL_KINDS,
    finding,
    is_ovs_vport,
    link_ref,
    links,
    ovs_datapath,
    skip,
    veth_peer,
)


@dataclass(frozen=True, slots=True)
class _Underlay:
    ns: Namespace
    link: Link
    mtu: int
    how: str


def _flow_based(ns: Namespace, link: Link) -> str | None:
    """Why a tunnel device's own MTU is not the overlay MTU, if it is not."""
    if is_ovs_vport(ns, link):
        return f"{link.name} is an Open vSwitch datapath vport (its MTU is not the overlay's)"
    vx = link.vxlan
    if vx is not None and vx.vni == 0 and vx.remote is None and vx.lower is None:
        return f"{link.name} is a flow-based (external) tunnel: the MTU is set per route or flow"
    return None


def route_dev(ns: Namespace, dest: str | None) -> tuple[str | None, int | None, str]:
    """The device (and route MTU) the namespace would use to reach `dest` (the default route if None).

    Routes hold both families; a `default` route's family comes from its gateway (any, without one).
    """
    best: tuple[int, Route] | None = None
    target = None
    if dest:
        try:
            target = ipaddress.ip_address(dest)
        except ValueError:
            target = None
    want = target.version if target is not None else 4
    for route in ns.routes:
        if route.dev is None:
            continue
        if route.dst == "default":
            family = 6 if route.via and ":" in route.via else 4 if route.via else want
            if family != want:
                continue
            prefix = 0
        else:
            try:
                net = ipaddress.ip_network(route.dst, strict=False)
            except ValueError:
                continue
            if net.version != want or (target is None and net.prefixlen != 0) or (target is not None and target not in net):
                continue
            prefix = net.prefixlen
        if best is None or prefix > best[0]:
            best = (prefix, route)
    if best is None:
        return None, None, ""
    route = best[1]
    return route.dev, route.mtu, f" (route to {dest or 'default'} via {route.dev})"


def _underlay(snap: HostSnapshot, ns: Namespace, link: Link) -> _Underlay | None:
    vx = link.vxlan
    name: str | None = vx.lower if vx is not None and vx.lower else None
    route_mtu: int | None = None
    how = ""
    if name is None:
        gn = link.geneve
        name, route_mtu, how = route_dev(ns, vx.remote if vx is not None else gn.remote if gn is not None else None)
    lower = ns.link(name) if name else None
    if lower is None or lower is link:
        return None
    mtu = min(lower.mtu, route_mtu) if route_mtu else lower.mtu
    if route_mtu and route_mtu < lower.mtu:
        how += f", route MTU {route_mtu}"
    return _Underlay(ns, lower, mtu, how)


def _overhead(link: Link) -> tuple[int, str]:
    vx = link.vxlan
    if link.kind == "geneve":
        if link.geneve is not None and link.geneve.remote and ":" in link.geneve.remote:
            return 70, "Geneve over IPv6 (70 is the minimum: options add more)"
        return 50, "Geneve over IPv4 (50 is the minimum: options add more)"
    v6 = vx is not None and any(a and ":" in a for a in (vx.local, vx.remote))
    return (70, "VXLAN over IPv6") if v6 else (50, "VXLAN over IPv4")


def _tunnel_mtu(snap: HostSnapshot, rule: Rule, df_wanted: bool) -> list[Finding]:
    """Overlay MTU + encapsulation > underlay MTU; KB-003 takes the tunnels with DF set."""
    out = []
    enforced, kernel_how = kernel_has(snap.kernel, KERNEL_FIXES["KB-003"])
    for ns, link in links(snap, TUNNEL_KINDS):
        obj = link_ref(ns, link)
        df = link.vxlan.df if link.vxlan is not None else None
        if (df == "set") != df_wanted:
            continue
        why = _flow_based(ns, link)
        if why:
            out.append(finding(rule, Outcome.PASS, [obj], why))
            continue
        under = _underlay(snap, ns, link)
        if under is None:
            out.append(finding(rule, Outcome.UNKNOWN, [obj], f"the underlay device of {obj} could not be told (no lower device, no route)"))
            continue
        overhead, encap = _overhead(link)
        needed = link.mtu + overhead
        lower_obj = link_ref(under.ns, under.link)
        if needed <= under.mtu:
            out.append(finding(rule, Outcome.PASS, [obj, lower_obj],
                               f"MTU {link.mtu} + {overhead} = {needed} fits {lower_obj} MTU {under.mtu}"))  # fmt: skip
            continue
        max_mtu = under.mtu - overhead
        facts = {"ns": ns.id, "name": link.name, "kind": link.kind, "mtu": link.mtu, "overhead": overhead,
                 "encap": encap, "needed": needed, "lower_ns": under.ns.id, "lower": under.link.name,
                 "lower_mtu": under.mtu, "lower_how": under.how, "max_mtu": max_mtu, "df": df or "not reported",
                 "kernel_how": kernel_how}  # fmt: skip
        fix = [FixAction("mtu", ns.id, ns.enter, link.name, "mtu", str(max_mtu),
                         "every path over this overlay gets the smaller MTU; containers or pods with their own MTU "
                         "(CNI configuration) need the same change")]  # fmt: skip
        fix += _bridged_path(snap, ns, link, max_mtu)
        outcome = Outcome.FAIL
        reason = "full-size packets do not fit the underlay once encapsulated"
        if df_wanted and enforced is False:
            outcome = Outcome.WARN
            reason = "this kernel still fragments DF tunnel packets locally; kernels from 3.13 (el7 3.10.0-150) drop them"
        out.append(finding(rule, outcome, [obj, lower_obj], reason, facts, fix))
    if not out:
        return skip(rule, "no VXLAN or Geneve tunnel with DF set" if df_wanted else "no VXLAN or Geneve tunnel without DF set")
    return out


def _bridged_path(snap: HostSnapshot, ns: Namespace, link: Link, mtu: int) -> list[FixAction]:
    """A tunnel enslaved to a bridge shares its L2 domain with the bridge's veth ports and the
    containers behind them. A bridge drops frames larger than an egress port's MTU without an
    ICMP error, so lowering the tunnel alone leaves full-size container traffic black-holed: the
    veth ports and their container-side peers need the same MTU (as the vxlan-mtu-df lab fixes it)."""
    if not link.master:
        return []
    out = []
    for port in ns.links:
        if port.master != link.master or port.name == link.name or port.kind != "veth":
            continue
        if port.mtu > mtu:
            out.append(FixAction("mtu", ns.id, ns.enter, port.name, "mtu", str(mtu), f"bridge port of {link.master}"))
        peer = veth_peer(snap, port)
        if peer is not None and peer[1].mtu > mtu:
            pns, plink = peer
            out.append(FixAction("mtu", pns.id, pns.enter, plink.name, "mtu", str(mtu),
                                 "the container side: its applications then send packets that fit"))  # fmt: skip
    return out


def df_tunnel_underlay(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    return _tunnel_mtu(snap, rule, df_wanted=True)


def overlay_mtu(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    return _tunnel_mtu(snap, rule, df_wanted=False)


# -- KB-016: a zero outer UDP checksum and GRO on the receiver ----------------------------------


def _outer_checksum(ns: Namespace, link: Link) -> tuple[bool | None, str]:
    """Whether the tunnel sends a zero outer UDP checksum: (True/False/None, in words)."""
    if is_ovs_vport(ns, link):
        return True, "set per port by Open vSwitch (options:csum, false by default; Antrea's tunnelCsum, OVN)"
    vx, gn = link.vxlan, link.geneve
    if vx is not None:
        if vx.udpcsum:
            return False, "udpcsum on"
        if any(a and ":" in a for a in (vx.local, vx.remote)):
            return False, "IPv6 endpoints: a zero UDP checksum needs udp6zerocsumtx, which the snapshot does not report for VXLAN"
        if vx.vni == 0 and vx.remote is None and vx.lower is None:
            return True, "flow-based device: set per packet, left at 0 by Cilium (cilium#15485) unless configured"
        return True, "noudpcsum (" + ("reported" if vx.udpcsum is False else "not reported: the IPv4 default") + ")"
    if gn is not None:
        if gn.remote and ":" in gn.remote:
            return (True, "udp6zerocsumtx") if gn.udp6zerocsumtx else (False, "IPv6: the UDP checksum is filled")
        if gn.udpcsum is None:
            return None, "the Geneve udpcsum setting was not reported"
        if gn.external and not gn.udpcsum:
            return True, "flow-based device: set per packet (TUNNEL_CSUM), 0 unless the flow asks for it"
        return (False, "udpcsum on") if gn.udpcsum else (True, "noudpcsum")
    return None, f"the {link.kind} parameters of {link.name} were not read"


#: Distribution builds reported without 89e5c58fc1e2: (distro, last build seen affected) (cilium#15485: RHEL 8.3).
KB016_REPORTED = (("el8", 240),)


def zero_udp_csum_gro(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-016"])
    k = snap.kernel
    if has is None and any(k.distro == d and k.distro_build is not None and k.distro_build <= b for d, b in KB016_REPORTED):
        has, how = False, f"{k.release}: {k.distro} builds up to {k.distro_build} were reported without 89e5c58fc1e2 (cilium#15485)"
    if has:
        return skip(rule, f"kernel {how}: it merges zero-checksum tunnel packets (receivers with older kernels may not)")
    out = []
    for ns, link in links(snap, TUNNEL_KINDS):
        obj = link_ref(ns, link)
        zero, why = _outer_checksum(ns, link)
        if zero is None:
            out.append(finding(rule, Outcome.UNKNOWN, [obj], why))
            continue
        if not zero:
            out.append(finding(rule, Outcome.PASS, [obj], f"{obj} fills its outer UDP checksum ({why})"))
            continue
        if has is None:  # a throughput note is not worth a false alarm on a kernel that may well have the fix
            out.append(finding(rule, Outcome.UNKNOWN, [obj], f"{obj} sends a zero outer UDP checksum ({why}); {how}"))
            continue
        facts = {"ns": ns.id, "name": link.name, "kind": link.kind, "why": why, "kernel": snap.kernel.release,
                 "kernel_how": how}  # fmt: skip
        out.append(finding(rule, Outcome.WARN, [obj], "tunnel packets with a zero outer UDP checksum are not merged on "
                           "receive by this kernel: more CPU and less throughput, no loss", facts))  # fmt: skip
    return out or skip(rule, "no VXLAN or Geneve device")


# -- KB-017: PMTU discovery for bridged tunnels ---------------------------------------------------


def _bridged(ns: Namespace, link: Link) -> tuple[str, int] | None:
    """(`Linux bridge X` or `Open vSwitch datapath X`, the overlay MTU) when the tunnel is bridged, not routed."""
    if not link.master:
        return None
    datapath = ovs_datapath(ns, link)
    master = ns.link(link.master)
    if datapath is not None:
        members = [m for m in ns.links if m.master == link.master and m.kind not in TUNNEL_KINDS]
        if not members:
            return None  # no port whose MTU is the overlay's: nothing to compare
        return f"Open vSwitch datapath {link.master}", max(m.mtu for m in members)
    if master is not None and master.kind == "bridge":
        return f"Linux bridge {link.master}", link.mtu
    return None


def _geneve_options_cni(snap: HostSnapshot) -> str | None:
    """An OVN-based CNI (it puts Geneve options on every packet), if one is seen."""
    return next((c.name for c in snap.cni if c.name in ("ovn-kubernetes", "kube-ovn")), None)


def bridged_tunnel_pmtu(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-017"])
    opts_has, opts_how = kernel_has(snap.kernel, KERNEL_FIXES["KB-017/geneve-options"])
    opts_cni = _geneve_options_cni(snap)
    if has and (opts_has or opts_cni is None):
        why = how if opts_has else f"{how}; no OVN-based CNI (Geneve options) seen"
        return skip(rule, f"kernel {why}")
    out = []
    for ns, link in links(snap, TUNNEL_KINDS):
        bridged = _bridged(ns, link)
        if bridged is None:
            continue
        where, overlay_mtu = bridged
        obj = link_ref(ns, link)
        if has and not (link.kind == "geneve" and is_ovs_vport(ns, link)):
            continue  # after 5.9 only the OVS + Geneve options case remains
        under = _underlay(snap, ns, link)
        if under is None:
            out.append(finding(rule, Outcome.UNKNOWN, [obj], f"the underlay device of {obj} could not be told (no lower device, no route)"))
            continue
        overhead, encap = _overhead(link)
        needed = overlay_mtu + overhead
        lower_obj = link_ref(under.ns, under.link)
        if needed <= under.mtu:
            out.append(finding(rule, Outcome.PASS, [obj, lower_obj], f"overlay MTU {overlay_mtu} + {overhead} = {needed} fits "
                               f"{lower_obj} MTU {under.mtu}: no packet needs PMTU discovery here"))  # fmt: skip
            continue
        max_mtu = under.mtu - overhead
        if has:
            kernel_how = (f"{how}; for {opts_cni}'s Geneve options (the ICMP was built from a GSO packet and dropped) "
                          f"{opts_how}")  # fmt: skip
            cond = opts_has
        else:
            kernel_how, cond = how, has
        facts = {"ns": ns.id, "name": link.name, "kind": link.kind, "where": where, "overlay_mtu": overlay_mtu,
                 "overhead": overhead, "encap": encap, "needed": needed, "lower_ns": under.ns.id, "lower": under.link.name,
                 "lower_mtu": under.mtu, "lower_how": under.how, "max_mtu": max_mtu, "kernel": snap.kernel.release,
                 "kernel_how": kernel_how}  # fmt: skip
        fix = [FixAction("mtu", ns.id, ns.enter, link.name, "mtu", str(max_mtu), "every path over this overlay gets the "
                         "smaller MTU")] if not is_ovs_vport(ns, link) else []  # fmt: skip
        fix += _bridged_path(snap, ns, link, max_mtu)
        if cond is False:
            out.append(finding(rule, Outcome.FAIL, [obj, lower_obj], "full-size packets from the bridge are too big once "
                               "encapsulated, and this kernel sends no 'fragmentation needed'/'packet too big' back to "
                               "the bridged sender: they vanish", facts, fix))  # fmt: skip
        else:
            out.append(finding(rule, Outcome.WARN, [obj, lower_obj], "full-size packets from the bridge are too big once "
                               "encapsulated; whether this kernel tells the bridged sender is not known", facts, fix))  # fmt: skip
    return out or skip(rule, "no VXLAN or Geneve device is a port of a Linux bridge or an Open vSwitch datapath")


__all__ = ["bridged_tunnel_pmtu", "df_tunnel_underlay", "overlay_mtu", "route_dev", "zero_udp_csum_gro"]
