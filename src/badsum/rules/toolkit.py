"""The rule toolkit: what every check is written with, typed against the host snapshot.

A check is a pure function `(HostSnapshot, Rule) -> list[Finding]` (the `Check` type), registered
in checks.CHECKS. It walks the snapshot with `links()` and `veth_peer()`, reads offloads with
`first_feature()` and `changeable_features()`, names what it looked at with `link_ref()`, and says
what it found with `finding()` (or `skip()` when nothing it applies to exists), proposing
`ethtool_off()` fixes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from badsum.host.model import HOST_NS, HostSnapshot, Link, Namespace
from badsum.rules.model import Finding, FixAction, ObjectRef, Outcome, Rule, Severity

#: A check: every outcome of one rule on one snapshot.
Check = Callable[[HostSnapshot, Rule], list[Finding]]

# One offload by the kernel's feature name, then ethtool's own older name for it; first_feature() takes the
# first one a link reports.
TX_CSUM = ("tx-checksum-ip-generic", "tx-checksumming")
RX_CSUM = ("rx-checksum", "rx-checksumming")
UFO = ("tx-udp-fragmentation", "udp-fragmentation-offload")
#: The two UDP-tunnel segmentation offloads (plain and with outer checksum), both kernel names.
UDP_TNL = ("tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation")
TUNNEL_KINDS = ("vxlan", "geneve")
#: Processes known to forward packets read from AF_PACKET sockets without a vnet header (KB-007).
AF_PACKET_FORWARDERS = ("vpp", "weaver", "simple_switch", "simple_switch_grpc")


class _Facts(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return f"<{key}?>"  # a template naming a fact the check did not give shows it, never raises


def finding(rule: Rule, outcome: Outcome, objects: Iterable[ObjectRef] = (), reason: str = "",
            facts: Mapping[str, object] | None = None, fix: Iterable[FixAction] = (),
            severity: Severity | None = None) -> Finding:  # fmt: skip
    """A finding of `rule`; the evidence template is filled from `facts` for fail and warn."""
    facts = dict(facts or {})
    evidence = rule.evidence.format_map(_Facts(facts)) if outcome in (Outcome.FAIL, Outcome.WARN) else ""
    return Finding(rule=rule.id, title=rule.title, severity=rule.severity if severity is None else severity,
                   outcome=outcome, objects=tuple(objects), evidence=evidence, reason=reason,
                   fix=tuple(fix), references=rule.references, facts=facts)  # fmt: skip


def skip(rule: Rule, reason: str) -> list[Finding]:
    """The single outcome of a check with nothing here to apply to."""
    return [finding(rule, Outcome.SKIP, reason=reason)]


def links(snap: HostSnapshot, kinds: Iterable[str] | None = None) -> Iterator[tuple[Namespace, Link]]:
    """Every link of every namespace (only those of `kinds`, when given), with its namespace."""
    wanted = tuple(kinds) if kinds is not None else None
    for ns in snap.namespaces:
        for link in ns.links:
            if wanted is None or link.kind in wanted:
                yield ns, link


def veth_peer(snap: HostSnapshot, link: Link) -> tuple[Namespace, Link] | None:
    """A veth's other end, in its own namespace; None when that namespace or end is not in the snapshot."""
    if link.peer_ns is None:
        return None
    ns = snap.ns(link.peer_ns)
    if ns is None:
        return None
    peer = ns.link_by_index(link.peer_ifindex) if link.peer_ifindex is not None else None
    if peer is None and link.peer_name:
        peer = ns.link(link.peer_name)
    return (ns, peer) if peer is not None else None


def ovs_datapath(ns: Namespace, link: Link) -> Link | None:
    """The Open vSwitch kernel datapath (the `openvswitch` device) the link is a vport of, if it is one."""
    master = ns.link(link.master) if link.master else None
    return master if master is not None and master.kind == "openvswitch" else None


def is_ovs_vport(ns: Namespace, link: Link) -> bool:
    """The link is a port of an Open vSwitch kernel datapath."""
    return ovs_datapath(ns, link) is not None


def first_feature(link: Link, names: Iterable[str]) -> tuple[bool | None, str]:
    """The first of `names` the link reports: (active, name); (None, "") when features are unknown."""
    if link.features is None:
        return None, ""
    for name in names:
        if name in link.features:
            return link.features[name].active, name
    return None, ""


def unread_features(rule: Rule, obj: ObjectRef, *others: ObjectRef) -> Finding:
    """Unknown: `obj`'s ethtool features are not in the snapshot (`others` are named beside it)."""
    return finding(rule, Outcome.UNKNOWN, [obj, *others], f"the ethtool features of {obj} could not be read")


def tx_csum_on(rule: Rule, obj: ObjectRef, link: Link, out: list[Finding], off_why: str = "") -> str | None:
    """The name of `link`'s TX checksum feature when it is on. Otherwise the outcome for `obj` is
    recorded in `out` (pass: off, with `off_why` added; unknown: features unread) and None returned."""
    tx, feature = first_feature(link, TX_CSUM)
    if tx is None:
        out.append(unread_features(rule, obj))
        return None
    if not tx:
        out.append(finding(rule, Outcome.PASS, [obj], f"TX checksum offload is off on {obj}{off_why}"))
        return None
    return feature


def changeable_features(link: Link, names: Iterable[str]) -> list[str]:
    """Those of `names` that are on and not [fixed]: the ones an `ethtool -K` can turn off."""
    feats = link.features or {}
    return [n for n in names if n in feats and feats[n].active and not feats[n].fixed]


def link_ref(ns: Namespace, link: Link, kind: str | None = None) -> ObjectRef:
    """The link as a finding's object (its kind unless `kind` says otherwise)."""
    return ObjectRef(ns.id, link.name, kind or link.kind)


def ethtool_off(ns: Namespace, link: Link, setting: str, cost: str) -> FixAction:
    """The fix `ethtool -K <link> <setting> off`, run in the link's namespace."""
    return FixAction("ethtool-feature", ns.id, ns.enter, link.name, setting, "off", cost)


__all__ = [
    "AF_PACKET_FORWARDERS",
    "HOST_NS",
    "RX_CSUM",
    "TUNNEL_KINDS",
    "TX_CSUM",
    "UDP_TNL",
    "UFO",
    "Check",
    "changeable_features",
    "ethtool_off",
    "finding",
    "first_feature",
    "is_ovs_vport",
    "link_ref",
    "links",
    "ovs_datapath",
    "skip",
    "tx_csum_on",
    "unread_features",
    "veth_peer",
]
