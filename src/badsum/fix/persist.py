"""Keeping a fix across reboots and interface re-creation: a udev rule, a systemd `.link` file,
or a NetworkManager dispatcher script, chosen for the interface at hand; a `sysctl.d` drop-in for
the host namespace's sysctls (sysctl_d.py). Every action kind a plan can hold gets a Persistence,
with method `none` and the reason when nothing on the host can keep it.

The text is built here without I/O (`choose`); `install` and `uninstall` write and remove it,
journaled like every other change, under a root directory (`/` on a host, a temporary one in tests).

Which one fits:
- udev rule: runs whenever an interface appears in the host namespace, whoever creates it. A name
  pattern (`veth*`, `cali*`) is what follows interfaces a runtime re-creates under new names.
  Also the only one that can name any ethtool feature (`tx-checksum-ip-generic`, `tx-udp_tnl-*`).
- `.link` file: applied by systemd-udevd when the interface appears. Native for MTU (`MTUBytes=`)
  and the offload groups it knows (`TransmitChecksumOffload=`). Only the first matching `.link`
  applies, so ours takes the place of 99-default.link for that interface.
- NetworkManager dispatcher: for NICs NetworkManager manages; runs on every `up`.
None of them reaches an interface created inside a container's namespace: udev in the host never
sees it appear there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from badsum.fix import sysctl_d
from badsum.fix.files import install, uninstall
from badsum.fix.plan import RX_GROUP, TX_GROUP, PlannedAction
from badsum.host.model import HOST_NS, HostSnapshot, Link
from badsum.rules.model import FixAction

ETHTOOL = "/usr/sbin/ethtool"
IP = "/usr/sbin/ip"
UDEV_DIR = "/etc/udev/rules.d"
LINK_DIR = "/etc/systemd/network"
NM_DIR = "/etc/NetworkManager/dispatcher.d"
#: Interface kinds that are software devices (no naming policy, no DRIVERS match).
VIRTUAL_KINDS = frozenset({"veth", "bridge", "vxlan", "geneve", "openvswitch", "tun", "tap", "macvlan", "ipvlan",
                           "ipip", "gre", "gretap", "wireguard", "dummy", "bond", "vlan", "vrf", "team"})  # fmt: skip
#: A runtime-generated name: a short stem and a hex suffix (vethab12cd3, cali1a2b3c4d5e6, lxc9f8e7d).
_GENERATED = re.compile(r"^(?P<stem>[a-z]{2,8})[-_.]?(?P<suffix>[0-9a-f]{5,})$")
_SAFE_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
#: ethtool feature names (`tx-checksum-ip-generic`, `rx-udp-gro-forwarding`, `lro`) and values: nothing
#: udev would substitute (`%`, `$`) or a shell would split.
_SAFE_FEATURE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SAFE_SWITCH = frozenset({"on", "off"})
#: `.link` [Link] keys for ethtool settings (systemd.link(5)); others have no key.
LINK_KEYS = {
    **dict.fromkeys(TX_GROUP, "TransmitChecksumOffload"),
    **dict.fromkeys(RX_GROUP, "ReceiveChecksumOffload"),
    **dict.fromkeys(("tso", "tcp-segmentation-offload", "tx-tcp-segmentation"), "TCPSegmentationOffload"),
    "tx-tcp6-segmentation": "TCP6SegmentationOffload",
    **dict.fromkeys(("gso", "generic-segmentation-offload", "tx-generic-segmentation"), "GenericSegmentationOffload"),
    **dict.fromkeys(("gro", "generic-receive-offload", "rx-gro"), "GenericReceiveOffload"),
    **dict.fromkeys(("lro", "large-receive-offload", "rx-lro"), "LargeReceiveOffload"),
    "tx-gso-partial": "PartialGenericSegmentationOffload",
}
#: What 99-default.link sets, repeated in ours because ours takes its place for the interface.
DEFAULT_LINK_POLICY = ("NamePolicy=keep kernel database onboard slot path", "AlternativeNamesPolicy=database onboard slot path",
                       "MACAddressPolicy=persistent")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Artefact:
    kind: str
    """`udev-rule`, `systemd-link`, `nm-dispatcher`, `sysctl.d`."""
    path: str
    """Where it goes on the host (absolute); written under `--root` when given."""
    text: str
    mode: int = 0o644
    settings: tuple[sysctl_d.Setting, ...] = ()
    """For a merged file (`sysctl.d`): the lines badsum keeps in it; `install` merges them again into
    what the file holds when it writes, so a change made between plan and apply is not lost."""

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "path": self.path, "mode": oct(self.mode), "text": self.text}


@dataclass(frozen=True, slots=True)
class Environment:
    """What manages interfaces on this host (read by the caller; tests pass their own)."""

    udev: bool = True
    networkmanager: bool = False
    sysctl_files: dict[str, str] = field(default_factory=dict)
    """The sysctl.d files there are, by their path on the host (ours included), with their text."""


@dataclass(frozen=True, slots=True)
class Persistence:
    """How to keep the changes to one interface."""

    ns: str
    target: str
    actions: tuple[FixAction, ...]
    rules: tuple[str, ...]
    method: str
    """The artefact `--apply` writes: `udev-rule`, `systemd-link`, `nm-dispatcher`, or `none`."""
    artefact: Artefact | None
    fits: str
    """Why this one, in a sentence."""
    limits: tuple[str, ...] = ()
    alternatives: tuple[Artefact, ...] = ()
    """Other artefacts that would also work, printed but never written."""

    def as_dict(self) -> dict[str, object]:
        return {"namespace": self.ns, "target": self.target, "rules": list(self.rules), "method": self.method,
                "artefact": self.artefact.as_dict() if self.artefact else None, "fits": self.fits,
                "limits": list(self.limits), "alternatives": [a.as_dict() for a in self.alternatives],
                "commands": [a.command() for a in self.actions]}  # fmt: skip


def name_pattern(name: str) -> str:
    """`veth*` for runtime-generated names (a stem and a hex suffix); the name itself otherwise."""
    m = _GENERATED.match(name)
    if m and any(c.isdigit() for c in m["suffix"]):
        return m["stem"] + "*"
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text.replace("*", "-any"))


def _header(rules: tuple[str, ...], ns: str, target: str, comment: str = "#") -> str:
    return (f"{comment} Written by `badsum fix --persist --apply` for {', '.join(rules)} on {ns}:{target}.\n"
            f"{comment} `badsum fix --undo` removes it.\n")  # fmt: skip


def _ethtool_args(actions: list[FixAction]) -> str:
    return " ".join(f"{a.setting} {a.value}" for a in actions)


def udev_rule(actions: list[FixAction], rules: tuple[str, ...], ns: str, target: str, *, match: str,
              driver: str | None = None) -> Artefact:  # fmt: skip
    """One rule file: `match` is a KERNEL glob (virtual devices) or an exact NAME (renamed NICs)."""
    physical = driver is not None
    keys = ['ACTION=="add"', 'SUBSYSTEM=="net"', f'NAME=="{match}"' if physical else f'KERNEL=="{match}"']
    if physical:
        keys.append(f'DRIVERS=="{driver}"')
    dev = "$name" if physical else "%k"  # RUN runs after renaming: $name is the final name
    lines = [_header(rules, ns, match)]
    feats = [a for a in actions if a.kind == "ethtool-feature"]
    if feats:
        lines.append(", ".join([*keys, f'RUN+="{ETHTOOL} -K {dev} {_ethtool_args(feats)}"']) + "\n")
    for a in actions:
        if a.kind == "mtu":
            lines.append(", ".join([*keys, f'RUN+="{IP} link set dev {dev} mtu {a.value}"']) + "\n")
    path = f"{UDEV_DIR}/90-badsum-{_slug(match)}.rules"
    return Artefact("udev-rule", path, "".join(lines))


def link_file(actions: list[FixAction], rules: tuple[str, ...], ns: str, target: str) -> Artefact | None:
    """A `.link` file matching the interface's original name; None when a setting has no key."""
    keys = []
    for a in actions:
        if a.kind == "mtu":
            keys.append(f"MTUBytes={a.value}")
        elif a.kind == "ethtool-feature" and a.setting in LINK_KEYS:
            keys.append(f"{LINK_KEYS[a.setting]}={'false' if a.value == 'off' else 'true'}")
        else:
            return None
    text = (_header(rules, ns, target)
            + "# Only the first .link file matching an interface applies: this one takes the place of\n"
            + "# 99-default.link for it, so that file's policies are repeated below.\n"
            + f"[Match]\nOriginalName={target}\n\n[Link]\n" + "".join(f"{k}\n" for k in DEFAULT_LINK_POLICY)
            + "".join(f"{k}\n" for k in keys))  # fmt: skip
    return Artefact("systemd-link", f"{LINK_DIR}/10-badsum-{_slug(target)}.link", text)


