"""Which kernels carry which fix: versions, stable backports and RHEL builds (pure data + lookups)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from badsum.host.model import KernelInfo


@dataclass(frozen=True, slots=True)
class KernelFix:
    """Where a kernel change landed: mainline, stable series, distribution builds."""

    commit: str
    mainline: tuple[int, int, int]
    """First mainline release with it."""
    stable: tuple[tuple[int, int, int], ...] = ()
    """First release with it in each older stable series."""
    distro: tuple[tuple[str, int], ...] = ()
    """(distribution, first build with the backport), e.g. ("el7", 352) for 3.10.0-352.el7."""
    abi: tuple[tuple[tuple[int, int, int], int], ...] = ()
    """Ubuntu-style `X.Y.0-N` releases: (X.Y.0, first ABI number N with it)."""
    unverified: tuple[tuple[int, int], ...] = ()
    """Older series said to have a backport whose first release is not known: kernel_has() says None there."""
    note: str = ""


@dataclass(frozen=True, slots=True)
class KernelRange:
    """Releases of one stable series carrying a regression: lo <= version < hi."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    """First release known fixed (or the next series when no fixed release is known)."""
    source: str


#: The kernel facts behind each rule (known-issues.md); docs/rules.md prints them.
KERNEL_FIXES: dict[str, KernelFix] = {
    # veth: don't modify ip_summed. Stable backports "back to 3.14" were announced, releases unverified.
    "KB-001": KernelFix("ce8c839b74e3", (4, 4, 0), distro=(("el7", 352),),
                        note="stable backports to 3.14+ were announced; which releases got it is not known"),
    # ipv4: fix DO and PROBE pmtu mode regarding local fragmentation with UFO/CORK.
    "KB-002": KernelFix("daba287b299e", (3, 13, 0), distro=(("el7", 150),)),
    # net: clear local_df when passing skb between namespaces (a behaviour change, not a bug fix).
    "KB-003": KernelFix("239c78db9c41", (3, 13, 0), distro=(("el7", 150),)),
    # netfilter: nat: never update the UDP checksum when it's 0.
    "KB-004": KernelFix("ea64d8d6c675", (5, 7, 0), stable=((5, 6, 13), (5, 4, 41), (4, 19, 123), (4, 14, 181)),
                        abi=(((4, 15, 0), 107), ((5, 4, 0), 32)),
                        note="Ubuntu builds 4.15.0-107 and 5.4.0-32 from third-party write-ups"),
    # vmxnet3: fix cksum offload issues for tunnels with non-default udp ports (also 1dac3b1bc66d).
    "KB-006": KernelFix("b22580233d47", (5, 14, 0),
                        note="RHEL/CentOS 8.3+ (4.18.0-240.el8) ship the tunnel offload; which el8 build has the fixes is not known"),
    # bpf: add skb_postpush_rcsum and fix dev_forward_skb occasions (linkage to the report unverified).
    "KB-008": KernelFix("f8ffad69c9f8", (4, 6, 0), distro=(("el7", 435),),
                        note="the mainline release (about 4.6) and the link to the reports are unverified"),
    # -- known-issues-2.md ------------------------------------------------------------------------
    # net: Fix skb->csum update in inet_proto_csum_replace16() (IPv6 NAT on CHECKSUM_COMPLETE skbs).
    "KB-011": KernelFix("189c9b1e9453", (5, 6, 0), stable=((4, 9, 213),), unverified=((5, 5), (5, 4), (4, 19), (4, 14)),
                        note="fixed 2020-01; the mainline release (5.6, possibly 5.5) is inferred from the date; "
                             "the 4.14 and 5.4 backports (Feb 2020) are known, their releases are not"),
    # bpf: bpf_l4_csum_replace() gains BPF_F_IPV6 so IPv6 CHECKSUM_COMPLETE skbs keep a right skb->csum.
    "KB-012": KernelFix("ead7f9b8de65", (6, 16, 0), unverified=((6, 15), (6, 12), (6, 6), (6, 1), (5, 15), (5, 10)),
                        note="2025-05/06; the mainline release (6.15 or 6.16) and the stable releases (down to 5.10, "
                             "2025-06) are not verified"),
    # udp: do not accept non-tunnel GSO skbs landing in a tunnel (with f0b8c3034556, 64235eabc4b5, ed4cccef64c1).
    "KB-013": KernelFix("3d010c8031e3", (6, 9, 0), stable=((6, 8, 5),), unverified=((6, 6), (6, 1), (5, 15)),
                        note="net 2024-03-29, v6.9 cycle; 6.8.5 seen fixed (tailscale#11026); other stable series "
                             "not verified"),
    # vmxnet3: LRO'd tunnel packets get their tunnel GSO type (needed once 3d010c8031e3 drops the others).
    "KB-015": KernelFix("982d30c30eaa", (6, 16, 0), unverified=((6, 15), (6, 12)),
                        note="6.16 merge window; in 6.12.y since 2025-06-17 (release number not verified)"),
    "KB-015/regression": KernelFix("3d010c8031e3", (6, 9, 0), stable=((6, 8, 5),), unverified=((6, 6), (6, 1), (5, 15)),
                                   note="the change after which vmxnet3's LRO'd tunnel packets are dropped"),
    # GRO for UDP tunnel packets with a zero outer checksum (5.12 merge window).
    "KB-016": KernelFix("89e5c58fc1e2", (5, 12, 0), stable=((4, 9, 268),), unverified=((5, 11), (5, 10), (5, 4), (4, 19), (4, 14)),
                        note="other series of April 2021 are not verified"),
    # tunnels: PMTU discovery for directly bridged IP packets (also fc68c99577cc vxlan, c1a800e88dbf geneve).
    "KB-017": KernelFix("4cb47a8644cc", (5, 9, 0), note="net-next 2020-08; 5.9 is inferred; no stable backports known"),
    # OVS + Geneve options: the ICMP for a GSO skb was built from it and dropped.
    "KB-017/geneve-options": KernelFix("e3c674db356c", (6, 18, 0), unverified=((6, 17), (6, 12), (6, 6)),
                                       note="2025-09; the mainline release (6.17 or 6.18) and backports are not verified"),
}  # fmt: skip

#: KB-009: e269d79c7d35 ("net: missing check virtio") went into these stable releases before
#: 89add40066f9 fixed it (tailscale#13041, stable mails, distribution trackers).
KB009_RANGES = (
    KernelRange((6, 1, 103), (6, 1, 106), "stable 6.1.103 took e269d79c7d35; the fix was still missing in 6.1.105"),
    KernelRange((6, 1, 106), (6, 1, 109), "6.1.109 has the fix; 6.1.106-6.1.108 are not verified"),
    KernelRange((6, 6, 44), (6, 6, 46), "6.6.44 and 6.6.45 reported broken, 6.6.46 fixed"),
    KernelRange((6, 10, 3), (6, 11, 0), "6.10.3 reported broken; the fixed 6.10.y release is not verified"),
)
#: Ranges whose end is a release seen fixed (a FAIL); the others only WARN.
KB009_CONFIRMED = {(6, 1, 103), (6, 6, 44)}

_ABI = re.compile(r"^\d+\.\d+\.0-(\d+)(?:[-.]|$)")


def abi_number(release: str) -> int | None:
    """N in a Debian/Ubuntu-style `X.Y.0-N...` release (its ABI number), None for any other release."""
    m = _ABI.match(release)
    return int(m.group(1)) if m else None


def version_text(version: Iterable[int]) -> str:
    parts = list(version)
    while len(parts) > 2 and parts[-1] == 0:
        parts.pop()
    return ".".join(map(str, parts))


def kernel_has(kernel: KernelInfo, fix: KernelFix) -> tuple[bool | None, str]:
    """Whether this kernel carries `fix`: True, False or None (cannot tell), and how that was decided."""
    v = tuple(kernel.version)
    rel = kernel.release
    if kernel.distro:
        for distro, build in fix.distro:
            if distro == kernel.distro:
                if kernel.distro_build is None:
                    return None, f"{rel}: the {distro} build number is not known"
                ok = kernel.distro_build >= build
                return ok, f"{rel}: {distro} build {kernel.distro_build} {'>=' if ok else '<'} {build}, the first with {fix.commit}"
        if v >= fix.mainline:
            return True, f"{rel}: based on {version_text(v)} >= {version_text(fix.mainline)}, which has {fix.commit}"
        return None, f"{rel}: whether this {kernel.distro} build carries {fix.commit} is not known"
    if v >= fix.mainline:
        return True, f"{rel} >= {version_text(fix.mainline)}, which has {fix.commit}"
    n = abi_number(rel)
    if n is not None:  # Debian/Ubuntu releases name the series and an ABI number, not the stable sublevel
        for series, first in fix.abi:
            if series == v:
                ok = n >= first
                return ok, f"{rel}: build {n} {'>=' if ok else '<'} {first}, the first {version_text(series)}.0-N with {fix.commit}"
        if any(s[:2] == v[:2] for s in fix.stable):
            return None, f"{rel}: the stable release behind this build is not in its name; {fix.commit} is in " + \
                ", ".join(version_text(s) for s in fix.stable if s[:2] == v[:2])
    for s in fix.stable:
        if s[:2] == v[:2]:
            ok = v >= s
            return ok, f"{rel} {'>=' if ok else '<'} {version_text(s)}, the first {s[0]}.{s[1]}.y with {fix.commit}"
    if v[:2] in fix.unverified:
        return None, f"{rel}: {fix.commit} was backported to {v[0]}.{v[1]}.y, but the first release with it is not known"
    return False, f"{rel} < {version_text(fix.mainline)}, the first release with {fix.commit}"
