"""Dispatch tables a user can extend: which UDP ports carry which tunnel."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class UDPTunnel(IntEnum):
    """Tunnel kinds carried over UDP. Values are shared with the C scanner's port table."""

    NONE = 0
    VXLAN = 1
    GENEVE = 2
    GRE_IN_UDP = 3
    MPLS_IN_UDP = 4


#: Defaults: VXLAN on the IANA port and on Linux's/flannel's 8472; Geneve; GRE-in-UDP (RFC 8086).
NEXT_BY_UDP_PORT: dict[int, UDPTunnel] = {
    4789: UDPTunnel.VXLAN,
    8472: UDPTunnel.VXLAN,
    6081: UDPTunnel.GENEVE,
    4754: UDPTunnel.GRE_IN_UDP,
    6635: UDPTunnel.MPLS_IN_UDP,
}


@dataclass(frozen=True, slots=True)
class PortTable:
    """UDP destination port -> tunnel kind, with the user's additions."""

    by_port: dict[int, UDPTunnel] = field(default_factory=lambda: dict(NEXT_BY_UDP_PORT))

    @classmethod
    def with_vxlan_ports(cls, extra: tuple[int, ...] | list[int] = ()) -> "PortTable":
        table = dict(NEXT_BY_UDP_PORT)
        for p in extra:
            table[int(p)] = UDPTunnel.VXLAN
        return cls(table)

    def kind(self, dport: int) -> UDPTunnel:
        return self.by_port.get(dport, UDPTunnel.NONE)
