"""KB-013, KB-014, KB-015: receive offloads that merge tunnel packets the tunnel then cannot take.

All three are the v6.9-cycle change in UDP GRO seen from different sides (known-issues-2 C, C', D):
before 3d010c8031e3 a UDP GSO skb that was not built as a tunnel packet could land in a VXLAN/Geneve
socket (GRO done in another namespace, or by a userspace VPN writing coalesced packets to tun); after
it such skbs are segmented, and vmxnet3's LRO'd tunnel packets, not tagged as tunnel GSO, are dropped
until 982d30c30eaa.
"""

from __future__ import annotations

import ipaddress

from badsum.host.model import HostSnapshot, Link, Namespace
from badsum.rules.kernels import KERNEL_FIXES, kernel_has
from badsum.rules.model import Finding, Outcome, Rule
from badsum.rules.toolkit import (
    TUNNEL_KINDS,
    changeable_features,
    ethtool_off,
    finding,
    link_ref,
    links,
    skip,
    unread_features,
)
from badsum.rules.tunnels import route_dev

#: The two receive offloads that GRO forwarded UDP (kernel feature names, 5.6+ and 5.12+).
UDP_GRO_FWD = ("rx-udp-gro-forwarding", "rx-gro-list")
#: LRO by the kernel's feature name, then ethtool's alias.
LRO = ("large-receive-offload", "rx-lro")
#: Tailscale's addresses (CGNAT range and its ULA): a tun device holding one is tailscale0 whatever its name.
TAILSCALE_NETS = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd7a:115c:a1e0::/48"))


def _on(link: Link, names: tuple[str, ...]) -> list[str]:
    feats = link.features or {}
    return [n for n in names if n in feats and feats[n].active]


# -- KB-013 ------------------------------------------------------------------------------------


