"""One-line reasons for verdicts, and what each status means for an operator.

Both paths build `Verdict`s from the same fields, so the reason text cannot drift between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from badsum.checksum.verdict import Layer, Status, VerdictFlag

if TYPE_CHECKING:
    from badsum.checksum.verdict import Verdict

#: What each status means and what to do, for the text report's legend.
MEANING: dict[Status, str] = {
    Status.OK: "the checksum verifies",
    Status.BAD: (
        "does not verify and is no offload pattern: corruption or a rewrite that did not fix the sum; "
        "trace the packet across capture points to find the first bad hop"
    ),
    Status.PARTIAL: (
        "the field holds the pseudo-header sum alone (transmit offload pending). Normal on the sending "
        "host (container eth0, host veth, bridge) and on a veth peer, which receives the same buffer "
        "with the sum still pending. A fault once the packet is re-created or leaves on a wire "
        "unfinished: the OVS userspace datapath and AF_PACKET relays forward it as is (KB-005, KB-007) "
        "and the receiver drops it (TcpInCsumErrors); fix: TX checksum offload off on the sender's veth"
    ),
    Status.ZERO_ALLOWED: "UDP without a checksum (allowed over IPv4, and over IPv6 for tunnels per RFC 6935)",
    Status.ZERO_INVALID: "UDP over IPv6 without a checksum: receivers drop it (RFC 8200 8.1)",
    Status.UNVERIFIABLE: "not judged: cut by the snap length, or a fragment whose datagram never completed",
    Status.NAT_STALE: "right for the address/port tuple before NAT: NAT rewrote the header and not the sum",
}


_NAMES = {layer: layer.label.upper() for layer in Layer}
_KERNEL, _INCOMPLETE, _TUNNEL_ZERO, _LSO = (int(VerdictFlag.KERNEL), int(VerdictFlag.INCOMPLETE_FRAGMENT),
                                            int(VerdictFlag.TUNNEL_ZERO), int(VerdictFlag.LSO_LEN0))  # fmt: skip
_GSO, _REASSEMBLED = int(VerdictFlag.GSO), int(VerdictFlag.REASSEMBLED)


def _hex(layer: Layer, v: int) -> str:
    return f"0x{v:08x}" if layer == Layer.SCTP else f"0x{v:04x}"


def reason_for(v: "Verdict") -> str:
    """A one-line reason for one verdict."""
    # Plain ints: IntFlag arithmetic costs more than the rest of this function (--jsonl hot path).
    f, name = int(v.flags), _NAMES[v.layer]
    kernel = " (kernel status TP_STATUS_CSUM_VALID)" if f & _KERNEL else ""
    if v.status == Status.OK:
        return f"{name} checksum verifies{kernel}"
    if v.status == Status.UNVERIFIABLE:
        if f & _INCOMPLETE:
            return f"{name} checksum not judged: the fragmented datagram never completed"
        return f"{name} checksum not judged: the covered bytes were cut by the snap length"
    if v.status == Status.ZERO_ALLOWED:
        if f & _TUNNEL_ZERO:
            return "UDP checksum 0 over IPv6 to a tunnel port: allowed by RFC 6935/6936"
        return "UDP checksum 0 over IPv4: no checksum (RFC 768)"
    if v.status == Status.ZERO_INVALID:
        return "UDP checksum 0 over IPv6 and not a tunnel port: invalid (RFC 8200 8.1), receivers drop it"
    if v.status == Status.PARTIAL:
        if v.layer == Layer.IPV4:
            if f & _LSO:
                return "IPv4 header checksum 0 and total length 0: TSO/LSO pending, the NIC fills both in"
            return "IPv4 header checksum 0 on an offloaded packet: the NIC fills it in"
        who = "kernel says TP_STATUS_CSUMNOTREADY; " if f & _KERNEL else ""
        if f & _LSO:
            what = "pseudo-header sum with length 0 (Windows LSO, IPv4 total length 0)"
        else:
            what = f"pseudo-header sum alone (length {v.extra}), not the full checksum {_hex(v.layer, v.computed)}"
        gso = "; GSO/TSO super-frame, segmented later" if f & _GSO else ""
        return f"{who}{name} field holds the {what}: transmit offload pending{gso}"
    if v.status == Status.NAT_STALE:
        return f"{name} checksum is right for the tuple before NAT: the rewrite did not update it"
    re = " after IP reassembly" if f & _REASSEMBLED else ""
    return f"{name} checksum {_hex(v.layer, v.stored)} should be {_hex(v.layer, v.computed)}{re}"
