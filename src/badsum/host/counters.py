"""Checksum counters (nstat) and the sysctls that matter, per namespace (both are per netns)."""

from __future__ import annotations

import json

#: The counters checksum faults move (known-issues.md, appendix A), by nstat's names.
CSUM_COUNTERS = (
    "TcpInCsumErrors",
    "UdpInCsumErrors",
    "IcmpInCsumErrors",
    "IpExtInCsumErrors",
    "Udp6InCsumErrors",
    "Icmp6InCsumErrors",
    "UdpLiteInCsumErrors",
    "UdpLite6InCsumErrors",
)

#: Absolute values (-a), never touching nstat's history file (-s), zeros included (-z).
NSTAT_ARGV = ["nstat", "-a", "-s", "-z", "--json", *CSUM_COUNTERS]

SYSCTLS = (
    "net.netfilter.nf_conntrack_checksum",  # conntrack drops bad checksums on the NAT path (KB-001)
    "net.ipv4.ip_forward",
    "net.ipv4.tcp_syn_linear_timeouts",  # newer kernels: changes the 1+2+4+... SYN retry ladder (KB-004)
)
#: `sysctl -e` skips keys this kernel (or this namespace) does not have.
SYSCTL_ARGV = ["sysctl", "-e", *SYSCTLS]


def flatten_nstat(text: str) -> dict[str, int]:
    """`nstat --json` ({"kernel": {name: value}}, or per-group dicts) -> {name: value}."""
    doc = json.loads(text or "{}")
    flat: dict[str, int] = {}
    if isinstance(doc, dict):
        for group in doc.values():
            if isinstance(group, dict):
                flat.update({k: int(v) for k, v in group.items() if isinstance(v, (int, float))})
    return flat


def parse_nstat(text: str) -> dict[str, int]:
    """The checksum counters; counters the kernel lacks (no IPv6) are left out."""
    flat = flatten_nstat(text)
    return {k: flat[k] for k in CSUM_COUNTERS if k in flat}


def parse_sysctl(text: str) -> dict[str, str]:
    """`sysctl k1 k2` lines `key = value` -> {key: value}."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.strip() in SYSCTLS:
            out[key.strip()] = value.strip()
    return out


def read_own_sysctls(proc_sys: str = "/proc/sys") -> dict[str, str]:
    """The sysctls of the collector's own namespace, read directly."""
    out = {}
    for key in SYSCTLS:
        try:
            with open(f"{proc_sys}/{key.replace('.', '/')}") as f:
                out[key] = f.read().strip()
        except OSError:
            continue  # not on this kernel, or the module (nf_conntrack) not loaded
    return out