def nm_dispatcher(actions: list[FixAction], rules: tuple[str, ...], ns: str, target: str) -> Artefact | None:
    feats = [a for a in actions if a.kind == "ethtool-feature"]
    if not feats or len(feats) != len(actions):
        return None  # NetworkManager owns the MTU of what it manages: `nmcli connection modify` instead
    text = ("#!/bin/sh\n" + _header(rules, ns, target)
            + "# NetworkManager runs dispatcher scripts with the interface and the action.\n"
            + f'[ "$1" = "{target}" ] || exit 0\n'
            + f'case "$2" in\n    up|pre-up) exec {ETHTOOL} -K "$1" {_ethtool_args(feats)} ;;\nesac\nexit 0\n')  # fmt: skip
    return Artefact("nm-dispatcher", f"{NM_DIR}/90-badsum-{_slug(target)}", text, 0o755)


def _group(actions: list[PlannedAction]) -> dict[tuple[str, str, str | None], list[PlannedAction]]:
    groups: dict[tuple[str, str, str | None], list[PlannedAction]] = {}
    for p in actions:
        if p.action.kind in ("ethtool-feature", "mtu"):
            groups.setdefault((p.action.ns, p.action.target, p.action.enter), []).append(p)
    return groups


def choose(actions: list[PlannedAction], snapshot: HostSnapshot | None, env: Environment = Environment()) -> list[Persistence]:
    """One Persistence per interface the plan changes, one per namespace with sysctls, one per
    iptables chain, one per action of a kind badsum cannot keep: every action is in exactly one."""
    out = []
    for (ns, target, enter), group in _group(actions).items():
        acts = [p.action for p in group]
        rules = tuple(dict.fromkeys(r for p in group for r in p.rules))
        link = None
        if snapshot is not None and (n := snapshot.ns(ns)) is not None:
            link = n.link(target)
        out.append(_choose_one(ns, target, enter, acts, rules, link, snapshot, env))
    out = _dedupe(out)
    out += _sysctls([p for p in actions if p.action.kind == "sysctl"], env)
    out += _not_persistable([p for p in actions if p.action.kind not in ("ethtool-feature", "mtu", "sysctl")])
    return out


