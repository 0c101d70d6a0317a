"""KB-018, KB-019, KB-020: checksum faults tied to one CNI's datapath (Antrea L7, IPIP on mlx5, kube-ovn).

Each reads the interfaces the CNI creates (antrea-gw0 and antrea-l7-tap0, ipip devices, OVS's
genev_sys_6081/vxlan_sys_4789) and the NIC driver or NAT rules around them.
"""

from __future__ import annotations

import re

from badsum.host.model import HostSnapshot, Namespace
from badsum.rules.kernels import KERNEL_FIXES, kernel_has
from badsum.rules.masquerade import unguarded_masquerades
from badsum.rules.model import Finding, FixAction, ObjectRef, Outcome, Rule
from badsum.rules.toolkit import (
    TX_CSUM,
    ethtool_off,
    finding,
    first_feature,
    is_ovs_vport,
    link_ref,
    links,
    skip,
    tx_csum_on,
    unread_features,
    veth_peer,
)

#: Antrea's L7 NetworkPolicy ports: packets go out on tap0 to Suricata (AF_PACKET) and come back on tap1.
ANTREA_L7_TAP = "antrea-l7-tap0"
ANTREA_GW = "antrea-gw0"

# -- KB-018 ------------------------------------------------------------------------------------


def antrea_l7_partial_csum(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    gw = next(((ns, link) for ns, link in links(snap) if link.name == ANTREA_GW), None)
    if gw is None:
        return skip(rule, f"no {ANTREA_GW}: Antrea is not seen")
    ns, gw_link = gw
    tap = ns.link(ANTREA_L7_TAP)
    if tap is None:
        return skip(rule, f"no {ANTREA_L7_TAP}: Antrea's L7 NetworkPolicy engine (Suricata) is not in use")
    senders = [(ns, gw_link)]
    for _, link in links(snap, ("veth",)):
        if link.master == gw_link.master and link.master is not None:  # pod veths are ports of the same OVS datapath
            peer = veth_peer(snap, link)
            if peer is not None:
                senders.append(peer)
    out = []
    for sns, slink in senders:
        obj = link_ref(sns, slink)
        tx, feature = first_feature(slink, TX_CSUM)
        if tx is None:
            out.append(unread_features(rule, obj))
        elif not tx:
            out.append(finding(rule, Outcome.PASS, [obj], f"TX checksum offload is off on {obj}"))
        else:
            facts = {"ns": sns.id, "name": slink.name, "feature": feature, "tap": f"{ns.id}:{ANTREA_L7_TAP}"}
            fix = [ethtool_off(sns, slink, "tx", "also turns off TSO/GSO there" + (
                "; Antrea's disableTXChecksumOffload does this for new pods" if slink.name != ANTREA_GW else ""))]  # fmt: skip
            out.append(finding(rule, Outcome.FAIL, [obj, link_ref(ns, tap)], "packets it sends with an unfinished "
                               "checksum go through Suricata (AF_PACKET) and come back unfinished", facts, fix))  # fmt: skip
    return out


# -- KB-019 ------------------------------------------------------------------------------------


def ipip_tx_csum_mlx5(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    out = []
    for ns, link in links(snap, ("ipip",)):
        obj = link_ref(ns, link)
        nics = [n for n in ns.links if n.driver == "mlx5_core"]
        if not nics:
            out.append(finding(rule, Outcome.PASS, [obj], f"no mlx5_core interface in {ns.id}"))
            continue
        feature = tx_csum_on(rule, obj, link, out)
        if feature is None:
            continue
        if snap.kernel.distro != "el8":
            out.append(finding(rule, Outcome.PASS, [obj], f"{feature} on over mlx5_core, but the reports are RHEL 8 kernels "
                               f"with MLNX_OFED 5.6 and this is {snap.kernel.release}"))  # fmt: skip
            continue
        facts = {"ns": ns.id, "name": link.name, "feature": feature, "nics": ", ".join(f"{ns.id}:{n.name}" for n in nics),
                 "kernel": snap.kernel.release}  # fmt: skip
        fix = [ethtool_off(ns, link, "tx", "the inner TCP/UDP checksums of IPIP traffic are computed in software (some CPU)")]
        out.append(finding(rule, Outcome.WARN, [obj, *(link_ref(ns, n) for n in nics)], "IPIP packets leave with "
                           "checksum offload on a Mellanox (mlx5) uplink; ConnectX-4 with some driver/firmware "
                           "builds sent wrong inner checksums", facts, fix))  # fmt: skip
    return out or skip(rule, "no IPIP device")


# -- KB-020 ------------------------------------------------------------------------------------

#: OVS's tunnel vports and the UDP port each sends to.
_OVS_UDP_TUNNEL = re.compile(r"^(?:genev_sys|vxlan_sys)_(?P<port>\d+)$")
_KUBE_OVN_CHAIN = re.compile(r"^(?::|-A )OVN-POSTROUTING\b")


def _kube_ovn(snap: HostSnapshot, ns: Namespace) -> bool:
    if any(c.name == "kube-ovn" for c in snap.cni):
        return True
    nat = ns.nat.iptables_nat if ns.nat is not None else None
    return any(_KUBE_OVN_CHAIN.match(line) for line in nat or ())


def _output_unmark(ruleset: str | None, port: int) -> bool | None:
    """kube-ovn's filter OUTPUT unmark for the tunnel port (#975/#4639), as nft shows it; None when not read."""
    if ruleset is None:
        return None
    chain = None
    for line in ruleset.splitlines()[:200_000]:
        s = line.strip()
        if s.startswith("chain "):
            chain = s.split()[1]
        elif chain == "OUTPUT" and f"dport {port}" in s and ("mark set" in s or "MARK" in s):
            return True
    return False


def kube_ovn_double_snat(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-004"])
    out = []
    for ns, link in links(snap, ("geneve", "vxlan")):
        m = _OVS_UDP_TUNNEL.match(link.name)
        if m is None or not is_ovs_vport(ns, link) or not _kube_ovn(snap, ns):
            continue
        if has:
            return skip(rule, f"kernel {how}")
        port = int(m["port"])
        obj = link_ref(ns, link)
        feature = tx_csum_on(rule, obj, link, out, " (kube-ovn does this since #3045)")
        if feature is None:
            continue
        nat = ns.nat
        if nat is None or (nat.iptables_nat is None and nat.iptables_legacy_nat is None):
            out.append(finding(rule, Outcome.UNKNOWN, [obj], f"the nat table of namespace {ns.id} could not be read"))
            continue
        masqs = unguarded_masquerades(nat.iptables_nat or ()) + unguarded_masquerades(nat.iptables_legacy_nat or ())
        if not masqs:
            out.append(finding(rule, Outcome.PASS, [obj], "no mark-gated MASQUERADE --random-fully without the unmark rules"))
            continue
        unmark = _output_unmark(nat.nft_ruleset, port)
        if unmark:
            out.append(finding(rule, Outcome.PASS, [obj], f"the filter OUTPUT chain clears the mark of UDP packets to port {port}"))
            continue
        facts = {"ns": ns.id, "name": link.name, "port": port, "feature": feature, "kernel": snap.kernel.release,
                 "kernel_how": how, "mark": f"{masqs[0].mark:#x}",
                 "rules": "; ".join(f"{x.chain} rule {x.position}: {' '.join(x.tokens)}" for x in masqs),
                 "unmark": "absent from the nft ruleset" if unmark is False else
                           "not visible (the filter table is only read through nft, which was not read)"}  # fmt: skip
        objects = [obj] + [ObjectRef(ns.id, f"nat/{x.chain}", "iptables-chain") for x in masqs]
        spec = ["-I", "OUTPUT", "1", "-p", "udp", "-m", "udp", "--dport", str(port), "-j", "MARK", "--set-xmark", "0x0"]
        fix = [FixAction("iptables-rule", ns.id, ns.enter, "filter", "\0".join(spec), "",
                         "kube-ovn's own rule (#975/#4639): only tunnel packets lose their mark; kube-ovn re-adds it on "
                         "upgrade, a restart of the agent may remove a hand-made copy"),
               ethtool_off(ns, link, "tx", "inner checksums of tunnelled packets are computed in software; OVS "
                           "recreates the vport on restart (kube-ovn sets this itself since #3045)")]  # fmt: skip
        outcome = Outcome.FAIL if has is False and unmark is False else Outcome.WARN
        out.append(finding(rule, outcome, objects, "tunnel packets that keep kube-proxy's mark are masqueraded a second "
                           "time and leave with a bogus outer UDP checksum" if outcome is Outcome.FAIL else
                           "the configuration that breaks; the unmark rule or the kernel fix could not be confirmed",
                           facts, fix))  # fmt: skip
    return out or skip(rule, "no kube-ovn node with an Open vSwitch UDP tunnel vport (genev_sys_6081, vxlan_sys_4789)")
