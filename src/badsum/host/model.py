"""The host snapshot: every fact the rules read, collected once, frozen, JSON round-trippable.

`badsum doctor --save snap.json` writes it and `--from snap.json` reads it back, so a finding made
on a production node can be reproduced anywhere, without root. A fact that could not be read is
None with the reason in `errors`; it is never guessed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, get_args, get_origin, get_type_hints

SCHEMA_VERSION = 1
HOST_NS = "host"  # the id of the root (initial) network namespace


@dataclass(frozen=True, slots=True)
class Feature:
    """One ethtool feature (`ethtool --json -k`)."""

    active: bool
    """Whether it is on now."""
    fixed: bool
    """The driver does not allow changing it ("[fixed]")."""
    requested: bool | None = None
    """What was last asked for, if ethtool reports it."""


@dataclass(frozen=True, slots=True)
class VxlanInfo:
    """VXLAN parameters (`ip -d -j link`)."""

    vni: int
    port: int
    local: str | None
    remote: str | None
    lower: str | None
    """The lower (underlay) device name, if bound to one."""
    udpcsum: bool | None
    df: str | None
    """`set`, `unset` or `inherit` (None when the kernel does not report it)."""


@dataclass(frozen=True, slots=True)
class GeneveInfo:
    """Geneve parameters (`ip -d -j link`). Geneve over IPv4 sends a zero outer UDP checksum unless
    `udpcsum` is set (the kernel's default), which stops GRO on unfixed receivers (89e5c58fc1e2)."""

    vni: int | None
    """None for an `external` (collect-metadata) device, as OVS's genev_sys_6081: the VNI is per packet."""
    port: int
    remote: str | None
    udpcsum: bool | None
    """None when iproute2 did not print it (it prints only attributes the kernel reported)."""
    external: bool = False
    df: str | None = None
    ttl: str | None = None
    """A number or `inherit`."""
    udp6zerocsumtx: bool | None = None
    udp6zerocsumrx: bool | None = None


@dataclass(frozen=True, slots=True)
class TcBpf:
    """An eBPF program attached to a device as a tc (cls_bpf) filter (`tc -j filter show dev X ingress|egress`)."""

    direction: str
    """`ingress` or `egress` (the clsact hook)."""
    name: str
    """The kernel's name of the program (`prog.name`, at most 15 characters)."""
    id: int | None
    """The kernel's program id (None when tc did not print it)."""
    tag: str | None = None
    """The program's tag (a hash of its instructions)."""
    object: str | None = None
    """`bpf_name`: the object file and section tc loaded it from (`kb004_nat.bpf.o:[tc]`)."""
    direct_action: bool = False
    pref: int | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """A network interface in one namespace."""

    ifindex: int
    name: str
    kind: str
    """`veth`, `bridge`, `vxlan`, `geneve`, `openvswitch`, `tun`, `device` (physical), ..."""
    mtu: int
    state: str
    master: str | None = None
    """Bridge (or OVS datapath) this link is a port of."""
    peer_ifindex: int | None = None
    """veth: the peer's ifindex in the peer's namespace."""
    peer_ns: str | None = None
    """veth: id of the namespace holding the peer (None when it could not be found)."""
    peer_name: str | None = None
    """veth: the peer's name."""
    vxlan: VxlanInfo | None = None
    driver: str | None = None
    """`ethtool -i` driver (vmxnet3, virtio_net, veth, ...)."""
    features: dict[str, Feature] | None = None
    """ethtool features by their kernel names (`tx-checksum-ip-generic`, ...); None = unknown."""
    addresses: tuple[str, ...] = ()
    """Addresses in CIDR form."""
    geneve: GeneveInfo | None = None
    tc_bpf: tuple[TcBpf, ...] | None = None
    """eBPF programs on the device's tc ingress/egress hooks; () none, None unknown (not read)."""

    def feature_on(self, name: str) -> bool | None:
        if self.features is None or name not in self.features:
            return None
        return self.features[name].active


#: The tables a route with no table (a snapshot taken before tables were read) belongs to.
MAIN_TABLES = ("main", None)


@dataclass(frozen=True, slots=True)
class Route:
    """One route (`ip -j route show table all`, v4 or v6)."""

    dst: str
    dev: str | None = None
    via: str | None = None
    mtu: int | None = None
    table: str | None = None
    """`main`, `local`, `default` or a number (`100`); None in snapshots taken before tables were read."""
    type: str | None = None
    """None for a unicast route; `blackhole`, `unreachable`, `prohibit`, `throw` otherwise."""


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One policy routing rule (`ip -j rule show`, v4 or v6): which packets, and the table they look up.
    CNIs steer with these (Calico and Cilium mark packets and send the mark to a table of their own)."""

    priority: int
    family: int
    """4 or 6."""
    action: str = "lookup"
    """`lookup` a table, `goto` a rule, `nop`, `blackhole`, `unreachable`, `prohibit`."""
    table: str | None = None
    """The table looked up (`main`, `local`, `100`), for `lookup`."""
    src: str | None = None
    """`from`: a prefix; None for `all`."""
    dst: str | None = None
    """`to`: a prefix; None for any."""
    fwmark: str | None = None
    """`0x4000` or `0x4000/0xff00` (mark/mask), as iproute2 prints it."""
    iif: str | None = None
    oif: str | None = None
    invert: bool = False
    """`not`: the selector is negated."""
    suppress_prefixlen: int | None = None
    """The lookup's result is ignored for routes with a prefix this long or shorter (`suppress_prefixlength`)."""
    other: tuple[str, ...] = ()
    """The rest as iproute2 names it: `goto=32766` (a goto's target), `ipproto=udp`, `dport=4789`, `l3mdev`, ..."""


@dataclass(frozen=True, slots=True)
class CounterSample:
    """Checksum-related counters (nstat names), sampled twice `interval_s` apart."""

    first: dict[str, int]
    second: dict[str, int]
    interval_s: float

    def rising(self) -> dict[str, int]:
        return {k: self.second.get(k, 0) - v for k, v in self.first.items() if self.second.get(k, 0) > v}


@dataclass(frozen=True, slots=True)
class NatRules:
    """NAT configuration as the kernel has it, both iptables backends and nftables."""

    iptables_nat: tuple[str, ...] | None = None
    """`iptables-save -t nat` lines (the active backend); None = could not read."""
    iptables_mangle: tuple[str, ...] | None = None
    nft_ruleset: str | None = None
    """`nft list ruleset` text; None = could not read or nft missing."""
    iptables_backend: str | None = None
    """The backend `iptables-save` uses: `nf_tables` or `legacy` (None = unknown)."""
    iptables_legacy_nat: tuple[str, ...] | None = None
    """`iptables-legacy-save` nat lines when legacy is not the active backend (rules left behind by,
    or still written by, a kube-proxy/Docker using the other backend); None = not read."""
    iptables_legacy_mangle: tuple[str, ...] | None = None
    ip6tables_nat: tuple[str, ...] | None = None
    """`ip6tables-save` nat lines (the active backend): IPv6 NAT rewrites checksums too (known-issues-2 A)."""
    ip6tables_legacy_nat: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where to run a command: a namespace's id, the path that enters it, and its inode."""

    ns_id: str
    enter: str | None
    """None: the collector's own namespace (nothing to enter)."""
    inode: int


@dataclass(frozen=True, slots=True)
class NsRef:
    """A network namespace as found (host/netns.py), by what identifies it, before anything is read inside it."""

    id: str
    """Stable id: `host`, the netns name, or `pid:<pid>` for one only held by a process."""
    inode: int
    """The nsfs inode: two paths name the same namespace when their inodes match."""
    enter: str | None
    """Path to enter it (`/run/netns/NAME`, `/proc/PID/ns/net`); None for the host namespace."""
    names: tuple[str, ...] = ()
    """Every name it is mounted under (`ip netns`, Docker's sandboxes, CNI)."""
    pid: int | None = None
    """The process holding it (the one whose parent is outside it, as a container's init); None when no process does."""
    command: str | None = None
    """That process's command line, cut at 200 characters (`[comm]` for a kernel thread)."""
    container_id: str | None = None
    """The container that process runs in (64 hex digits from its cgroup path)."""

    @property
    def target(self) -> Target:
        return Target(self.id, self.enter, self.inode)


@dataclass(frozen=True, slots=True)
class Namespace(NsRef):
    """A network namespace with what was read inside it: named, held by a process, or the host's own.

    Its identity is the NsRef it was found as (same fields, same JSON keys, same positional order)."""

    links: tuple[Link, ...] = ()
    routes: tuple[Route, ...] = ()
    counters: CounterSample | None = None
    nat: NatRules | None = None
    sysctls: dict[str, str] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    table_routes: tuple[Route, ...] = ()
    """Routes of every table but main (`local` unicast-only, policy tables such as Calico's and
    Cilium's); `routes` keeps the main table, which is what path finding and the rules mean."""
    rules: tuple[PolicyRule, ...] = ()
    """Policy routing rules, IPv4 then IPv6, in priority order; () when not read (see `errors`)."""

    @classmethod
    def found(cls, ref: NsRef) -> Namespace:
        """`ref`'s identity with nothing read inside it yet (fill it in with dataclasses.replace)."""
        return cls(*(getattr(ref, f.name) for f in fields(NsRef)))

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)

    def link_by_index(self, ifindex: int) -> Link | None:
        return next((link for link in self.links if link.ifindex == ifindex), None)

    def main_routes(self) -> tuple[Route, ...]:
        """The main table's routes (also those of a snapshot that did not record tables)."""
        return tuple(r for r in self.routes if r.table in MAIN_TABLES)

    def all_routes(self) -> tuple[Route, ...]:
        """Every table's routes: main first, then the others as the kernel listed them."""
        return (*self.routes, *self.table_routes)

    def table(self, name: str) -> tuple[Route, ...]:
        """The routes of one table (`main`, `local`, `100`)."""
        return tuple(r for r in self.all_routes() if (r.table or "main") == name)


