"""KB-011 and KB-012: IPv6 address rewrites that leave a CHECKSUM_COMPLETE skb->csum wrong.

KB-011 is netfilter's IPv6 NAT (inet_proto_csum_replace16, fixed by 189c9b1e9453); KB-012 is the
BPF helper bpf_l4_csum_replace() as Cilium's IPv6 reverse SNAT calls it (fixed by ead7f9b8de65).
The snapshot shows the rewrite (ip6tables/nft NAT rules, Cilium with IPv6), the symptoms come from
the counters (Udp6InCsumErrors) and the kernel log (`hw csum failure`).
"""

from __future__ import annotations

import re

from badsum.host.model import HostSnapshot, Link, Namespace
from badsum.rules.kernels import KERNEL_FIXES, kernel_has
from badsum.rules.masquerade import appended_rules
from badsum.rules.model import Finding, ObjectRef, Outcome, Rule
from badsum.rules.toolkit import HOST_NS, finding, link_ref, links, skip, veth_peer

#: iptables targets that rewrite addresses or ports.
NAT_TARGETS = ("MASQUERADE", "SNAT", "DNAT", "REDIRECT", "NETMAP")
_NFT_TABLE = re.compile(r"^\s*table\s+(?P<family>\S+)\s+(?P<name>\S+)\s*\{")
_NFT_CHAIN = re.compile(r"^\s*chain\s+(?P<name>\S+)\s*\{")
_NFT_NAT = re.compile(r"(?:^|\s)(?:snat|dnat|masquerade|redirect)(?:\s|$|;)")


def ip6tables_nat_rules(lines: tuple[str, ...] | None) -> list[str]:
    """`CHAIN: rule` for every ip6tables-save nat rule that rewrites addresses."""
    out = []
    for tokens in appended_rules(lines):
        if "-j" in tokens and tokens.index("-j") + 1 < len(tokens) and tokens[tokens.index("-j") + 1] in NAT_TARGETS:
            out.append(f"{tokens[1]}: {' '.join(tokens[2:])}")
    return out


def nft_nat6_rules(ruleset: str | None) -> list[str]:
    """`table/chain: rule` for nft NAT statements in tables of family ip6 or inet (which take IPv6 packets)."""
    out = []
    family = table = chain = None
    depth = 0
    for raw in (ruleset or "").splitlines()[:200_000]:
        line = raw.strip()
        m = _NFT_TABLE.match(line)
        if m and depth == 0:
            family, table, chain = m["family"], m["name"], None
        elif (m := _NFT_CHAIN.match(line)) and depth == 1:
            chain = m["name"]
        elif family in ("ip6", "inet") and chain and depth == 2 and _NFT_NAT.search(line) and not line.startswith("type "):
            out.append(f"{family} {table}/{chain}: {line}")
        depth += line.count("{") - line.count("}")
        if depth <= 0:
            depth, family, table, chain = 0, None, None, None
    return out


def _nat6(ns: Namespace) -> list[str] | None:
    """The namespace's IPv6 NAT rules, None when none of their sources was read."""
    nat = ns.nat
    if nat is None or (nat.ip6tables_nat is None and nat.ip6tables_legacy_nat is None and nat.nft_ruleset is None):
        return None
    rules = ip6tables_nat_rules(nat.ip6tables_nat)
    rules += [f"{r} (ip6tables-legacy)" for r in ip6tables_nat_rules(nat.ip6tables_legacy_nat)]
    # iptables-nft writes its rules into nft too (`table ip6 nat`): count each rule once.
    own = nat.ip6tables_nat is not None
    return rules + [r for r in nft_nat6_rules(nat.nft_ruleset) if not (own and r.startswith("ip6 nat/"))]


def _udp6_errors(snap: HostSnapshot) -> list[str]:
    out = []
    for ns in snap.namespaces:
        c = ns.counters
        n = c.second.get("Udp6InCsumErrors", 0) if c is not None else 0
        if n:
            rising = c.rising().get("Udp6InCsumErrors", 0) if c is not None else 0
            out.append(f"{ns.id} Udp6InCsumErrors {n}" + (f" (+{rising} in {c.interval_s:g} s)" if rising else ""))
    return out


def _hw_csum_failures(snap: HostSnapshot) -> str | None:
    log = snap.kernel_log
    if log is None or log.source is None:
        return None
    n = log.counts.get("hw-csum-failure", 0)
    if not n:
        return ""
    named = ", ".join(f"{d} ({k})" for d, k in sorted(log.devices("hw-csum-failure").items())) or "no device named"
    return f"{n} 'hw csum failure' line(s) in {log.source}, on {named}"


def _global_v6(link: Link) -> bool:
    return any(":" in a and not a.lower().startswith(("fe80", "::1/")) for a in link.addresses)


# -- KB-011 ------------------------------------------------------------------------------------