def udp_gro_forwarding_netns(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-013"])
    if has:
        return skip(rule, f"kernel {how}")
    tunnels = list(links(snap, TUNNEL_KINDS))
    if not tunnels:
        return skip(rule, "no VXLAN or Geneve device")
    out = []
    for ns, link in links(snap):
        if link.kind in TUNNEL_KINDS or link.kind == "loopback":
            continue
        elsewhere = [f"{tns.id}:{t.name}" for tns, t in tunnels if tns.id != ns.id]
        obj = link_ref(ns, link)
        if link.features is None:
            if elsewhere and link.kind in ("veth", "device"):
                out.append(unread_features(rule, obj))
            continue
        on = _on(link, UDP_GRO_FWD)
        if not on:
            continue  # the default: forwarded UDP is not merged (a pass per link would only be noise)
        if not elsewhere:
            out.append(finding(rule, Outcome.PASS, [obj], f"{', '.join(on)} on, but every tunnel endpoint is in {ns.id}: "
                               "GRO finds the tunnel socket and builds tunnel GSO packets"))  # fmt: skip
            continue
        facts = {"ns": ns.id, "name": link.name, "kind": link.kind, "features": ", ".join(on),
                 "tunnels": ", ".join(elsewhere), "kernel": snap.kernel.release, "kernel_how": how}  # fmt: skip
        fix = [ethtool_off(ns, link, n, "forwarded UDP is no longer merged on receive (less throughput for UDP "
                           "forwarding, e.g. a Tailscale exit node)") for n in changeable_features(link, UDP_GRO_FWD)]  # fmt: skip
        if has is False:
            out.append(finding(rule, Outcome.FAIL, [obj], "merged UDP packets reach a tunnel socket in another namespace "
                               "as non-tunnel GSO packets: invalid packets or a crash", facts, fix))  # fmt: skip
        else:
            out.append(finding(rule, Outcome.WARN, [obj], "whether this kernel has the fixes is not known; the "
                               "configuration is the one that breaks without them", facts, fix))  # fmt: skip
    return out or skip(rule, "no interface has rx-udp-gro-forwarding or rx-gro-list on")


# -- KB-014 ------------------------------------------------------------------------------------


def _tun_underlay(ns: Namespace, link: Link) -> Link | None:
    """The tun device a VXLAN/Geneve device sends over (its lower device, or the route to its remote)."""
    vx, gn = link.vxlan, link.geneve
    name = vx.lower if vx is not None and vx.lower else None
    if name is None and vx is not None and vx.local:  # bound to the VPN's own address (flannel --iface=tailscale0)
        name = next((x.name for x in ns.links if any(a.split("/")[0] == vx.local for a in x.addresses)), None)
    if name is None:
        remote = vx.remote if vx is not None else gn.remote if gn is not None else None
        if remote is None:
            return None  # no fixed remote (flannel, Cilium): the per-peer routes say, and they are not read per peer
        name, _, _ = route_dev(ns, remote)
    lower = ns.link(name) if name else None
    return lower if lower is not None and (lower.kind == "tun" or lower.driver == "tun") else None


def _tailscale(link: Link) -> bool:
    if link.name.startswith("tailscale"):
        return True
    for a in link.addresses:
        try:
            ip = ipaddress.ip_interface(a).ip
        except ValueError:
            continue
        if any(ip in net for net in TAILSCALE_NETS):
            return True
    return False


def overlay_over_userspace_vpn(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    v = tuple(snap.kernel.version)
    if v < (6, 2, 0) and not snap.kernel.distro:
        return skip(rule, f"kernel {snap.kernel.release} is older than 6.2: tun takes no UDP GSO packets from userspace")
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-013"])
    if has:
        return skip(rule, f"kernel {how}: coalesced UDP packets landing in a tunnel are segmented first")
    out = []
    for ns, link in links(snap, TUNNEL_KINDS):
        tun = _tun_underlay(ns, link)
        if tun is None:
            continue
        vpn = "Tailscale" if _tailscale(tun) else "a userspace VPN on tun (wireguard-go or similar)"
        facts = {"ns": ns.id, "name": link.name, "kind": link.kind, "tun": tun.name, "vpn": vpn,
                 "kernel": snap.kernel.release, "kernel_how": how}  # fmt: skip
        objects = [link_ref(ns, link), link_ref(ns, tun)]
        out.append(finding(rule, Outcome.WARN, objects, f"if {vpn} writes coalesced UDP packets (Tailscale 1.54+), the "
                           f"{link.kind} socket gets them unsegmented and drops them", facts))  # fmt: skip
    return out or skip(rule, "no VXLAN or Geneve device sends over a tun device")


# -- KB-015 ------------------------------------------------------------------------------------


def vmxnet3_lro_tunnel(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    dropped, dropped_how = kernel_has(snap.kernel, KERNEL_FIXES["KB-015/regression"])
    fixed, fixed_how = kernel_has(snap.kernel, KERNEL_FIXES["KB-015"])
    if fixed:
        return skip(rule, f"kernel {fixed_how}")
    if dropped is False:
        return skip(rule, f"kernel {dropped_how}: LRO'd tunnel packets are still accepted")
    overlays = [f"{ns.id}:{link.name}" for ns, link in links(snap, TUNNEL_KINDS)]
    out = []
    for ns, link in links(snap):
        if link.driver != "vmxnet3":
            continue
        obj = link_ref(ns, link)
        if link.features is None:
            out.append(unread_features(rule, obj))
            continue
        on = _on(link, LRO)
        if not on:
            out.append(finding(rule, Outcome.PASS, [obj], f"LRO is off on {obj}"))
            continue
        if not overlays:
            out.append(finding(rule, Outcome.PASS, [obj], "no VXLAN or Geneve device receives over it"))
            continue
        kernel_how = f"{dropped_how}; {fixed_how}"
        facts = {"ns": ns.id, "name": link.name, "feature": on[0], "overlays": ", ".join(overlays),
                 "kernel": snap.kernel.release, "kernel_how": kernel_how}  # fmt: skip
        fix = [ethtool_off(ns, link, "lro", "the virtual NIC stops merging received segments; GRO still merges them in software")
               ] if changeable_features(link, LRO) else []  # fmt: skip
        if dropped and fixed is False:
            out.append(finding(rule, Outcome.FAIL, [obj], "LRO'd VXLAN/Geneve packets are not tagged as tunnel GSO and "
                               "this kernel drops them", facts, fix))  # fmt: skip
        else:  # most 6.12.y/6.15.y builds in use carry the driver fix: not a warning on a guess
            out.append(finding(rule, Outcome.UNKNOWN, [obj], f"LRO is on and {kernel_how}: whether this kernel drops "
                               "LRO'd tunnel packets is not known"))  # fmt: skip
    return out or skip(rule, "no vmxnet3 interface")


__all__ = ["LRO", "UDP_GRO_FWD", "overlay_over_userspace_vpn", "udp_gro_forwarding_netns", "vmxnet3_lro_tunnel"]
