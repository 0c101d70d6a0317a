"""badsum's lab emulations of fixed kernel bugs, as doctor finds them on a host.

A lab on a fixed kernel puts an old bug back where the kernel acted, with a tc (cls_bpf) program
(lab/kb001.py, lab/kb004.py). While it is attached it is a real object on the host and the kernel
behaves like an unfixed one for that device, so a rule that would only warn on a fixed kernel
fails there, and says it is the emulation. Programs are told by their kernel names.
"""

from __future__ import annotations

from dataclasses import dataclass

from badsum.host.model import HostSnapshot, Link, Namespace, TcBpf
from badsum.rules.model import Finding, ObjectRef, Outcome, Rule
from badsum.rules.toolkit import RX_CSUM, ethtool_off, finding, first_feature, link_ref, unread_features, veth_peer


@dataclass(frozen=True, slots=True)
class EmulationKind:
    kb: str
    prefix: str
    """The kernel name of the lab's program starts with this (`kb004_nat_csum`)."""
    direction: str
    """The tc hook the lab attaches it on."""
    what: str
    """What it puts back, as a phrase (`the pre-5.7 NAT update`)."""


#: In catalogue order; lab/kb001.py and lab/kb004.py name their programs so.
EMULATIONS: dict[str, EmulationKind] = {
    "KB-001": EmulationKind("KB-001", "kb001_", "egress", "veth's pre-4.4 CHECKSUM_UNNECESSARY marking"),
    "KB-004": EmulationKind("KB-004", "kb004_", "egress", "the pre-5.7 NAT update of a zero UDP checksum"),
}


@dataclass(frozen=True, slots=True)
class Emulated:
    """One lab emulation program found attached."""

    kb: str
    ns: str
    device: str
    program: TcBpf
    what: str

    @property
    def where(self) -> str:
        return (f"{self.ns}:{self.device} (tc {self.program.direction}, program {self.program.name} "
                f"id {self.program.id if self.program.id is not None else 'unknown'})")  # fmt: skip

    def as_fact(self) -> dict[str, object]:
        return {"kb": self.kb, "emulated": True, "namespace": self.ns, "device": self.device,
                "hook": f"tc {self.program.direction}", "program": self.program.name, "id": self.program.id}  # fmt: skip


def emulations(ns: Namespace, kb: str, devices: tuple[str, ...] | None = None) -> list[Emulated]:
    """The lab emulation programs of `kb` attached in `ns` (on `devices` only, when given), in link order."""
    kind = EMULATIONS[kb]
    out = []
    for link in ns.links:
        if devices is not None and link.name not in devices:
            continue
        for p in programs(link):
            if p.direction == kind.direction and p.name.startswith(kind.prefix):
                out.append(Emulated(kb, ns.id, link.name, p, kind.what))
    return out


def programs(link: Link) -> tuple[TcBpf, ...]:
    return link.tc_bpf or ()


def kb001_emulated(snap: HostSnapshot, rule: Rule, how: str) -> list[Finding]:
    """On a fixed kernel: badsum's lab emulation (a tc egress program on a veth) marks what leaves
    that veth CHECKSUM_UNNECESSARY when its peer has rx-checksumming on, as veth_xmit() did."""
    out = []
    for ns in snap.namespaces:
        for e in emulations(ns, "KB-001"):
            link = next(x for x in ns.links if x.name == e.device)
            peer = veth_peer(snap, link)
            if peer is None:
                out.append(finding(rule, Outcome.UNKNOWN, [link_ref(ns, link)],
                                   f"badsum's lab emulation is attached at {e.where}, but its veth peer was not found"))  # fmt: skip
                continue
            pns, plink = peer
            rx, name = first_feature(plink, RX_CSUM)
            obj = link_ref(pns, plink)
            objects = [obj, link_ref(ns, link), ObjectRef(ns.id, f"{e.device}/tc-{e.program.direction}/{e.program.name}", "tc-bpf")]
            if rx is None:
                out.append(unread_features(rule, obj))
                continue
            if not rx:
                out.append(finding(rule, Outcome.PASS, objects, f"badsum's lab emulation is attached at {e.where}, but "
                                   f"{name} is off on {obj}: it leaves the packets alone, as veth_xmit() did"))  # fmt: skip
                continue
            facts = {"ns": pns.id, "name": plink.name, "peer": f"{ns.id}:{link.name}",
                     "peer_master": f" on bridge {link.master}" if link.master else "", "kernel": snap.kernel.release,
                     "kernel_how": f"{how}, but badsum's lab emulation of {e.what} is attached at {e.where}: EMULATED, "
                                   "the kernel acts as before 4.4 there",
                     "path": f"what leaves {ns.id}:{link.name} is marked verified on its way to {obj}",
                     "emulated": e.as_fact()}  # fmt: skip
            fix = [ethtool_off(pns, plink, "rx", "the container's stack verifies TCP/UDP checksums in software (a little CPU)")]
            out.append(finding(rule, Outcome.FAIL, objects, f"EMULATED: kernel {snap.kernel.release} carries the fix, but "
                               f"badsum's lab emulation of {e.what} is attached at {e.where}: a corrupt packet reaching {obj} is "
                               "delivered as verified", facts, fix))  # fmt: skip
    return out
