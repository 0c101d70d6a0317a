"""Lab topologies declared as data, and the exact commands that build them (pure).

Everything a lab creates lives in network namespaces named `<prefix>-<name>`; nothing is put in
the root namespace (this machine's own addresses may overlap the documentation ranges), so
deleting the lab's namespaces removes every link, bridge, VXLAN device and nft table with them.
Only documentation addresses are accepted (RFC 5737, RFC 3849).
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field

DOC_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


class TopologyError(ValueError):
    """The declared topology is not allowed (non-documentation address, unknown namespace...)."""


def check_doc_address(text: str) -> None:
    """Refuse any address outside the documentation ranges (labs never send anywhere else)."""
    iface = ipaddress.ip_interface(text)
    if not any(iface.ip in net for net in DOC_NETS):
        raise TopologyError(f"{text} is not a documentation address (192.0.2.0/24, 198.51.100.0/24, "
                            "203.0.113.0/24, 2001:db8::/32)")


@dataclass(frozen=True, slots=True)
class Veth:
    """A veth pair: `a_ns:a` <-> `b_ns:b`."""

    a_ns: str
    a: str
    b_ns: str
    b: str
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class Bridge:
    """A Linux bridge in `ns` enslaving `ports`."""

    ns: str
    name: str
    ports: tuple[str, ...]
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class OVSBridge:
    """An Open vSwitch bridge (userspace `netdev` datapath) served by a private ovs-vswitchd in `ns`."""

    ns: str
    name: str
    ports: tuple[str, ...]
    datapath: str = "netdev"


@dataclass(frozen=True, slots=True)
class Vxlan:
    """A VXLAN device."""

    ns: str
    name: str
    vni: int
    port: int
    local: str
    remote: str | None
    dev: str | None
    """The underlay device; None leaves the VXLAN unbound, so the kernel does not cap its MTU."""
    udpcsum: bool = False
    df: str = "unset"  # "set" | "unset" | "inherit" (ip-link(8))
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class Address:
    ns: str
    dev: str
    cidr: str


@dataclass(frozen=True, slots=True)
class Route:
    ns: str
    dst: str
    via: str | None = None
    dev: str | None = None


@dataclass(frozen=True, slots=True)
class Mtu:
    ns: str
    dev: str
    mtu: int


@dataclass(frozen=True, slots=True)
class Feature:
    """An ethtool feature (`ethtool -K dev feature on|off`), e.g. `tx` or `tx-checksum-ip-generic`."""

    ns: str
    dev: str
    feature: str
    on: bool


@dataclass(frozen=True, slots=True)
class Sysctl:
    ns: str
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Nft:
    """An nftables ruleset loaded with `nft -f -` in `ns` (tables vanish with the namespace)."""

    ns: str
    ruleset: str


@dataclass(frozen=True, slots=True)
class Container:
    """A Docker container of the lab's private dockerd, started `--net=none` and attached to an OVS
    bridge with `ovs-docker add-port`; its network namespace gets the lab name `ns` (`ip netns attach`)."""

    ns: str
    """The lab namespace name its network namespace is given (listed in Topology.namespaces, never created)."""
    name: str
    """Docker's name for it is `<prefix>-<name>`: recognisably the lab's, and not its namespace's name."""
    engine_ns: str
    """Where dockerd and the OVS bridge run (the lab's `host`)."""
    bridge: str
    address: str
    iface: str = "eth0"


@dataclass(slots=True)
class Topology:
    """A lab topology: namespaces and the objects in them, built in declaration order."""

    name: str
    namespaces: list[str]
    veths: list[Veth] = field(default_factory=list)
    bridges: list[Bridge] = field(default_factory=list)
    ovs: list[OVSBridge] = field(default_factory=list)
    vxlans: list[Vxlan] = field(default_factory=list)
    mtus: list[Mtu] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    features: list[Feature] = field(default_factory=list)
    sysctls: list[Sysctl] = field(default_factory=list)
    nft: list[Nft] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)

    @property
    def attached(self) -> set[str]:
        """Namespaces a container holds: named with `ip netns attach`, not created with `ip netns add`."""
        return {c.ns for c in self.containers}

    def validate(self) -> None:
        known = set(self.namespaces)
        objs = [*self.veths, *self.bridges, *self.ovs, *self.vxlans, *self.mtus, *self.addresses,
                *self.routes, *self.features, *self.sysctls, *self.nft, *self.containers]  # fmt: skip
        for o in objs:
            for ns in (getattr(o, "ns", None), getattr(o, "a_ns", None), getattr(o, "b_ns", None)):
                if ns is not None and ns not in known:
                    raise TopologyError(f"{type(o).__name__} names unknown namespace {ns!r}")
        for a in self.addresses:
            check_doc_address(a.cidr)
        for v in self.vxlans:
            check_doc_address(v.local)
            if v.remote:
                check_doc_address(v.remote)
        for r in self.routes:
            if r.via:
                check_doc_address(r.via)
            if r.dst != "default":
                check_doc_address(r.dst)

    def as_dict(self) -> dict:
        return asdict(self)


