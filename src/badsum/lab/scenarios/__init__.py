"""The scenarios, in the order `badsum lab list` shows them. Each module has SCENARIO."""

from __future__ import annotations

from badsum.lab.scenarios import (
    bad_wire,
    docker_ovs,
    offload_matrix,
    ovs_userspace_veth,
    veth_marks_verified,
    vxlan_double_snat,
    vxlan_mtu_df,
)
from badsum.lab.scenarios.base import Scenario

SCENARIOS: tuple[Scenario, ...] = (
    ovs_userspace_veth.SCENARIO,
    docker_ovs.SCENARIO,
    bad_wire.SCENARIO,
    veth_marks_verified.SCENARIO,
    vxlan_mtu_df.SCENARIO,
    vxlan_double_snat.SCENARIO,
    offload_matrix.SCENARIO,
)


def find(name: str) -> Scenario | None:
    return next((s for s in SCENARIOS if s.name == name), None)
