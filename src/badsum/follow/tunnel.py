"""Tunnel packets as follow sees them: the outer header, and why a wrong outer UDP checksum that
first shows where the encapsulation is new was rewritten on the way (KB-004).

No tracepoint sits between a tunnel device's transmit and the uplink's: the encapsulation, the
netfilter hooks and a NAT's checksum "update" happen unseen, and the outer header first shows at
the uplink. What is known from the kernel is what a tunnel device writes there.
"""

from __future__ import annotations

from badsum.checksum.verdict import Verdict
from badsum.follow.journey import Sighting
from badsum.trace.keys import stack
from badsum.wire import udp
from badsum.wire.frame import Frame, IPPacket
from badsum.wire.tunnels import GeneveHeader, VXLANHeader

#: kube-proxy's default masquerade mark (--iptables-masquerade-bit 14): KUBE-MARK-MASQ sets it,
#: KUBE-POSTROUTING masquerades what carries it (KB-004 when it survives encapsulation).
KUBE_MASQ_MARK = 0x4000
#: What a computed UDP checksum of 0 is sent as (RFC 768), and what udp_manip_pkt() left.
CSUM_MANGLED_0 = 0xFFFF
UDP_TUNNELS = ("vxlan", "geneve")


def tunnel_of(frame: Frame) -> str | None:
    """The outermost tunnel the frame's bytes carry (`vxlan`, `geneve`, `gre`), as the port table decoded it."""
    if not frame.tunnels:
        return None
    t = frame.tunnels[0]
    return "vxlan" if isinstance(t, VXLANHeader) else "geneve" if isinstance(t, GeneveHeader) else "gre"


def outer_udp(frame: Frame) -> tuple[IPPacket, udp.UDPHeader] | None:
    """The outermost packet and its UDP header when the frame is a UDP tunnel packet (VXLAN, Geneve)."""
    pkts = stack(frame)
    if len(pkts) < 2 or not isinstance(pkts[0].l4, udp.UDPHeader):
        return None
    return pkts[0], pkts[0].l4


def outer_rewrite_why(s: Sighting, v: Verdict, encapsulated_after: str, zero_seen: int = 0) -> str:
    """Why a wrong, non-zero outer UDP checksum where the encapsulation is new was rewritten on the way.

    A VXLAN/Geneve device writes the outer UDP checksum as 0 (none: RFC 768; flannel's and the
    kernel's default, RFC 7348 5) or complete (LCO), never a wrong one; between the tunnel's transmit
    and the uplink's only the stack's own hooks (POSTROUTING's NAT) touch it. Kernels before
    ea64d8d6c675 (5.7) "updated" a zero field there for a CHECKSUM_PARTIAL packet. `zero_seen`:
    other packets of the same tunnel seen leaving this device with 0 (the device sends none)."""
    ev = s.event
    tunnel = {"vxlan": "VXLAN", "geneve": "Geneve"}.get(tunnel_of(s.frame) or "", "tunnel")
    if zero_seen:
        at_encap = (f"outer UDP checksum 0 at encapsulation ({zero_seen} other packet{'s' if zero_seen != 1 else ''} of "
                    f"this {tunnel} tunnel left {s.label} with 0: the device sends none)")  # fmt: skip
    else:
        at_encap = (f"outer UDP checksum 0 (none) or complete at encapsulation (a {tunnel} device writes no other "
                    "value)")  # fmt: skip
    parts = [(f"{at_encap}, 0x{v.stored:04x} on {s.label} (bad, should be 0x{v.computed:04x}, or 0 for none): the "
              f"{tunnel} header was added between {encapsulated_after} and {s.label} and the field rewritten after "
              "encapsulation, where POSTROUTING's NAT runs")]
    if ev.mark & KUBE_MASQ_MARK:
        parts.append(f"skb->mark 0x{ev.mark:x} (kube-proxy's masquerade bit 0x{KUBE_MASQ_MARK:x}) survived encapsulation, "
                     "so KUBE-POSTROUTING's MASQUERADE matched the outer packet too: source port rewritten (SNAT)")
    elif ev.mark:
        parts.append(f"skb->mark 0x{ev.mark:x} on the outer packet (a mark that survived encapsulation can select it for NAT)")
    if v.stored == CSUM_MANGLED_0:
        # nf_nat_ipv4_csum_update on a CHECKSUM_PARTIAL skb: ~csum_fold(~addr + addr) = 0xffff, the port step a no-op.
        parts.append("0xffff is what NAT before ea64d8d6c675 (5.7) wrote into a zero outer checksum of a "
                     "CHECKSUM_PARTIAL packet when the address stayed and only the port changed")
    return "; ".join(parts)
