"""The cls_bpf programs of the labs' bug emulations (lab/kb001.py, lab/kb004.py): attached on a lab
device's clsact egress hook with iproute2's tc (which loads the CO-RE object with libbpf itself),
listed, detached, and their per-CPU counters read by the kernel's own program id.

Only devices of a lab namespace are ever touched (callers pass the lab's names); deleting the
clsact qdisc removes its filters, and with the last reference the program.
"""

from __future__ import annotations

import json
from pathlib import Path

from badsum.kernel import libbpf
from badsum.lab.lab import Lab
from badsum.lab.runner import CommandError


def attach_egress(lab: Lab, ns: str, dev: str, obj: Path, program: str) -> int | None:
    """Attach `obj`'s `tc` section to `dev` in lab namespace `ns` (direct action); the kernel's id
    of the program. Raises CommandError when tc (or the verifier) refuses, leaving no qdisc."""
    lab.exec(ns, ["tc", "qdisc", "add", "dev", dev, "clsact"])
    try:
        lab.exec(ns, ["tc", "filter", "add", "dev", dev, "egress", "bpf", "direct-action", "obj", str(obj), "sec", "tc"],
                 timeout=60)  # fmt: skip
    except CommandError:
        detach(lab, ns, dev)
        raise
    return next((f["options"]["prog"]["id"] for f in filters(lab, ns, dev)
                 if f.get("options", {}).get("prog", {}).get("name") == program), None)  # fmt: skip


def filters(lab: Lab, ns: str, dev: str) -> list[dict]:
    """`tc -j filter show dev DEV egress` in the lab namespace."""
    out = lab.exec(ns, ["tc", "-j", "filter", "show", "dev", dev, "egress"], check=False).stdout
    try:
        return json.loads(out or "[]")
    except ValueError:
        return []


def detach(lab: Lab, ns: str, dev: str) -> None:
    lab.exec(ns, ["tc", "qdisc", "del", "dev", dev, "clsact"], check=False)


def counters(program_id: int | None, map_name: str, names: tuple[str, ...]) -> dict[str, int] | None:
    """The program's per-CPU counters by name, summed over CPUs (None: no program, or no libbpf)."""
    if program_id is None:
        return None
    try:
        values = libbpf.percpu_counters(program_id, map_name, len(names))
    except libbpf.BpfError:
        return None
    return None if values is None else dict(zip(names, values))
