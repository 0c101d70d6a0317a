"""Hand-made findings and a simulated host for the pure tests of `badsum fix`.

The simulated host answers the exact argv lists badsum runs (`ip -j link show dev`,
`ethtool --json -k`, `ethtool -K`, `ip link set dev ... mtu`, `iptables -C/-A/-I/-D/-S`,
`sysctl`), the way the real tools answer them, including ethtool's `tx` alias group turning TSO
off with the checksum features (as the kernel does: "off [requested on]")."""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field

from badsum.rules.model import Finding, FixAction, ObjectRef, Outcome, Severity

TX = ("tx-checksum-ip-generic", "tx-checksum-sctp")
TX_FIXED_OFF = ("tx-checksum-ipv4", "tx-checksum-ipv6")
TSO = ("tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-tcp-ecn-segmentation")


def tx_off(ns: str, dev: str, enter: str | None = None, setting: str = "tx") -> FixAction:
    return FixAction("ethtool-feature", ns, enter if enter is not None else (None if ns == "host" else f"/run/netns/{ns}"),
                     dev, setting, "off")


def mtu(ns: str, dev: str, value: int, enter: str | None = None) -> FixAction:
    return FixAction("mtu", ns, enter if enter is not None else (None if ns == "host" else f"/run/netns/{ns}"), dev,
                     "mtu", str(value))


def finding(rule: str, objects: list[tuple[str, str]], fix: list[FixAction], *, severity: Severity = Severity.HIGH,
            outcome: Outcome = Outcome.FAIL) -> Finding:
    return Finding(rule=rule, title=f"{rule} title", severity=severity, outcome=outcome,
                   objects=tuple(ObjectRef(ns, name) for ns, name in objects), evidence="evidence", reason="reason",
                   fix=tuple(fix))


def veth_features() -> dict[str, dict]:
    f = {k: {"active": True, "fixed": False, "requested": True} for k in (*TX, *TSO, "tx-generic-segmentation", "rx-checksum")}
    f.update({k: {"active": False, "fixed": True, "requested": False} for k in TX_FIXED_OFF})
    return f


@dataclass
class FakeLink:
    ifindex: int
    mtu: int = 1500
    features: dict[str, dict] = field(default_factory=veth_features)


@dataclass
class FakeHost:
    """Interfaces and iptables chains per enter path (None = badsum's own namespace)."""

    links: dict[tuple[str | None, str], FakeLink] = field(default_factory=dict)
    chains: dict[tuple[str | None, str, str], list[list[str]]] = field(default_factory=dict)
    sysctls: dict[tuple[str | None, str], str] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    """Commands (first word after nsenter) that fail."""

    def __call__(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        self.calls.append(list(argv))
        enter = None
        cmd = list(argv)
        if cmd[0] == "nsenter":
            enter = cmd[1].split("=", 1)[1]
            cmd = cmd[3:]
        if " ".join(cmd[:2]) in self.fail or cmd[0] in self.fail:
            return self._r(argv, 1, err="simulated failure")
        try:
            return getattr(self, "_" + cmd[0].replace("-", "_"))(argv, enter, cmd)
        except KeyError:
            return self._r(argv, 1, err="Device does not exist")

    @staticmethod
    def _r(argv: list[str], rc: int = 0, out: str = "", err: str = "") -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(argv, rc, out, err)

    def _ip(self, argv, enter, cmd):
        if cmd[:4] == ["ip", "-j", "link", "show"]:
            dev = cmd[-1]
            link = self.links[(enter, dev)]
            return self._r(argv, out=json.dumps([{"ifindex": link.ifindex, "ifname": dev, "mtu": link.mtu}]))
        if cmd[:4] == ["ip", "link", "set", "dev"] and cmd[5] == "mtu":
            self.links[(enter, cmd[4])].mtu = int(cmd[6])
            return self._r(argv)
        return self._r(argv, 1, err="unsupported")

    def _ethtool(self, argv, enter, cmd):
        if cmd[1:3] == ["--json", "-k"]:
            link = self.links[(enter, cmd[3])]
            doc = {"ifname": cmd[3], "tx-checksumming": {"active": True, "fixed": None, "requested": None}}
            doc.update(link.features)
            return self._r(argv, out=json.dumps([doc]))
        if cmd[1] == "-K":
            link = self.links[(enter, cmd[2])]
            pairs = list(zip(cmd[3::2], cmd[4::2]))
            for name, value in pairs:
                on = value == "on"
                names = TX if name == "tx" else (name,)
                for n in names:
                    f = link.features[n]
                    if not f["fixed"]:
                        f["active"] = f["requested"] = on
            csum = any(link.features[n]["active"] for n in TX)
            for n in TSO:  # TSO needs TX checksum: off while it is off, back when it is back
                link.features[n]["active"] = csum and bool(link.features[n]["requested"])
            return self._r(argv)
        return self._r(argv, 1, err="unsupported")

    def _iptables(self, argv, enter, cmd):
        table, op, chain = cmd[2], cmd[3], cmd[4]
        rules = self.chains.setdefault((enter, table, chain), [])
        rest = cmd[5:]
        if op == "-S":
            lines = [f"-N {chain}"] + [f"-A {chain} {' '.join(shlex.quote(x) for x in r)}" for r in rules]
            return self._r(argv, out="\n".join(lines) + "\n")
        if op == "-C":
            return self._r(argv, 0 if rest in rules else 1)
        if op == "-A":
            rules.append(rest)
        elif op == "-I":
            pos = 1
            if rest and rest[0].isdigit():
                pos, rest = int(rest[0]), rest[1:]
            rules.insert(pos - 1, rest)
        elif op == "-R":
            pos, rest = int(rest[0]), rest[1:]
            if pos > len(rules):
                return self._r(argv, 1, err="Index of replacement too big")
            rules[pos - 1] = rest
        elif op == "-D":
            if rest not in rules:
                return self._r(argv, 1, err="Bad rule (does a matching rule exist in that chain?)")
            rules.remove(rest)
        return self._r(argv)

    def _sysctl(self, argv, enter, cmd):
        if cmd[1] == "-n":
            return self._r(argv, out=self.sysctls[(enter, cmd[2])] + "\n")
        key, value = cmd[2].split("=", 1)
        self.sysctls[(enter, key)] = value
        return self._r(argv)
