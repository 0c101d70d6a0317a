"""Dispatch tables a user can extend: which UDP ports carry which tunnel."""

from __future__ import annotations

from dataclasses import dataclass, field

# The kinds and the default ports are stated once, in wire/protofacts.py (the C kernels index
# their port table with the same values).
from badsum.wire.protofacts import NEXT_BY_UDP_PORT, UDPTunnel

__all__ = ["NEXT_BY_UDP_PORT", "PortTable", "UDPTunnel"]


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