def ipv6_nat_csum(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-011"])
    if has:
        return skip(rule, f"kernel {how}")
    if tuple(snap.kernel.version) < (3, 16, 0) and not snap.kernel.distro:
        return skip(rule, f"kernel {snap.kernel.release} is older than 3.16, where the faulty update was reported from")
    read = [(ns, rules) for ns in snap.namespaces if (rules := _nat6(ns)) is not None]
    if not read:
        return [finding(rule, Outcome.UNKNOWN, [], "no namespace's IPv6 NAT rules (ip6tables, nft) were read")]
    kernel = ObjectRef(HOST_NS, snap.kernel.release, "kernel")
    udp6 = _udp6_errors(snap)
    log = _hw_csum_failures(snap)
    symptoms = udp6 + ([log] if log else [])
    out = []
    for ns, rules in read:
        if not rules:
            continue
        shown = "; ".join(rules[:3]) + (f" and {len(rules) - 3} more" if len(rules) > 3 else "")
        facts = {"ns": ns.id, "rules": shown, "kernel": snap.kernel.release, "kernel_how": how,
                 "symptoms": ", ".join(symptoms) if symptoms else
                 "none seen (Udp6InCsumErrors zero" + (", kernel log clean)" if log == "" else ", kernel log not read)")}  # fmt: skip
        objects = [kernel, ObjectRef(ns.id, "nat6", "ip6-nat")]
        if has is False and symptoms:
            out.append(finding(rule, Outcome.FAIL, objects, "IPv6 NAT on this kernel leaves skb->csum wrong, and the "
                               "symptoms are here: " + ", ".join(symptoms), facts))  # fmt: skip
        elif has is False or symptoms:
            out.append(finding(rule, Outcome.WARN, objects, "IPv6 NAT on a kernel without 189c9b1e9453" if has is False
                               else "whether this kernel has 189c9b1e9453 is not known, and the symptoms are here", facts))  # fmt: skip
        else:
            out.append(finding(rule, Outcome.UNKNOWN, objects, f"{how}; no symptom seen"))
    return out or skip(rule, "no IPv6 NAT rule in any namespace read")


# -- KB-012 ------------------------------------------------------------------------------------


def _cilium_v6(snap: HostSnapshot) -> tuple[Namespace, Link] | None:
    """cilium_host when Cilium runs with IPv6 (an IPv6 address on it, or on a pod behind an lxc veth)."""
    host = next(((ns, link) for ns, link in links(snap) if link.name == "cilium_host"), None)
    if host is None:
        return None
    if _global_v6(host[1]):
        return host
    for _, link in links(snap, ("veth",)):
        peer = veth_peer(snap, link) if link.name.startswith("lxc") else None
        if peer is not None and _global_v6(peer[1]):
            return host
    return None


def cilium_ipv6_l4_csum(snap: HostSnapshot, rule: Rule) -> list[Finding]:
    seen = any(c.name == "cilium" for c in snap.cni) or any(link.name == "cilium_host" for _, link in links(snap))
    if not seen:
        return skip(rule, "Cilium is not seen (no cilium_host, no cilium-agent)")
    has, how = kernel_has(snap.kernel, KERNEL_FIXES["KB-012"])
    if has:
        return skip(rule, f"kernel {how}")
    v6 = _cilium_v6(snap)
    kernel = ObjectRef(HOST_NS, snap.kernel.release, "kernel")
    if v6 is None:
        return [finding(rule, Outcome.PASS, [kernel], "no IPv6 address on cilium_host or on a pod behind an lxc veth: "
                        "Cilium's IPv6 path is not in use")]  # fmt: skip
    objects = [kernel, link_ref(*v6)]
    log = _hw_csum_failures(snap)
    facts = {"kernel": snap.kernel.release, "kernel_how": how, "ns": v6[0].id, "name": v6[1].name,
             "log": log if log else "no 'hw csum failure' lines" if log == "" else "not read"}  # fmt: skip
    if log is None:
        why = "the kernel log was not read" if snap.kernel_log is None else snap.kernel_log.error or "the kernel log is unreadable"
        return [finding(rule, Outcome.UNKNOWN, objects, f"{why}: check dmesg for 'hw csum failure'")]
    if not log:
        return [finding(rule, Outcome.PASS, objects, f"Cilium with IPv6 on an unfixed kernel, but {facts['log']} in the log")]
    if has is False:
        return [finding(rule, Outcome.FAIL, objects, f"the kernel logged {log}; Cilium's IPv6 reverse SNAT on this "
                        "kernel is a known source (the link to these lines is inferred)", facts)]  # fmt: skip
    return [finding(rule, Outcome.WARN, objects, f"the kernel logged {log}; whether this kernel has ead7f9b8de65 is not known",
                    facts)]  # fmt: skip