def uncovered(actions: list[PlannedAction], keep: list[Persistence]) -> list[str]:
    """Planned commands that no Persistence names (a kind `choose` does not know): empty normally."""
    named = {a.command() for p in keep for a in p.actions}
    return [f"`{p.command}`: badsum has no way to keep a {p.action.kind!r} change; it is not persisted"
            for p in actions if p.command not in named]  # fmt: skip


def _rules_of(group: list[PlannedAction]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r for p in group for r in p.rules))


def _sysctls(group: list[PlannedAction], env: Environment) -> list[Persistence]:
    by_ns: dict[tuple[str, str | None], list[PlannedAction]] = {}
    for p in group:
        by_ns.setdefault((p.action.ns, p.action.enter), []).append(p)
    out = []
    for (ns, enter), ps in by_ns.items():
        acts = tuple(p.action for p in ps)
        rules = _rules_of(ps)
        if ns != HOST_NS or enter is not None:
            out.append(Persistence(ns, "sysctl", acts, rules, "none", None,
                       f"{', '.join(a.target for a in acts)} {'is a sysctl' if len(acts) == 1 else 'are sysctls'} of "
                       f"namespace {ns}: /etc/sysctl.d is applied by systemd-sysctl (or `sysctl --system`) in the "
                       "host's namespace only, and a namespace created later starts from the kernel's defaults, so "
                       "no file on the host can set it there; nothing was written",
                       (NS_SYSCTL_KEEPER,)))  # fmt: skip
            continue
        bad = [why for a in acts if (why := sysctl_d.unsafe(a.target, a.value))]
        if bad:
            out.append(Persistence(ns, "sysctl", acts, rules, "none", None, f"{'; '.join(bad)}; persist it by hand"))
            continue
        settings = tuple(sysctl_d.Setting(a.target, a.value, tuple(dict.fromkeys(r for p in ps if p.action == a
                                                                                  for r in p.rules)))
                         for a in acts)  # fmt: skip
        existing = env.sysctl_files.get(sysctl_d.PATH)
        art = Artefact("sysctl.d", sysctl_d.PATH, sysctl_d.merge(existing, list(settings)), 0o644, settings)
        limits = ["systemd-sysctl applies it at boot (and `sysctl --system` when run); the live change covers now"]
        for a in acts:
            for path, value in sysctl_d.overrides(a.target, env.sysctl_files):
                if value != a.value:
                    limits.append(f"{path} sets {a.target} = {value} and is read after {sysctl_d.PATH}: it wins at "
                                  "boot; change it there")  # fmt: skip
            if (dev := sysctl_d.interface_of(a.target)) is not None:
                limits.append(f"{a.target} belongs to interface {dev}: systemd-udevd applies such keys again when {dev} "
                              "appears (99-systemd.rules), but an interface re-created under another name does not "
                              "match it")  # fmt: skip
        fits = ("one drop-in owned by badsum, merged: its earlier lines for these keys are updated, every other "
                "line is left as it is" if existing else "one drop-in owned by badsum, read at every boot")  # fmt: skip
        out.append(Persistence(ns, "sysctl", acts, rules, "sysctl.d", art, fits, tuple(limits)))
    return out


