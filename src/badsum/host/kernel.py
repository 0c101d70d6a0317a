"""The running kernel (upstream version, distribution build) and the versions of the tools we use."""

from __future__ import annotations

import re
from collections.abc import Callable

from badsum.host.commands import Output, run
from badsum.host.model import KernelInfo

_UPSTREAM = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
#: RHEL and its rebuilds name the distribution in the release: `3.10.0-514.16.1.el7.x86_64`,
#: `4.18.0-305.el8.x86_64`, `5.14.0-70.13.1.el9_0.x86_64`. Oracle's UEK (`...el8uek...`) numbers
#: its builds differently, so it keeps its own distro name and never compares as RHEL.
_EL = re.compile(r"^\d+\.\d+(?:\.\d+)?-(\d+)(?:\.[0-9_]+)*\.(el\d+(?:uek)?)(?:_\d+)?(?:[.+-]|$)")


def parse_release(release: str) -> KernelInfo:
    """`uname -r` -> KernelInfo; an unparseable release gives version (0, 0, 0)."""
    m = _UPSTREAM.match(release)
    version = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else (0, 0, 0)
    el = _EL.match(release)
    if el is None:
        return KernelInfo(release, version)
    return KernelInfo(release, version, distro=el.group(2), distro_build=int(el.group(1)))


#: tool -> (argv printing the version, pattern whose first group is the version).
TOOLS: dict[str, tuple[list[str], str]] = {
    "ip": (["ip", "-V"], r"iproute2-(?:ss)?([\w.]+)"),
    "ethtool": (["ethtool", "--version"], r"version\s+([\w.]+)"),
    "nstat": (["nstat", "-V"], r"iproute2-(?:ss)?([\w.]+)"),
    "iptables": (["iptables", "-V"], r"v([\d.]+(?: \([\w_]+\))?)"),
    "iptables-legacy": (["iptables-legacy", "-V"], r"v([\d.]+)"),
    "nft": (["nft", "--version"], r"v([\d.]+)"),
    "ovs-vsctl": (["ovs-vsctl", "--version"], r"\) ([\w.~+-]+)"),
    "tcpdump": (["tcpdump", "--version"], r"tcpdump version ([\w.]+)"),
    "nsenter": (["nsenter", "--version"], r"util-linux ([\w.-]+)"),
}


def tool_version(name: str, runner: Callable[[list[str]], Output] = run) -> str | None:
    """The version string, None when the tool is not installed, the first line if unparseable."""
    argv, pattern = TOOLS[name]
    out = runner(argv)
    if out.stdout is None:
        if out.error and out.error.endswith("not installed"):
            return None
        return f"unknown ({out.error})"
    m = re.search(pattern, out.stdout)
    if m:
        return m.group(1)
    first = out.stdout.strip().splitlines()
    return first[0] if first else "unknown"
