"""What the checks share: the feature names they look for and small helpers over the snapshot."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from badsum.rules.model import Finding, FixAction, ObjectRef, Outcome, Rule, Severity

Snap = Any
HOST_NS = "host"  # badsum.host.model.HOST_NS

TX_CSUM = ("tx-checksum-ip-generic", "tx-checksumming")
RX_CSUM = ("rx-checksum", "rx-checksumming")
UFO = ("tx-udp-fragmentation", "udp-fragmentation-offload")
UDP_TNL = ("tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation")
TUNNEL_KINDS = ("vxlan", "geneve")
#: Processes known to forward packets read from AF_PACKET sockets without a vnet header (KB-007).
AF_PACKET_FORWARDERS = ("vpp", "weaver", "simple_switch", "simple_switch_grpc")




class _Facts(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return f"<{key}?>"


def finding(rule: Rule, outcome: Outcome, objects: Iterable[ObjectRef] = (), reason: str = "",
            facts: Mapping[str, object] | None = None, fix: Iterable[FixAction] = (),
            severity: Severity | None = None) -> Finding:  # fmt: skip
    """A finding of `rule`; the evidence template is filled from `facts` for fail and warn."""
    facts = dict(facts or {})
    evidence = rule.evidence.format_map(_Facts(facts)) if outcome in (Outcome.FAIL, Outcome.WARN) else ""
    return Finding(rule=rule.id, title=rule.title, severity=rule.severity if severity is None else severity,
                   outcome=outcome, objects=tuple(objects), evidence=evidence, reason=reason,
                   fix=tuple(fix), references=rule.references, facts=facts)  # fmt: skip


def _skip(rule: Rule, reason: str) -> list[Finding]:
    return [finding(rule, Outcome.SKIP, reason=reason)]


def _feature(link: Snap, names: Iterable[str]) -> tuple[bool | None, str]:
    """The first of `names` the link reports: (active, name); (None, "") when features are unknown."""
    if link.features is None:
        return None, ""
    for name in names:
        if name in link.features:
            return bool(link.features[name].active), name
    return None, ""


def _changeable(link: Snap, names: Iterable[str]) -> list[str]:
    """Those of `names` that are on and not [fixed]."""
    feats = link.features or {}
    return [n for n in names if n in feats and feats[n].active and not feats[n].fixed]


def _ethtool(ns: Snap, link: Snap, setting: str, cost: str) -> FixAction:
    return FixAction("ethtool-feature", ns.id, ns.enter, link.name, setting, "off", cost)


def _ref(ns: Snap, link: Snap, kind: str | None = None) -> ObjectRef:
    return ObjectRef(ns.id, link.name, kind or link.kind)


def _links(snap: Snap, kinds: Iterable[str] | None = None) -> Iterator[tuple[Snap, Snap]]:
    kinds = tuple(kinds) if kinds is not None else None
    for ns in snap.namespaces:
        for link in ns.links:
            if kinds is None or link.kind in kinds:
                yield ns, link


def _peer(snap: Snap, link: Snap) -> tuple[Snap, Snap] | None:
    """A veth's other end, in its own namespace."""
    if link.peer_ns is None:
        return None
    ns = snap.ns(link.peer_ns)
    if ns is None:
        return None
    peer = ns.link_by_index(link.peer_ifindex) if link.peer_ifindex is not None else None
    if peer is None and link.peer_name:
        peer = ns.link(link.peer_name)
    return (ns, peer) if peer is not None else None


def _is_ovs_vport(ns: Snap, link: Snap) -> bool:
    master = ns.link(link.master) if link.master else None
    return master is not None and master.kind == "openvswitch"