#: What keeps a sysctl in a namespace other than the host's: whoever creates the namespace.
NS_SYSCTL_KEEPER = ("what sets a sysctl when a namespace is created is its creator: `docker run --sysctl KEY=VALUE`, "
                    "a Kubernetes pod's securityContext.sysctls, or the CNI `tuning` plugin "
                    '(`"sysctl": {"KEY": "VALUE"}` in the network configuration)')  # fmt: skip
IPTABLES_KEEPER = ("the lasting fix is the owner's own: kube-proxy >= 1.16.13 / 1.17.9 / 1.18.6 has the unmark "
                   "rules (kubernetes#92035)")  # fmt: skip


def _not_persistable(group: list[PlannedAction]) -> list[Persistence]:
    by: dict[tuple[str, str, str], list[PlannedAction]] = {}
    for p in group:
        a = p.action
        chain = a.setting.split("\0")[1] if a.kind == "iptables-rule" and "\0" in a.setting else ""
        by.setdefault((a.kind, a.ns, f"{a.target}/{chain}" if chain else a.target), []).append(p)
    out = []
    for (kind, ns, target), ps in by.items():
        acts = tuple(p.action for p in ps)
        if kind == "iptables-rule":
            fits = ("an iptables rule is not persisted: the chain's owner (kube-proxy, flannel, the CNI) rewrites "
                    "the chain on its next sync and at boot, whatever a file on the host says")  # fmt: skip
            limits = (IPTABLES_KEEPER,)
        else:
            fits, limits = f"badsum has no way to keep a {kind!r} change; it is not persisted", ()
        out.append(Persistence(ns, target, acts, _rules_of(ps), "none", None, fits, limits))
    return out


def _dedupe(found: list[Persistence]) -> list[Persistence]:
    """Interfaces matched by one pattern share one file; different settings under one pattern get their own."""
    seen: dict[str, str] = {}
    out = []
    for p in found:
        art = p.artefact
        if art is not None and art.path in seen:
            if seen[art.path] == art.text:
                p = Persistence(p.ns, p.target, p.actions, p.rules, p.method, None,
                                f"{p.fits} (the same file as above covers it)", p.limits, p.alternatives)  # fmt: skip
            else:
                stem, dot, ext = art.path.rpartition(".")
                art = Artefact(art.kind, f"{stem}-{len(seen)}{dot}{ext}" if dot else f"{art.path}-{len(seen)}",
                               art.text, art.mode)  # fmt: skip
                p = Persistence(p.ns, p.target, p.actions, p.rules, p.method, art, p.fits, p.limits, p.alternatives)
        if p.artefact is not None:
            seen[p.artefact.path] = p.artefact.text
        out.append(p)
    return out


def _count_matching(snapshot: HostSnapshot | None, pattern: str) -> int | None:
    if snapshot is None or (host := snapshot.ns(HOST_NS)) is None:
        return None
    stem = pattern.rstrip("*")
    return sum(1 for link in host.links if (link.name.startswith(stem) if pattern.endswith("*") else link.name == pattern))


