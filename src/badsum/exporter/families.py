"""Metric families from one collection's facts. No I/O, no clock: every input is passed in.

Names and labels are a contract shared with the alerts and the dashboard (deploy/); see the
table in docs/cli.md (`badsum exporter`). Series are bounded: at most `max_namespaces`
namespaces get per-namespace series (the host first, then by id) and at most `max_series`
samples go into one family; what is left out is counted as a `limit` collection error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from badsum.host.cri import Owner
from badsum.host.model import HOST_NS, HostSnapshot, Link, Namespace

#: nstat counter -> `protocol` label of badsum_checksum_errors_total.
PROTOCOLS = {
    "TcpInCsumErrors": "tcp",
    "UdpInCsumErrors": "udp",
    "IcmpInCsumErrors": "icmp",
    "IpExtInCsumErrors": "ip",
    "Udp6InCsumErrors": "udp6",
    "Icmp6InCsumErrors": "icmp6",
    "UdpLiteInCsumErrors": "udplite",
    "UdpLite6InCsumErrors": "udplite6",
}
#: The checksum and segmentation offloads whose state decides KB-001/004/005/006/009.
FEATURES = (
    "tx-checksum-ip-generic",
    "tx-checksum-ipv4",
    "tx-checksum-ipv6",
    "rx-checksum",
    "tx-tcp-segmentation",
    "tx-generic-segmentation",
    "rx-gro",
    "tx-udp_tnl-segmentation",
    "tx-udp_tnl-csum-segmentation",
)
TUNNEL_KINDS = frozenset({"vxlan", "geneve", "ipip", "ip6tnl", "sit", "gre", "gretap", "ip6gre", "ip6gretap",
                          "erspan", "ip6erspan", "bareudp", "wireguard"})  # fmt: skip
BRIDGE_KINDS = frozenset({"bridge", "openvswitch"})
CONTAINER_KINDS = frozenset({"veth"})
#: Every stage a collection error is counted under (all exported from the start, at 0).
STAGES = ("snapshot", "counters", "drops", "rules", "canary", "cri", "limit")
NS_LABELS = ["netns", "netns_inode", "pod", "pod_namespace", "container", "protocol"]
IF_LABELS = ["netns", "pod", "pod_namespace", "interface", "kind"]
NO_OWNER = Owner()


@dataclass(frozen=True, slots=True)
class CanaryState:
    """The last canary result: status per datapath (PASS, FAIL, ...), and when it was produced."""

    statuses: Mapping[str, str]
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class Inputs:
    """What one collection gathered."""

    snapshot: HostSnapshot | None
    findings: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(rule, fail|warn) -> how many findings (0 for those seen before and cleared)."""
    drops: Mapping[tuple[str, str, str, str, str], int] = field(default_factory=dict)
    """(reason, protocol, location, netns, device) -> drops since the exporter started."""
    owners: Mapping[str, Owner] = field(default_factory=dict)
    """Namespace id -> pod/container names."""
    canary: CanaryState | None = None
    max_namespaces: int = 2000
    max_series: int = 50_000


@dataclass(frozen=True, slots=True)
class Built:
    families: tuple[Metric, ...]
    limited: tuple[str, ...]
    """What the bounds left out, one line each (counted as `limit` collection errors)."""


def kept_namespaces(snapshot: HostSnapshot, max_namespaces: int) -> tuple[list[Namespace], int]:
    """The namespaces that get series (the host's first, then by id), and how many were left out."""
    ordered = sorted(snapshot.namespaces, key=lambda ns: (ns.id != HOST_NS, ns.id))
    return ordered[:max_namespaces], max(0, len(ordered) - max_namespaces)


def counter_values(ns: Namespace) -> dict[str, int]:
    """The latest sample of the namespace's checksum counters (absolute, as the kernel keeps them)."""
    if ns.counters is None:
        return {}
    return dict(ns.counters.second or ns.counters.first)


def roles(ns: Namespace) -> dict[str, str]:
    """interface -> overlay | underlay | container | bridge, for the links whose MTU matters."""
    out: dict[str, str] = {}
    tunnels = [lk for lk in ns.links if lk.kind in TUNNEL_KINDS]
    for lk in ns.links:
        if lk.kind in TUNNEL_KINDS:
            out[lk.name] = "overlay"
        elif lk.kind in BRIDGE_KINDS:
            out[lk.name] = "bridge"
        elif lk.kind in CONTAINER_KINDS:
            out[lk.name] = "container"
    lowers = {t.vxlan.lower for t in tunnels if t.vxlan is not None and t.vxlan.lower}
    if tunnels and not lowers:
        # Not bound to a device: the underlay is whatever carries the default route.
        lowers = {r.dev for r in ns.routes if r.dst in ("default", "0.0.0.0/0", "::/0") and r.dev}
    for name in lowers:
        if name and ns.link(name) is not None and name not in out:
            out[name] = "underlay"
    return out


def _owner(owners: Mapping[str, Owner], ns_id: str) -> Owner:
    return owners.get(ns_id, NO_OWNER)


