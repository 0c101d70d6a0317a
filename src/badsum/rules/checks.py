"""The pure checks behind the catalogue: `(snapshot, rule) -> list[Finding]`, one per rule.

Each check reads only the HostSnapshot it is given (no I/O, no clock) and returns one finding per
object it looked at: fail, warn, pass, or unknown with the missing fact named; a single skip when
nothing it applies to exists. Checks are registered in CHECKS, in catalogue order.

Checks are written with the rule toolkit (toolkit.py: walking links and veth peers, reading
offloads, building findings and fixes), typed against badsum.host.model. Kernel-version facts are in
kernels.py, the KB-004 iptables parsing in masquerade.py, the tunnel MTU checks in tunnels.py and
badsum's own lab emulations of old kernel bugs (tc programs) in emulation.py. The second wave
(known-issues-2.md, KB-011..KB-020) lives in ipv6nat.py, gro.py, tunnels.py and cnipaths.py.
"""

from __future__ import annotations

import shlex

from badsum.host.model import HostSnapshot, Link, Namespace
from badsum.rules.cnipaths import antrea_l7_partial_csum, ipip_tx_csum_mlx5, kube_ovn_double_snat
from badsum.rules.emulation import emulations, kb001_emulated
from badsum.rules.gro import overlay_over_userspace_vpn, udp_gro_forwarding_netns, vmxnet3_lro_tunnel
from badsum.rules.ipv6nat import cilium_ipv6_l4_csum, ipv6_nat_csum
from badsum.rules.kernels import (
    KB009_CONFIRMED,
    KB009_RANGES,
    KERNEL_FIXES,
    abi_number,
    kernel_has,
    version_text,
)
from badsum.rules.masquerade import unguarded_masquerades, unmark_fix
from badsum.rules.model import Finding, ObjectRef, Outcome, Rule
from badsum.rules.toolkit import (
    AF_PACKET_FORWARDERS,
    HOST_NS,
    RX_CSUM,
    TUNNEL_KINDS,
    TX_CSUM,
    UDP_TNL,
    UFO,
    Check,
    changeable_features,
    ethtool_off,
    finding,
    first_feature,
    is_ovs_vport,
    link_ref,
    links,
    ovs_datapath,
    skip,
    tx_csum_on,
    unread_features,
    veth_peer,
)
from badsum.rules.tunnels import bridged_tunnel_pmtu, df_tunnel_underlay, overlay_mtu, zero_udp_csum_gro

# -- KB-001 ------------------------------------------------------------------------------------