def _choose_one(ns: str, target: str, enter: str | None, acts: list[FixAction], rules: tuple[str, ...],
                link: Link | None, snapshot: HostSnapshot | None, env: Environment) -> Persistence:  # fmt: skip
    kind = link.kind if link else None
    if not _SAFE_IFNAME.match(target):
        return Persistence(ns, target, tuple(acts), rules, "none", None,
                           f"the name {target!r} cannot be written into a rule safely; persist it by hand")  # fmt: skip
    odd = [f"{a.setting} {a.value}" for a in acts if a.kind == "ethtool-feature"
           and (not _SAFE_FEATURE.match(a.setting) or a.value not in _SAFE_SWITCH)]  # fmt: skip
    if odd or any(a.kind == "mtu" and not a.value.isdigit() for a in acts):
        return Persistence(ns, target, tuple(acts), rules, "none", None,
                           f"the setting {(odd or ['mtu'])[0]!r} cannot be written into a rule safely; persist it by hand")  # fmt: skip
    udev_note = "" if env.udev else " (udev does not seem to run here: no udevadm)"
    if ns != HOST_NS or enter is not None:
        alts, limits = [], [
            ("udev, systemd-networkd and NetworkManager run in the host's namespace: they never see an interface "
             f"created inside {ns}, so no file on the host can re-apply this there"),
            ("what survives re-creation is the runtime's own configuration: the CNI plugin or runtime option that "
             "creates the interface, or the container's start command (with NET_ADMIN)"),
        ]
        if kind == "veth" and link is not None and link.peer_ns == HOST_NS:
            alts.append(udev_rule(acts, rules, ns, target, match="veth*"))
            limits.append("runtimes that create the veth pair in the host namespace (Docker) expose both ends as "
                          "veth* there for a moment: the udev rule shown may catch the container end before it is "
                          "moved, but that is a race, and it changes every veth* on the host")  # fmt: skip
        return Persistence(ns, target, tuple(acts), rules, "none", None,
                           f"{target} lives in namespace {ns}, not the host's: nothing on the host follows it",
                           tuple(limits), tuple(alts))  # fmt: skip
    virtual = kind in VIRTUAL_KINDS or (link is not None and link.driver in VIRTUAL_KINDS)
    on_udev = ("udev acts when the interface appears (boot, re-creation); the live change covers the one "
               "that exists now")  # fmt: skip
    if kind is None and link is None:
        virtual = True  # unknown: match by name, which is always safe
    if virtual:
        pattern = name_pattern(target)
        rule = udev_rule(acts, rules, ns, target, match=pattern)
        lf = link_file(acts, rules, ns, target)
        only_mtu = all(a.kind == "mtu" for a in acts)
        limits = [on_udev]
        if pattern != target:
            n = _count_matching(snapshot, pattern)
            limits.append(f"the pattern {pattern} matches every such interface (runtimes re-create them under new "
                          f"names){f': {n} on this host now' if n is not None else ''}; each gets the same setting")
        limits.append("the daemon that creates the interface (flannel, Calico, Weave, the CNI) may set the value "
                      "again after udev; fix it in that daemon's configuration too where it has an option")  # fmt: skip
        if only_mtu and lf is not None and pattern == target:
            limits.append("only the first .link file matching an interface applies: ours takes the place of "
                          "99-default.link for it (its policies are repeated inside)")  # fmt: skip
            return Persistence(ns, target, tuple(acts), rules, "systemd-link", lf,
                               f"{target} keeps its name, and MTUBytes= is how systemd-udevd sets an MTU when it "
                               f"appears{udev_note}", tuple(limits), (rule,))  # fmt: skip
        fits = (f"{target} is re-created by its runtime under new names: a udev rule on {pattern} follows it"
                if pattern != target else f"a udev rule on the exact name runs whenever {target} is (re)created "
                "(flannel documents this one for flannel.1)")  # fmt: skip
        return Persistence(ns, target, tuple(acts), rules, "udev-rule", rule, fits + udev_note, tuple(limits),
                           (lf,) if lf else ())  # fmt: skip
    # A NIC: renamed at boot by its naming policy, so match the final name and the driver.
    rule = udev_rule(acts, rules, ns, target, match=target, driver=link.driver if link else None)
    nm = nm_dispatcher(acts, rules, ns, target)
    limits = [on_udev, ("a .link file would also work but takes the place of 99-default.link for the NIC "
                        "(its naming policy): not written")]  # fmt: skip
    if env.networkmanager and nm is not None:
        limits.insert(0, "only for a NIC NetworkManager manages (`nmcli device status`); its own form is "
                      "`nmcli connection modify <connection> ethtool.feature-<name> off`")  # fmt: skip
        return Persistence(ns, target, tuple(acts), rules, "nm-dispatcher", nm,
                           f"NetworkManager runs here and re-applies {target}'s settings on every `up`: a "
                           "dispatcher script runs after it", tuple(limits), (rule,))  # fmt: skip
    return Persistence(ns, target, tuple(acts), rules, "udev-rule", rule,
                       f"a udev rule on {target}'s final name and driver runs at every boot{udev_note}",
                       tuple(limits), (nm,) if nm else ())  # fmt: skip


__all__ = ["Artefact", "Environment", "Persistence", "choose", "install", "name_pattern", "uncovered", "uninstall"]
