"""Which known issues (rules/catalogue.toml ids) produce which first-bad-hop kind, and what to do.

Data, in one ordered table, like flows/causes.py. A line applies when every `when` condition
holds on the fault: `ip_summed` (the kernel's state at the bad hop), `layer` (the checksum's
protocol), `tunnelled` (the packet was inside VXLAN/Geneve/GRE there), `outer` (the checksum is a
tunnel's outer one), `tunnel` (`vxlan`, `geneve`, `gre`), `direction` (`in`, `out`, `drop`: where
the bad hop is), `zero_before` (a UDP checksum that was 0, none, before the bad hop). The first
line of an id wins. A test checks every id against the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from badsum.follow.hops import BAD, DROPPED, MARKED_VERIFIED_BAD, REWRITTEN, UNFINISHED


@dataclass(frozen=True, slots=True)
class CauseLine:
    kind: str
    id: str
    why: str
    when: dict[str, Any] = field(default_factory=dict)


CAUSES: tuple[CauseLine, ...] = (
    CauseLine(UNFINISHED, "KB-005", "Open vSwitch's userspace datapath (netdev) reads the packet through AF_PACKET without "
              "the vnet header and re-sends it with the pseudo-header sum alone"),
    CauseLine(UNFINISHED, "KB-007", "an AF_PACKET forwarder (Weave sleeve, VPP, BMv2) re-sends the packet without completing "
              "the pending checksum"),
    CauseLine(MARKED_VERIFIED_BAD, "KB-001", "veth (before ce8c839b74e3) promotes never-verified packets to "
              "CHECKSUM_UNNECESSARY when the receiving end has rx-checksumming on", {"ip_summed": ["UNNECESSARY"]}),
    CauseLine(MARKED_VERIFIED_BAD, "KB-008", "a CHECKSUM_COMPLETE sum kept stale across dev_forward_skb (veth) before "
              "f8ffad69c9f8", {"ip_summed": ["COMPLETE"]}),
    # RFC 768: a zero UDP checksum means none, and NAT must leave it so; kernels before ea64d8d6c675
    # (5.7) "updated" it when the (inner) packet was CHECKSUM_PARTIAL.
    CauseLine(REWRITTEN, "KB-004", "a second SNAT of the VXLAN packet (kube-proxy's mark survived encapsulation) "
              "'updated' the outer UDP checksum the tunnel left at 0 (kernels before ea64d8d6c675, 5.7)",
              {"layer": ["udp"], "outer": True, "tunnel": ["vxlan", "geneve"]}),
    CauseLine(REWRITTEN, "KB-004", "NAT 'updated' a zero UDP checksum (none, RFC 768) into a wrong non-zero one, as "
              "kernels before ea64d8d6c675 (5.7) did", {"layer": ["udp"], "zero_before": True}),
    CauseLine(BAD, "KB-004", "a second SNAT of the VXLAN packet 'updated' the outer UDP checksum the tunnel left at 0",
              {"layer": ["udp"], "outer": True}),
    # The NIC writes the outer sum after the transmit hook: a wrong one shows first where it is received.
    CauseLine(BAD, "KB-006", "vmxnet3 UDP-tunnel offload writes wrong checksums on VXLAN/Geneve packets",
              {"tunnelled": True, "direction": ["in"]}),
    CauseLine(DROPPED, "KB-006", "vmxnet3 UDP-tunnel offload writes wrong checksums on VXLAN/Geneve packets",
              {"tunnelled": True}),
)  # fmt: skip


def likely_causes(kind: str, facts: dict[str, Any]) -> list[dict[str, str]]:
    """`[{"id", "why"}]` for a fault of `kind` with `facts` (ip_summed, layer, tunnelled, ...), one per id."""
    out: list[dict[str, str]] = []
    for line in CAUSES:
        if line.kind != kind or any(c["id"] == line.id for c in out):
            continue
        if all((facts.get(k) == want) if isinstance(want, bool) else facts.get(k) in want for k, want in line.when.items()):
            out.append({"id": line.id, "why": line.why})
    return out


def fix_hint(kind: str, facts: dict[str, Any]) -> str:
    """One line: what to do about a fault of `kind`. `facts` names the devices where known."""
    before, after = facts.get("before", "?"), facts.get("after") or "the sender"
    if kind == UNFINISHED:
        sender = facts.get("sender")
        where = f" on {sender} (`ethtool -K {_ifname(sender)} tx off` in its namespace)" if sender else " on the sending veth"
        return (f"turn TX checksum offload off{where}, so the sender completes its checksums before the forwarder "
                f"between {after} and {before} (an OVS netdev bridge can instead read the vnet header: "
                "other_config:userspace-tso-enable=true)")
    if kind == MARKED_VERIFIED_BAD:
        if facts.get("ip_summed") == "COMPLETE":
            return "check the kernel log for 'hw csum failure' and boot a kernel with f8ffad69c9f8 (RHEL 7.3 or later)"
        return (f"turn RX checksum offload off on {before} (`ethtool -K {_ifname(before)} rx off` in its namespace) so "
                "the stack verifies checksums itself, and boot a kernel with ce8c839b74e3 (4.4+)")
    if kind == REWRITTEN:
        if facts.get("layer") == "udp":
            return ("stop the second SNAT of the tunnel packets (kube-proxy's unmark rules, kubernetes#92035) or turn "
                    "tx-checksum-ip-generic off on the VXLAN device; upgrade the kernel (ea64d8d6c675, 5.7+)")
        return f"the NAT between {after} and {before} rewrites the header without the checksum: check its rules and helpers"
    if kind == BAD:
        if facts.get("outer") and facts.get("layer") == "udp":
            return (f"the outer UDP checksum went wrong between {after} and {before}: look for a second SNAT of the tunnel "
                    "packets (kube-proxy's unmark rules, kubernetes#92035) or turn tx-checksum-ip-generic off on the VXLAN "
                    "device; on vSphere turn tx-udp_tnl-segmentation and tx-udp_tnl-csum-segmentation off on the vmxnet3 NIC")
        hint = f"the bytes changed between {after} and {before} without their checksum: check what forwards between them"
        if facts.get("tunnelled"):
            hint += " (on vSphere: ethtool -K <vmxnet3 nic> tx-udp_tnl-segmentation off tx-udp_tnl-csum-segmentation off)"
        return hint
    if kind == DROPPED:
        return (f"the kernel dropped the packets at {before} for a bad checksum that no hop's bytes showed: capture whole "
                "packets there (`badsum capture`) or raise the capture bound")
    return ""


def _ifname(label: object) -> str:
    text = str(label or "")
    return text.rpartition(":")[2] or "<dev>"