def build(inputs: Inputs) -> Built:
    """Every family but the collector's own bookkeeping (errors, duration, timestamps, build info)."""
    limited: list[str] = []
    csum = CounterMetricFamily("badsum_checksum_errors", "The kernel's InCsumErrors counter in a network namespace "
                               "(absolute, as read with nstat)", labels=NS_LABELS)  # fmt: skip
    offload = GaugeMetricFamily("badsum_interface_offload_enabled", "Checksum/segmentation offload feature of a "
                                "container-facing, bridge or tunnel interface (1 on, 0 off)",
                                labels=[*IF_LABELS, "feature"])  # fmt: skip
    mtu = GaugeMetricFamily("badsum_interface_mtu_bytes", "MTU of overlay, underlay, container and bridge interfaces",
                            labels=[*IF_LABELS, "role"])  # fmt: skip
    snap = inputs.snapshot
    if snap is not None:
        kept, left_out = kept_namespaces(snap, inputs.max_namespaces)
        if left_out:
            limited.append(f"{left_out} namespaces over --max-namespaces {inputs.max_namespaces} have no series")
        for ns in kept:
            o = _owner(inputs.owners, ns.id)
            for name, value in sorted(counter_values(ns).items()):
                if name in PROTOCOLS:
                    csum.add_metric([ns.id, str(ns.inode), o.pod, o.pod_namespace, o.container, PROTOCOLS[name]], value)
            by_role = roles(ns)
            for lk in ns.links:
                if lk.name not in by_role:
                    continue
                base = [ns.id, o.pod, o.pod_namespace, lk.name, lk.kind]
                mtu.add_metric([*base, by_role[lk.name]], lk.mtu)
                if by_role[lk.name] != "underlay":
                    for feature in FEATURES:
                        on = _feature(lk, feature)
                        if on is not None:
                            offload.add_metric([*base, feature], 1.0 if on else 0.0)
    findings = GaugeMetricFamily("badsum_findings", "Doctor findings per rule and outcome in the latest collection",
                                 labels=["rule", "severity"])  # fmt: skip
    for (rule, severity), n in sorted(inputs.findings.items()):
        findings.add_metric([rule, severity], n)
    # `device` is bounded as every label here: keys are capped at max_series (collector) and a
    # namespace's drops go with it.
    drops = CounterMetricFamily("badsum_drops", "Kernel packet drops (kfree_skb) since the exporter started, "
                                "by drop reason", labels=["reason", "protocol", "location", "netns", "device"])  # fmt: skip
    for (reason, proto, location, netns, device), n in sorted(inputs.drops.items()):
        drops.add_metric([reason, proto, location, netns, device], n)
    families: list[Metric] = [csum, drops, offload, mtu, findings]
    if inputs.canary is not None:
        ok = GaugeMetricFamily("badsum_canary_ok", "Last canary result per datapath (1 passed, 0 failed)", labels=["datapath"])
        for datapath, status in sorted(inputs.canary.statuses.items()):
            if status in ("PASS", "FAIL"):
                ok.add_metric([datapath], 1.0 if status == "PASS" else 0.0)
        families.append(ok)
        if inputs.canary.finished_at is not None:
            families.append(GaugeMetricFamily("badsum_canary_last_run_timestamp_seconds",
                                              "When the last canary result was produced (Unix time)",
                                              value=inputs.canary.finished_at))  # fmt: skip
    families.append(GaugeMetricFamily("badsum_namespaces", "Network namespaces seen in the last collection",
                                      value=len(snap.namespaces) if snap is not None else 0))  # fmt: skip
    for fam in families:
        if len(fam.samples) > inputs.max_series:
            limited.append(f"{fam.name}: {len(fam.samples)} series over --max-series {inputs.max_series}")
            del fam.samples[inputs.max_series :]
    return Built(tuple(families), tuple(limited))


#: ethtool -k lists these kernel features under their legacy names only.
ETHTOOL_NAMES = {"rx-checksum": "rx-checksumming", "tx-generic-segmentation": "generic-segmentation-offload",
                 "rx-gro": "generic-receive-offload"}  # fmt: skip


def _feature(link: Link, name: str) -> bool | None:
    if link.features is None:
        return None
    for key in (name, ETHTOOL_NAMES.get(name)):
        if key is not None and key in link.features:
            return link.features[key].active
    return None


def bookkeeping(errors: Mapping[str, int], duration_s: float | None, finished_at: float | None, version: str) -> list[Metric]:
    """The collector's own families."""
    err = CounterMetricFamily("badsum_collection_errors", "Collection failures by stage", labels=["stage"])
    for stage in STAGES:
        err.add_metric([stage], errors.get(stage, 0))
    out: list[Metric] = [err]
    if duration_s is not None:
        out.append(GaugeMetricFamily("badsum_collection_duration_seconds", "How long the last collection took",
                                     value=duration_s))  # fmt: skip
    if finished_at is not None:
        out.append(GaugeMetricFamily("badsum_last_collection_timestamp_seconds",
                                     "When the last collection finished (Unix time)", value=finished_at))  # fmt: skip
    info = GaugeMetricFamily("badsum_build_info", "badsum's version", labels=["version"])
    info.add_metric([version], 1)
    out.append(info)
    return out


def finding_counts(problems: Iterable[tuple[str, str]], seen: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(rule, outcome) counts of this collection; pairs seen before and gone now stay, at 0. `seen` is updated."""
    counts: dict[tuple[str, str], int] = {}
    for key in problems:
        counts[key] = counts.get(key, 0) + 1
    seen.update(counts)
    return {key: counts.get(key, 0) for key in seen}


__all__ = ["STAGES", "Built", "CanaryState", "Inputs", "bookkeeping", "build", "finding_counts", "kept_namespaces", "roles"]
