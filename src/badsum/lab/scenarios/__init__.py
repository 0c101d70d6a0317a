"""The scenarios, in the order `badsum lab list` shows them. Each module has SCENARIO."""

from __future__ import annotations

from badsum.lab.scenarios import ovs_userspace_veth
from badsum.lab.scenarios.base import Scenario

SCENARIOS: tuple[Scenario, ...] = (ovs_userspace_veth.SCENARIO,)


def find(name: str) -> Scenario | None:
    return next((s for s in SCENARIOS if s.name == name), None)