def veth_rx_csum_upgrade(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-001"])
    if has:
        return kb001_emulated(snap, rule, how) or skip(rule, f"kernel {how}")
    out = []
    for ns, link in links(snap, ("veth",)):
        if ns.id == HOST_NS:
            continue  # the container end is the one the kernel hands routed packets to
        peer = veth_peer(snap, link)
        rx, name = first_feature(link, RX_CSUM)
        obj = link_ref(ns, link)
        if rx is None:
            out.append(unread_features(rule, obj))
            continue
        if not rx:
            out.append(finding(rule, Outcome.PASS, [obj], f"{name} is off on {obj}: the container's stack verifies checksums"))
            continue
        peer_master = peer[1].master if peer else None
        v6 = any(":" in a and not a.lower().startswith("fe80") for a in link.addresses)
        routed = peer is not None and peer_master is None
        path = ("the host end is not on a bridge: traffic is routed into the container" if routed else
                "the container has a global IPv6 address (routed, not NATed)" if v6 else
                "the host end is on a bridge: affected when traffic reaches it routed without NAT (IPv6, routed pod IPs)")  # fmt: skip
        objects = [obj] + ([link_ref(*peer)] if peer else [])
        facts = {"ns": ns.id, "name": link.name, "peer": f"{peer[0].id}:{peer[1].name}" if peer else "unknown",
                 "peer_master": f" on bridge {peer_master}" if peer_master else "", "kernel": snap.kernel.release,
                 "kernel_how": how, "path": path}  # fmt: skip
        fix = [ethtool_off(ns, link, "rx", "the container's stack verifies TCP/UDP checksums in software (a little CPU)")]
        outcome = Outcome.FAIL if (routed or v6) and has is False else Outcome.WARN
        out.append(finding(rule, outcome, objects, "a corrupt packet routed into this container would be delivered as verified",
                           facts, fix))  # fmt: skip
    return out or skip(rule, "no veth in a container namespace")


# -- KB-002 ------------------------------------------------------------------------------------


def ufo_pmtu(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-002"])
    if has:
        return skip(rule, f"kernel {how}")
    out = []
    for ns, link in links(snap):
        obj = link_ref(ns, link)
        ufo, name = first_feature(link, UFO)
        if ufo is None:
            if link.features is None and link.kind == "device":  # a NIC is where UFO lives (virtio_net)
                out.append(unread_features(rule, obj))
            continue
        if not ufo:
            out.append(finding(rule, Outcome.PASS, [obj], f"{name} is off on {obj}"))
            continue
        facts = {"ns": ns.id, "name": link.name, "driver": link.driver or "unknown driver", "kernel": snap.kernel.release,
                 "kernel_how": how}  # fmt: skip
        fix = [ethtool_off(ns, link, "ufo", "large UDP datagrams are fragmented in software (little CPU)")] if changeable_features(link, UFO) else []
        outcome = Outcome.FAIL if has is False else Outcome.WARN
        out.append(finding(rule, outcome, [obj], "UDP sockets asking for DF get no EMSGSIZE; over-MTU UFO packets are built", facts, fix))
    return out or skip(rule, "no interface reports udp-fragmentation-offload")


# -- KB-004 ------------------------------------------------------------------------------------
def vxlan_double_snat(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    out = []
    for ns, link in links(snap, ("vxlan",)):
        obj = link_ref(ns, link)
        if is_ovs_vport(ns, link):
            continue
        feature = tx_csum_on(rule, obj, link, out)
        if feature is None:
            continue
        if link.vxlan is not None and link.vxlan.udpcsum:
            out.append(finding(rule, Outcome.PASS, [obj], f"{obj} fills the outer UDP checksum (udpcsum): NAT updates a real one"))
            continue
        nat = ns.nat.iptables_nat if ns.nat is not None else None
        # Rules the other backend holds (a legacy-mode kube-proxy on an nf_tables host) count too.
        legacy = ns.nat.iptables_legacy_nat if ns.nat is not None else None
        if nat is None and legacy is None:
            missing = "iptables" in snap.tools and snap.tools["iptables"] is None
            why = ("iptables is not installed on this host, so the nat table was not read (kube-proxy brings its own)"
                   if missing else f"the nat table of namespace {ns.id} could not be read")  # fmt: skip
            out.append(finding(rule, Outcome.UNKNOWN, [obj], why))
            continue
        masqs = unguarded_masquerades(nat or ())
        legacy_masqs = unguarded_masquerades(legacy or ())
        if not masqs and not legacy_masqs:
            out.append(finding(rule, Outcome.PASS, [obj], "no mark-gated MASQUERADE --random-fully without the unmark rules"))
            continue
        has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-004"])
        vx = link.vxlan
        rules_text = [f"{m.chain} rule {m.position}: {shlex.join(m.tokens)}" for m in masqs]
        rules_text += [f"{m.chain} rule {m.position} (iptables-legacy): {shlex.join(m.tokens)}" for m in legacy_masqs]
        facts = {"ns": ns.id, "name": link.name, "port": vx.port if vx else "unknown", "feature": feature,
                 "udpcsum": "off" if vx is not None and vx.udpcsum is False else "not reported (off by default)",
                 "mark": f"{(masqs or legacy_masqs)[0].mark:#x}", "kernel": snap.kernel.release, "kernel_how": how,
                 "rules": "; ".join(rules_text)}  # fmt: skip
        objects = [obj] + [ObjectRef(ns.id, f"nat/{m.chain}", "iptables-chain") for m in masqs]
        objects += [ObjectRef(ns.id, f"nat/{m.chain}", "iptables-legacy-chain") for m in legacy_masqs]
        # The unmark rules as commands only for the active backend: a FixAction runs `iptables`.
        fix = [a for m in masqs for a in unmark_fix(ns, m)]
        if changeable_features(link, ("tx-checksum-ip-generic",)):
            fix.append(ethtool_off(ns, link, "tx-checksum-ip-generic",
                                "also turns off TSO on the VXLAN device; the CNI recreates the device on restart, so persist it (udev rule)"))  # fmt: skip
        # A lab's emulation on the uplink puts the pre-5.7 update back where the kernel made it (after
        # POSTROUTING): the configuration then breaks on this kernel too.
        emu = emulations(ns, "KB-004", (vx.lower,) if vx is not None and vx.lower else None) if has else []
        if emu:
            e = emu[0]
            facts["kernel_how"] = (f"{snap.kernel.release} carries the fix (ea64d8d6c675), but badsum's lab emulation of "
                                   f"{e.what} is attached at {e.where}: EMULATED, the kernel acts as before 5.7 there")  # fmt: skip
            facts["emulated"] = e.as_fact()
            objects.append(ObjectRef(ns.id, f"{e.device}/tc-{e.program.direction}/{e.program.name}", "tc-bpf"))
            out.append(finding(rule, Outcome.FAIL, objects,
                               f"EMULATED: kernel {snap.kernel.release} carries the fix, but badsum's lab emulation of "
                               f"{e.what} is attached at {e.where}: encapsulated packets masqueraded a second time "
                               "leave with a bogus outer UDP checksum", facts, fix))  # fmt: skip
        elif has:
            out.append(finding(rule, Outcome.WARN, objects, "vulnerable configuration; this kernel has the fix", facts, fix))
        else:
            out.append(finding(rule, Outcome.FAIL, objects,
                               "encapsulated packets are masqueraded a second time and leave with a bogus outer UDP checksum",
                               facts, fix))  # fmt: skip
    return out or skip(rule, "no VXLAN device")


# -- KB-005 ------------------------------------------------------------------------------------


def ovs_netdev_veth_tx_csum(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    out = []
    if not snap.ovs:
        return skip(rule, "no Open vSwitch instance found")
    for ovs in snap.ovs:
        where = f"Open vSwitch ({ovs.db})" if ovs.db else "Open vSwitch"
        if ovs.running is False:
            out.append(finding(rule, Outcome.SKIP, reason=ovs.error or f"{where} is installed but not running"))
            continue
        if ovs.running is None and not ovs.bridges:
            out.append(finding(rule, Outcome.UNKNOWN, reason=f"{where} could not be read: {ovs.error or 'no reason given'}"))
            continue
        netdev = [b for b in ovs.bridges if b.datapath_type == "netdev"]
        if not netdev:
            out.append(finding(rule, Outcome.SKIP, reason=f"no bridge of {where} uses the userspace (netdev) datapath"))
            continue
        tso = ovs.other_config.get("userspace-tso-enable", "false")
        ns = snap.ns(ovs.namespace)
        before = len(out)
        for bridge in netdev:
            for port in bridge.ports:
                if port.type != "system":
                    continue
                port_obj = ObjectRef(ovs.namespace, port.name, "ovs-port")
                link = ns.link(port.name) if ns is not None else None
                if link is None:
                    out.append(finding(rule, Outcome.UNKNOWN, [port_obj],
                                       f"the kernel interface of OVS port {port.name} was not found in namespace {ovs.namespace}"))  # fmt: skip
                    continue
                if link.kind != "veth":
                    out.append(finding(rule, Outcome.PASS, [port_obj], f"{port.name} is a {link.kind}, not a veth"))
                    continue
                peer = veth_peer(snap, link)
                if peer is None:
                    out.append(finding(rule, Outcome.UNKNOWN, [port_obj],
                                       f"the peer of veth {port_obj} was not found (its namespace was not inspected)"))  # fmt: skip
                    continue
                peer_ns, peer_link = peer
                peer_obj = link_ref(peer_ns, peer_link)
                tx, feature = first_feature(peer_link, TX_CSUM)
                if tx is None:
                    out.append(unread_features(rule, peer_obj, port_obj))
                    continue
                if tso == "true":
                    out.append(finding(rule, Outcome.PASS, [peer_obj, port_obj],
                                       "userspace-tso-enable=true: OVS reads the vnet header and completes checksums"))  # fmt: skip
                    continue
                if not tx:
                    out.append(finding(rule, Outcome.PASS, [peer_obj, port_obj], f"TX checksum offload is off on {peer_obj}"))
                    continue
                facts = {"port": port.name, "bridge": bridge.name, "ovs_ns": ovs.namespace, "ovs_db": ovs.db or "default database",
                         "peer_ns": peer_ns.id, "peer": peer_link.name, "feature": feature, "tso": tso,
                         "ovs_version": ovs.version or "unknown"}  # fmt: skip
                fix = [ethtool_off(peer_ns, peer_link, "tx", "also turns off TSO/GSO for that interface")]
                out.append(finding(rule, Outcome.FAIL, [peer_obj, port_obj],
                                   "packets sent with a pseudo-header-only checksum leave OVS unfinished: ping works, TCP/UDP fail",
                                   facts, fix))  # fmt: skip
        if len(out) == before:
            out.append(finding(rule, Outcome.SKIP, reason=f"no netdev bridge of {where} has a port of type system"))
    return out


# -- KB-006 ------------------------------------------------------------------------------------


def vmxnet3_udp_tunnel_offload(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    overlays = [f"{ns.id}:{link.name}" for ns, link in links(snap, TUNNEL_KINDS)]
    out = []
    for ns, link in links(snap):
        if link.driver != "vmxnet3":
            continue
        obj = link_ref(ns, link)
        if link.features is None:
            out.append(unread_features(rule, obj))
            continue
        on = [n for n in UDP_TNL if link.features.get(n) is not None and link.features[n].active]
        if not on:
            out.append(finding(rule, Outcome.PASS, [obj], f"UDP-tunnel segmentation offload is off on {obj}"))
            continue
        if not overlays:
            out.append(finding(rule, Outcome.PASS, [obj], "no VXLAN or Geneve device sends over it"))
            continue
        has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-006"])
        facts = {"ns": ns.id, "name": link.name, "features": ", ".join(on), "overlays": ", ".join(overlays),
                 "kernel": snap.kernel.release, "kernel_how": how}  # fmt: skip
        fix = [ethtool_off(ns, link, n, "UDP-tunnel segmentation and its checksums fall back to software (more CPU for overlay traffic)")
               for n in changeable_features(link, UDP_TNL)]  # fmt: skip
        if has:
            out.append(finding(rule, Outcome.WARN, [obj], "this kernel has the driver fixes, but the offload still breaks on some ESXi hosts",
                               facts, fix))  # fmt: skip
        else:
            out.append(finding(rule, Outcome.FAIL, [obj], "the driver offloads VXLAN/Geneve checksums the virtual NIC gets wrong", facts, fix))
    return out or skip(rule, "no vmxnet3 interface")


# -- KB-007 ------------------------------------------------------------------------------------


def af_packet_forwarder(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    out = []
    for ns in snap.namespaces:
        command = (ns.command or "").strip()
        program = command.split()[0].rsplit("/", 1)[-1] if command else ""
        if program not in AF_PACKET_FORWARDERS:
            continue
        for link in ns.links:
            if link.kind != "veth":
                continue
            peer = veth_peer(snap, link)
            obj = link_ref(ns, link)
            if peer is None:
                out.append(finding(rule, Outcome.UNKNOWN, [obj], f"the peer of {obj} was not found"))
                continue
            peer_obj = link_ref(*peer)
            tx, feature = first_feature(peer[1], TX_CSUM)
            if tx is None:
                out.append(unread_features(rule, peer_obj, obj))
            elif not tx:
                out.append(finding(rule, Outcome.PASS, [peer_obj, obj], f"TX checksum offload is off on {peer_obj}"))
            else:
                facts = {"fwd_ns": ns.id, "command": program, "veth": link.name, "peer_ns": peer[0].id,
                         "peer": peer[1].name, "feature": feature}  # fmt: skip
                fix = [ethtool_off(peer[0], peer[1], "tx", "also turns off TSO/GSO for that interface")]
                out.append(finding(rule, Outcome.WARN, [peer_obj, obj],
                                   f"if {program} reads {link.name} through AF_PACKET, it forwards unfinished checksums",
                                   facts, fix))  # fmt: skip
    if not out:
        return skip(rule, "no known AF_PACKET forwarder (" + ", ".join(AF_PACKET_FORWARDERS)
                     + ") holds a namespace; the snapshot does not list every process (OVS netdev: see KB-005)")
    return out


# -- KB-008 ------------------------------------------------------------------------------------


def hw_csum_failure(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-008"])
    if has:
        return skip(rule, f"kernel {how}")
    veths = [(ns, link) for ns, link in links(snap, ("veth",))]
    tunnels = [(ns, link) for ns, link in links(snap, TUNNEL_KINDS)]
    if not (veths and tunnels):
        return skip(rule, "needs veth pairs and a VXLAN/Geneve device")
    objects = [ObjectRef(HOST_NS, snap.kernel.release, "kernel")] + [link_ref(ns, link) for ns, link in tunnels]
    facts = {"kernel": snap.kernel.release, "kernel_how": how, "tunnels": ", ".join(f"{ns.id}:{link.name}" for ns, link in tunnels),
             "veths": len(veths)}  # fmt: skip
    log = snap.kernel_log
    if log is None or log.source is None:
        # Without the log (an older snapshot, no root, dmesg_restrict) the path is there but not the symptom.
        why = "the kernel log was not read" if log is None else log.error or "the kernel log is unreadable"
        facts["log"] = f"not read ({why}): check dmesg for 'hw csum failure'"
        return [finding(rule, Outcome.WARN, objects, f"{why}: check dmesg for 'hw csum failure'", facts)]
    faults = log.counts.get("hw-csum-failure", 0)
    devices = log.devices("hw-csum-failure")
    if not faults:
        facts["log"] = f"no 'hw csum failure' in {log.records} records of {log.source}"
        return [finding(rule, Outcome.PASS, objects, facts["log"], facts)]
    named = ", ".join(f"{d} ({n})" for d, n in sorted(devices.items())) or "no device named"
    facts["log"] = f"{faults} 'hw csum failure' line(s) in {log.source}, on {named}"
    return [finding(rule, Outcome.FAIL, objects, f"the kernel logged 'hw csum failure' {faults} time(s) ({named})", facts)]


# -- KB-009 ------------------------------------------------------------------------------------


def tun_gso_einval(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    v = tuple(snap.kernel.version)
    rel = snap.kernel.release
    kernel = ObjectRef(HOST_NS, rel, "kernel")
    hit = None if snap.kernel.distro else next((r for r in KB009_RANGES if r.lo <= v < r.hi), None)
    if hit is None:
        series = any(r.lo[:2] == v[:2] for r in KB009_RANGES)
        if series and abi_number(rel) is not None and not snap.kernel.distro and _gso_devices(snap):
            return [finding(rule, Outcome.UNKNOWN, [kernel], f"{rel}: the stable release behind this build is not in its name")]
        return skip(rule, f"kernel {rel} is not in a release range known to carry e269d79c7d35 without 89add40066f9")
    devices = _gso_devices(snap)
    if not devices:
        return [finding(rule, Outcome.PASS, [kernel], "no tun/tap or virtio_net device takes GSO packets here")]
    how = f"{rel} is in {version_text(hit.lo)} .. {version_text(hit.hi)} (exclusive): {hit.source}"
    facts = {"kernel": rel, "kernel_how": how, "devices": ", ".join(f"{ns.id}:{link.name}" for ns, link in devices)}
    objects = [kernel] + [link_ref(ns, link) for ns, link in devices]
    outcome = Outcome.FAIL if hit.lo in KB009_CONFIRMED else Outcome.WARN
    return [finding(rule, outcome, objects, "GSO writes to tun devices can fail with EINVAL on this kernel", facts)]


def _gso_devices(snap: HostSnapshot) -> list[tuple[Namespace, Link]]:
    return [(ns, link) for ns, link in links(snap) if link.kind in ("tun", "tap") or link.driver in ("tun", "virtio_net")]


# -- KB-010 ------------------------------------------------------------------------------------


def odp_vxlan_vport_mtu(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    v = tuple(snap.kernel.version)
    if v[:2] not in ((4, 3), (4, 4)) or snap.kernel.distro:
        return skip(rule, f"kernel {snap.kernel.release} is not 4.3 or 4.4")
    out = []
    for ns, link in links(snap, ("vxlan",)):
        datapath = ovs_datapath(ns, link)
        if datapath is None:
            continue
        obj = link_ref(ns, link)
        members = [m for m in ns.links if m.master == link.master and m.kind not in TUNNEL_KINDS]
        overlay = max([datapath, *members], key=lambda m: m.mtu)
        if link.mtu > 1500 or overlay.mtu <= 1500:
            out.append(finding(rule, Outcome.PASS, [obj], f"vport MTU {link.mtu}, overlay MTU {overlay.mtu}"))
            continue
        facts = {"ns": ns.id, "name": link.name, "datapath": link.master, "mtu": link.mtu, "overlay_mtu": overlay.mtu,
                 "overlay": f"{ns.id}:{overlay.name}", "kernel": snap.kernel.release}  # fmt: skip
        out.append(finding(rule, Outcome.FAIL, [obj, link_ref(ns, overlay)],
                           "frames larger than 1500 bytes never reach the tunnel (fast datapath falls back to sleeve)", facts))  # fmt: skip
    return out or skip(rule, "no VXLAN vport on an Open vSwitch datapath")


# -- checksum counters -------------------------------------------------------------------------


def _ns_label(ns: Namespace) -> str:
    extra = ns.command or (ns.names[0] if ns.names and ns.names[0] != ns.id else "")
    return f"{ns.id} ({extra})" if extra else ns.id


def counters_rising(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    out = []
    for ns in snap.namespaces:
        sample = ns.counters
        if sample is None:
            out.append(finding(rule, Outcome.UNKNOWN, [ObjectRef(ns.id, ns.id, "namespace")],
                               f"the checksum counters of namespace {ns.id} were not read"))  # fmt: skip
            continue
        rising = sample.rising()
        if not rising:
            out.append(finding(rule, Outcome.PASS, [ObjectRef(ns.id, ns.id, "namespace")], "no checksum counter rose"))
            continue
        text = ", ".join(f"{k} +{d} ({sample.first[k]} -> {sample.second[k]})" for k, d in sorted(rising.items()))
        facts = {"ns": _ns_label(ns), "counters": text, "interval": f"{sample.interval_s:g}", "deltas": dict(sorted(rising.items()))}
        out.append(finding(rule, Outcome.FAIL, [ObjectRef(ns.id, k, "counter") for k in sorted(rising)],
                           "packets with bad checksums are arriving now", facts))  # fmt: skip
    return out or skip(rule, "no namespace")


def counters_past(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    out = []
    for ns in snap.namespaces:
        sample = ns.counters
        if sample is None:
            continue  # counters_rising reports the namespace as unknown
        rising = sample.rising()
        past = {k: v for k, v in sample.second.items() if v and k not in rising}
        if not past:
            out.append(finding(rule, Outcome.PASS, [ObjectRef(ns.id, ns.id, "namespace")], "every checksum counter is zero or rising"))
            continue
        facts = {"ns": _ns_label(ns), "counters": ", ".join(f"{k} {v}" for k, v in sorted(past.items())),
                 "interval": f"{sample.interval_s:g}"}  # fmt: skip
        out.append(finding(rule, Outcome.WARN, [ObjectRef(ns.id, k, "counter") for k in sorted(past)],
                           "packets with bad checksums arrived at some time since the namespace was created", facts))  # fmt: skip
    return out or skip(rule, "no namespace with counters")


#: Every check, by the name the catalogue uses, in catalogue order.
CHECKS: dict[str, Check] = {
    "veth_rx_csum_upgrade": veth_rx_csum_upgrade,
    "ufo_pmtu": ufo_pmtu,
    "df_tunnel_underlay": df_tunnel_underlay,
    "vxlan_double_snat": vxlan_double_snat,
    "ovs_netdev_veth_tx_csum": ovs_netdev_veth_tx_csum,
    "vmxnet3_udp_tunnel_offload": vmxnet3_udp_tunnel_offload,
    "af_packet_forwarder": af_packet_forwarder,
    "hw_csum_failure": hw_csum_failure,
    "tun_gso_einval": tun_gso_einval,
    "odp_vxlan_vport_mtu": odp_vxlan_vport_mtu,
    "ipv6_nat_csum": ipv6_nat_csum,
    "cilium_ipv6_l4_csum": cilium_ipv6_l4_csum,
    "udp_gro_forwarding_netns": udp_gro_forwarding_netns,
    "overlay_over_userspace_vpn": overlay_over_userspace_vpn,
    "vmxnet3_lro_tunnel": vmxnet3_lro_tunnel,
    "zero_udp_csum_gro": zero_udp_csum_gro,
    "bridged_tunnel_pmtu": bridged_tunnel_pmtu,
    "antrea_l7_partial_csum": antrea_l7_partial_csum,
    "ipip_tx_csum_mlx5": ipip_tx_csum_mlx5,
    "kube_ovn_double_snat": kube_ovn_double_snat,
    "overlay_mtu": overlay_mtu,
    "counters_rising": counters_rising,
    "counters_past": counters_past,
}