@dataclass(frozen=True, slots=True)
class OVSPort:
    name: str
    bridge: str
    type: str
    """Interface type: `system` (AF_PACKET on a kernel device), `internal`, `tap`, `dpdk`, ..."""


@dataclass(frozen=True, slots=True)
class OVSBridge:
    name: str
    datapath_type: str
    """`system` (kernel datapath) or `netdev` (userspace)."""
    ports: tuple[OVSPort, ...] = ()


@dataclass(frozen=True, slots=True)
class OVSInfo:
    """One Open vSwitch instance (a system one, or a private one such as a badsum lab's)."""

    running: bool | None
    """None when it could not be told (ovs-vsctl missing)."""
    db: str | None = None
    """The OVSDB socket it was read from (`unix:/var/run/openvswitch/db.sock`, ...)."""
    pid: int | None = None
    """ovs-vswitchd's pid, when found among processes."""
    version: str | None = None
    bridges: tuple[OVSBridge, ...] = ()
    other_config: dict[str, str] = field(default_factory=dict)
    namespace: str = HOST_NS
    """Where ovs-vswitchd's ports live (the namespace its database was reached from)."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class KernelInfo:
    release: str
    """`uname -r`, e.g. `6.18.44-fc-v595`, `3.10.0-514.el7.x86_64`."""
    version: tuple[int, int, int]
    """Upstream version parsed from the release."""
    distro: str | None = None
    """`el7`, `el8`, ... when the release names a distribution build."""
    distro_build: int | None = None
    """RHEL-style build number (`514` in `3.10.0-514.el7`)."""


@dataclass(frozen=True, slots=True)
class NsOwner:
    """Who a namespace belongs to, as the container runtime names it (host/cri.py)."""

    container: str = ""
    """The container's name; "" for a pod's sandbox (the namespace is the whole pod's)."""
    pod: str = ""
    pod_namespace: str = ""
    runtime: str = ""
    """`crictl`, `containerd`, `cri-o`, `docker`."""

    def label(self) -> str:
        """`docker web-1`, `pod kube-system/coredns-x`, `pod default/web (container app)`."""
        if self.pod:
            return f"pod {self.pod_namespace}/{self.pod}" + (f" (container {self.container})" if self.container else "")
        return f"{self.runtime or 'container'} {self.container}"


@dataclass(frozen=True, slots=True)
class KernelLogEvent:
    """A kernel log record of one of the kinds host/kernel_log.py keeps."""

    kind: str
    """`hw-csum-failure`, `bad-offload`, `udp-bad-checksum`, `tunnel-mtu`."""
    device: str | None
    usec: int | None
    """Time since boot in microseconds (the ring's clock); None when the source printed none."""
    seq: int | None
    message: str


@dataclass(frozen=True, slots=True)
class KernelLog:
    """What the kernel log held of those kinds. `source` is "/dev/kmsg", "dmesg" or None (unreadable)."""

    source: str | None
    events: tuple[KernelLogEvent, ...] = ()
    """The newest matching records (bounded), oldest first."""
    counts: dict[str, int] = field(default_factory=dict)
    """Every matching record per kind, also those past the bound."""
    records: int = 0
    truncated: bool = False
    """The read stopped at a bound before the end of the ring."""
    error: str | None = None

    def devices(self, kind: str) -> dict[str, int]:
        """{device: records} of one kind, from the kept events."""
        out: dict[str, int] = {}
        for e in self.events:
            if e.kind == kind and e.device:
                out[e.device] = out.get(e.device, 0) + 1
        return out


@dataclass(frozen=True, slots=True)
class CniSighting:
    """A CNI, kube-proxy mode or container engine seen on the host (host/cni.py)."""

    name: str
    kind: str
    """`cni`, `kube-proxy` or `engine`."""
    overlay: str | None
    interfaces: tuple[str, ...]
    """`ns:dev` of the matching interfaces (the first few; `interface_count` counts them all)."""
    interface_count: int
    processes: tuple[str, ...]

    @property
    def evidence(self) -> str:
        parts = []
        if self.interfaces:
            more = self.interface_count - len(self.interfaces)
            parts.append(", ".join(self.interfaces) + (f" and {more} more" if more > 0 else ""))
        if self.processes:
            parts.append("process " + ", ".join(self.processes))
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """Everything doctor knows about one host at one time."""

    taken_at: float
    """Unix time the snapshot was taken (passed in by the caller)."""
    hostname: str
    kernel: KernelInfo
    root: bool
    """Whether the collector ran as root (without it, other namespaces are unknown)."""
    namespaces: tuple[Namespace, ...]
    ovs: tuple[OVSInfo, ...] = ()
    """Every Open vSwitch instance found (ovs-vswitchd processes and the default socket)."""
    tools: dict[str, str | None] = field(default_factory=dict)
    """Versions of ip, ethtool, iptables, nft, ovs-vsctl (None = not installed)."""
    errors: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION
    owners: dict[str, NsOwner] = field(default_factory=dict)
    """By namespace id: the container or pod the runtime says holds it (only those it names)."""
    kernel_log: KernelLog | None = None
    """None: not read (an older snapshot, or not asked for)."""
    cni: tuple[CniSighting, ...] = ()

    def ns(self, ns_id: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.id == ns_id), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HostSnapshot:
        raw = json.loads(text)
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"snapshot schema {raw.get('schema_version')!r}, this badsum reads {SCHEMA_VERSION}")
        return _build(cls, raw)


def _build(tp: Any, value: Any) -> Any:
    """Rebuild frozen dataclasses (and their tuples/dicts) from asdict() output."""
    if value is None:
        return None
    origin = get_origin(tp)
    if origin is None and is_dataclass(tp):
        hints = get_type_hints(tp)
        return tp(**{f.name: _build(hints[f.name], value[f.name]) for f in fields(tp) if f.name in value})
    if origin is tuple:
        (inner, *_rest) = get_args(tp)
        return tuple(_build(inner, v) for v in value)
    if origin is dict:
        _, inner = get_args(tp)
        return {k: _build(inner, v) for k, v in value.items()}
    args = [a for a in get_args(tp) if a is not type(None)]
    if args and (origin is not None):  # Optional[X] / X | None
        for a in args:
            if is_dataclass(a) or get_origin(a) in (tuple, dict):
                return _build(a, value)
        if tuple in [get_origin(a) for a in args]:
            return tuple(value)
    if tp is tuple or isinstance(value, list):
        return tuple(value)
    return value