def ns_name(prefix: str, ns: str) -> str:
    return f"{prefix}-{ns}"


def build_commands(t: Topology, prefix: str) -> list[list[str]]:
    """The argv lists that build `t` (OVS bridges and containers excepted: they need the private daemons)."""
    t.validate()
    n = lambda ns: ns_name(prefix, ns)  # noqa: E731
    made = [ns for ns in t.namespaces if ns not in t.attached]
    cmds: list[list[str]] = [["ip", "netns", "add", n(ns)] for ns in made]
    cmds += [["ip", "-n", n(ns), "link", "set", "lo", "up"] for ns in made]
    for v in t.veths:
        cmds.append(["ip", "-n", n(v.a_ns), "link", "add", v.a, "type", "veth", "peer", "name", v.b, "netns", n(v.b_ns)])
        if v.mtu:
            cmds.append(["ip", "-n", n(v.a_ns), "link", "set", v.a, "mtu", str(v.mtu)])
            cmds.append(["ip", "-n", n(v.b_ns), "link", "set", v.b, "mtu", str(v.mtu)])
        cmds.append(["ip", "-n", n(v.a_ns), "link", "set", v.a, "up"])
        cmds.append(["ip", "-n", n(v.b_ns), "link", "set", v.b, "up"])
    # VXLAN devices right after the veths: bridges may enslave them and addresses go on them.
    for x in t.vxlans:
        cmd = ["ip", "-n", n(x.ns), "link", "add", x.name, "type", "vxlan", "id", str(x.vni), "dstport", str(x.port),
               "local", x.local, *(["dev", x.dev] if x.dev else []), "udpcsum" if x.udpcsum else "noudpcsum",
               "df", x.df]  # fmt: skip
        if x.remote:
            cmd += ["remote", x.remote]
        cmds.append(cmd)
        if x.mtu:
            cmds.append(["ip", "-n", n(x.ns), "link", "set", x.name, "mtu", str(x.mtu)])
        cmds.append(["ip", "-n", n(x.ns), "link", "set", x.name, "up"])
    for b in t.bridges:
        cmds.append(["ip", "-n", n(b.ns), "link", "add", b.name, "type", "bridge"])
        if b.mtu:
            cmds.append(["ip", "-n", n(b.ns), "link", "set", b.name, "mtu", str(b.mtu)])
        for p in b.ports:
            cmds.append(["ip", "-n", n(b.ns), "link", "set", p, "master", b.name])
        cmds.append(["ip", "-n", n(b.ns), "link", "set", b.name, "up"])
    for m in t.mtus:
        cmds.append(["ip", "-n", n(m.ns), "link", "set", m.dev, "mtu", str(m.mtu)])
    for a in t.addresses:
        extra = ["nodad"] if ":" in a.cidr else []
        cmds.append(["ip", "-n", n(a.ns), "addr", "add", a.cidr, "dev", a.dev, *extra])
    for s in t.sysctls:
        cmds.append(["ip", "netns", "exec", n(s.ns), "sysctl", "-qw", f"{s.key}={s.value}"])
    for f in t.features:
        cmds.append(["ip", "netns", "exec", n(f.ns), "ethtool", "-K", f.dev, f.feature, "on" if f.on else "off"])
    return cmds


def route_commands(t: Topology, prefix: str) -> list[list[str]]:
    """Routes go last: their devices and addresses must exist first."""
    out = []
    for r in t.routes:
        cmd = ["ip", "-n", ns_name(prefix, r.ns), "route", "add", r.dst]
        if r.via:
            cmd += ["via", r.via]
        if r.dev:
            cmd += ["dev", r.dev]
        out.append(cmd)
    return out
