"""Links, addresses, routes and policy rules from iproute2's JSON, ethtool's features and driver, and veth peers
resolved across namespaces. Everything here is parsing: JSON or text in, typed records out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from badsum.host.model import Feature, GeneveInfo, Link, PolicyRule, Route, VxlanInfo


class ParseError(ValueError):
    """Output that is not what the tool documents (names the tool)."""


def _obj(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def json_list(text: str, tool: str) -> list[dict[str, object]]:
    """An iproute2 `-j` answer as its list of objects; ParseError (naming `tool`) when it is not one."""
    try:
        doc = json.loads(text) if text.strip() else []
    except ValueError as e:
        raise ParseError(f"{tool}: not JSON ({e})") from None
    if not isinstance(doc, list):
        raise ParseError(f"{tool}: expected a JSON list")
    return [d for d in doc if isinstance(d, dict)]


@dataclass(frozen=True, slots=True)
class RawPeer:
    """What a veth says about its peer, before namespaces are matched up."""

    ifindex: int | None
    netnsid: int | None
    """None: the peer is in the same namespace."""
    name: str | None
    """Given by iproute2 when the peer is in the same namespace."""


def parse_links(text: str) -> tuple[list[Link], dict[int, RawPeer]]:
    """`ip -j -d addr show` -> links (without ethtool facts yet) and raw veth peer data by ifindex."""
    links: list[Link] = []
    peers: dict[int, RawPeer] = {}
    entries = json_list(text, "ip -j -d addr show")
    index_by_name = {_str(e.get("ifname")): _int(e.get("ifindex")) for e in entries}
    for e in entries:
        ifindex, name = _int(e.get("ifindex")), _str(e.get("ifname"))
        if ifindex is None or name is None:
            continue
        info = _obj(e.get("linkinfo"))
        kind = _str(info.get("info_kind"))
        if kind is None:
            kind = "loopback" if e.get("link_type") == "loopback" else "device"
        vxlan = _vxlan(_obj(info.get("info_data"))) if kind == "vxlan" else None
        geneve = _geneve(_obj(info.get("info_data"))) if kind == "geneve" else None
        if kind == "veth":
            netnsid = _int(e.get("link_netnsid"))
            peer_name = _str(e.get("link")) if netnsid is None else None
            peer_index = _int(e.get("link_index"))
            if peer_index is None and peer_name is not None:
                peer_index = index_by_name.get(peer_name)
            peers[ifindex] = RawPeer(peer_index, netnsid, peer_name)
        addrs = tuple(
            f"{a['local']}/{a['prefixlen']}"
            for a in _list(e.get("addr_info"))
            if isinstance(a, dict) and isinstance(a.get("local"), str) and _int(a.get("prefixlen")) is not None
        )
        links.append(Link(
            ifindex=ifindex, name=name, kind=kind, mtu=_int(e.get("mtu")) or 0,
            state=_str(e.get("operstate")) or "UNKNOWN", master=_str(e.get("master")),
            vxlan=vxlan, addresses=addrs, geneve=geneve,
        ))  # fmt: skip
    return links, peers


def _vxlan(d: dict[str, object]) -> VxlanInfo:
    remote = next((_str(d.get(k)) for k in ("remote", "remote6", "group", "group6") if _str(d.get(k))), None)
    lower = _str(d.get("link"))
    return VxlanInfo(
        vni=_int(d.get("id")) or 0,
        port=_int(d.get("port")) or 0,
        local=_str(d.get("local")) or _str(d.get("local6")),
        remote=remote,
        lower=lower,
        udpcsum=_bool(d.get("udp_csum")),
        df=_str(d.get("df")),
    )


def _geneve(d: dict[str, object]) -> GeneveInfo:
    """iproute2 prints `external` alone for a collect-metadata device in older releases (then returns),
    and `ttl` as a number, or as "inherit" in newer ones; an attribute the kernel did not send is absent."""
    ttl = d.get("ttl")
    return GeneveInfo(
        vni=_int(d.get("id")),
        port=_int(d.get("port")) or 6081,  # IANA's Geneve port, the kernel's default when none is set
        remote=_str(d.get("remote")) or _str(d.get("remote6")),
        udpcsum=_bool(d.get("udp_csum")),
        external=bool(_bool(d.get("external"))),
        df=_str(d.get("df")),
        ttl=str(ttl) if isinstance(ttl, (int, str)) and not isinstance(ttl, bool) else None,
        udp6zerocsumtx=_bool(d.get("udp_zero_csum6_tx")),
        udp6zerocsumrx=_bool(d.get("udp_zero_csum6_rx")),
    )


def parse_routes(text: str) -> list[Route]:
    """`ip -j route show [table all]` (v4 or v6) -> routes; MTU from the route's metrics (`mtu 1400`).

    The `local` table's routes the kernel derives from addresses (`local`, `broadcast`, `anycast`,
    `multicast`, as IPv6's `ff00::/8`) are left out: they say nothing an address does not. Typed
    routes elsewhere are kept with their type (Cilium's `local default dev lo table 2004` sends
    marked packets to its proxy). iproute2 prints `table` for every table but main."""
    out = []
    for r in json_list(text, "ip -j route show"):
        dst = _str(r.get("dst"))
        kind = _str(r.get("type"))
        if dst is None or (r.get("table") == "local" and kind in ADDRESS_ROUTE_TYPES):
            continue
        mtu = None
        for m in _list(r.get("metrics")):
            if isinstance(m, dict) and _int(m.get("mtu")) is not None:
                mtu = _int(m.get("mtu"))
        table = r.get("table")
        out.append(Route(dst=dst, dev=_str(r.get("dev")), via=_str(r.get("gateway")), mtu=mtu,
                         table=str(table) if isinstance(table, (str, int)) and not isinstance(table, bool) else "main",
                         type=None if kind in (None, "unicast") else kind))  # fmt: skip
    return out


#: Route types that only mirror addresses (the kernel adds them with each address).
ADDRESS_ROUTE_TYPES = frozenset({"local", "broadcast", "anycast", "multicast", "nat"})
#: `ip -j rule` keys that are the rule's own bookkeeping or are read into named fields.
_RULE_KNOWN = frozenset({"priority", "src", "srclen", "dst", "dstlen", "fwmark", "fwmask", "iif", "oif", "not", "table",
                         "action", "goto", "suppress_prefixlen", "flags", "protocol", "iif_detached",
                         "oif_detached"})  # fmt: skip


def _prefix(r: dict[str, object], key: str) -> str | None:
    addr = _str(r.get(key))
    if addr is None or addr == "all":
        return None
    plen = _int(r.get(f"{key}len"))
    return f"{addr}/{plen}" if plen is not None and "/" not in addr else addr


def _rule_word(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    return str(value) if isinstance(value, (str, int)) else json.dumps(value, sort_keys=True)


def parse_rules(text: str, family: int) -> list[PolicyRule]:
    """`ip -j [-6] rule show` -> policy rules. iproute2 prints `table` for a lookup, `goto` with the
    target priority, `action` for the rest, `src` `all` for no source, and `not` (null) for an
    inverted one."""
    out = []
    for r in json_list(text, "ip -j rule show"):
        prio = _int(r.get("priority"))
        if prio is None:
            continue
        mark = _rule_word(r.get("fwmark")) or None
        if mark and r.get("fwmask") is not None:
            mark = f"{mark}/{_rule_word(r.get('fwmask'))}"
        table = _rule_word(r.get("table")) or None
        action = "goto" if "goto" in r else _str(r.get("action")) or ("lookup" if table else "nop")
        other = tuple(f"{k}={w}" if (w := _rule_word(v)) else k for k, v in r.items() if k not in _RULE_KNOWN)
        if action == "goto":
            other = (f"goto={_rule_word(r.get('goto'))}", *other)
        out.append(PolicyRule(priority=prio, family=family, action=action, table=table, src=_prefix(r, "src"),
                              dst=_prefix(r, "dst"), fwmark=mark, iif=_str(r.get("iif")), oif=_str(r.get("oif")),
                              invert="not" in r, suppress_prefixlen=_int(r.get("suppress_prefixlen")),
                              other=other))  # fmt: skip
    return out


def parse_features(text: str) -> dict[str, Feature]:
    """`ethtool --json -k DEV` -> features by the names ethtool prints (kernel names kept verbatim)."""
    doc = json_list(text, "ethtool --json -k")
    if not doc:
        raise ParseError("ethtool --json -k: empty output")
    feats = {}
    for name, v in doc[0].items():
        if isinstance(v, dict) and isinstance(v.get("active"), bool):
            feats[name] = Feature(active=v["active"], fixed=v.get("fixed") is True, requested=_bool(v.get("requested")))
    return feats


def parse_features_text(text: str) -> dict[str, Feature]:
    """`ethtool -k DEV` text (ethtool before `--json -k`, as on EL7) -> the same features.

    Lines are `name: on|off`, optionally `[fixed]` or `[requested on|off]`; sub-features are
    indented under their group. `requested` is only known where ethtool prints it.
    """
    feats = {}
    for line in text.splitlines():
        name, sep, rest = line.strip().partition(": ")
        words = rest.split()
        if not sep or not words or words[0] not in ("on", "off"):
            continue
        requested = None
        if "[requested" in rest:
            requested = rest.split("[requested", 1)[1].strip(" ]") == "on"
        feats[name] = Feature(active=words[0] == "on", fixed="[fixed]" in rest, requested=requested)
    if not feats:
        raise ParseError("ethtool -k: no features in the output")
    return feats


def parse_driver(text: str) -> str | None:
    """`ethtool -i DEV` (text: ethtool 6.1 has no JSON for -i) -> the `driver:` value."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "driver":
            return value.strip() or None
    return None


def parse_list_id(text: str) -> dict[int, str]:
    """`ip -j netns list-id` -> {nsid: netns name} (names only for namespaces in /run/netns)."""
    out = {}
    for e in json_list(text, "ip -j netns list-id"):
        nsid, name = _int(e.get("nsid")), _str(e.get("name"))
        if nsid is not None and name is not None:
            out[nsid] = name
    return out


@dataclass(frozen=True, slots=True)
class NsLinks:
    """One namespace's links as collected, with what is needed to find veth peers elsewhere."""

    ns_id: str
    names: tuple[str, ...]
    links: Sequence[Link]
    peers: Mapping[int, RawPeer]
    nsid_names: Mapping[int, str] | None
    """`ip netns list-id` in this namespace (None when it could not be read)."""


def resolve_peers(namespaces: Sequence[NsLinks], ids_by_name: Mapping[str, str] | None = None) -> dict[str, list[Link]]:
    """Fill peer_ifindex/peer_ns/peer_name of every veth.

    A peer in another namespace is known by (link_netnsid, ifindex), and a netnsid means something
    only inside the namespace that assigned it. Named namespaces come from `ip netns list-id`;
    for the others (the host's, those only held by a process) the pair is matched: the peer is a
    veth with that ifindex whose own peer is this link, and every veth of one netnsid must land in
    the same namespace. Ambiguity leaves peer_ns None rather than a guess. `ids_by_name` maps
    every netns name on the host (collected or not) to its namespace id.
    """
    mapping = _nsid_mapping(namespaces, dict(ids_by_name or {}) | {n: ns.ns_id for ns in namespaces for n in ns.names})
    index = {ns.ns_id: {link.ifindex: link for link in ns.links} for ns in namespaces}
    out: dict[str, list[Link]] = {}
    for ns in namespaces:
        resolved = []
        for link in ns.links:
            raw = ns.peers.get(link.ifindex)
            if raw is None:
                resolved.append(link)
                continue
            peer_ns = ns.ns_id if raw.netnsid is None else mapping.get((ns.ns_id, raw.netnsid))
            peer_name = raw.name
            if peer_ns is not None and raw.ifindex is not None and peer_ns in index:
                peer = index[peer_ns].get(raw.ifindex)
                peer_name = peer.name if peer is not None else peer_name
            resolved.append(replace(link, peer_ifindex=raw.ifindex, peer_ns=peer_ns, peer_name=peer_name))
        out[ns.ns_id] = resolved
    return out


def _nsid_mapping(namespaces: Sequence[NsLinks], by_name: Mapping[str, str]) -> dict[tuple[str, int], str | None]:
    """(namespace id, netnsid assigned there) -> the id of the namespace it denotes (None: unknown)."""
    raw = {ns.ns_id: ns.peers for ns in namespaces}
    mapping: dict[tuple[str, int], str | None] = {}
    matched: list[tuple[str, int, list[int]]] = []
    for ns in namespaces:
        groups: dict[int, list[int]] = {}
        for ifindex, peer in ns.peers.items():
            if peer.netnsid is not None:
                groups.setdefault(peer.netnsid, []).append(ifindex)
        for nsid, members in groups.items():
            named = (ns.nsid_names or {}).get(nsid)
            if named is not None:
                mapping[(ns.ns_id, nsid)] = by_name.get(named)
                continue
            candidates: set[str] | None = None
            for ifindex in members:
                want = ns.peers[ifindex].ifindex
                fits = {other.ns_id for other in namespaces if other.ns_id != ns.ns_id
                        and _points_back(raw[other.ns_id].get(want) if want is not None else None, ifindex)}  # fmt: skip
                candidates = fits if candidates is None else candidates & fits
            found = next(iter(candidates)) if candidates and len(candidates) == 1 else None
            mapping[(ns.ns_id, nsid)] = found
            if found is not None:
                matched.append((ns.ns_id, nsid, members))
    # A match must agree with what the other side already knows: if the peer's netnsid denotes a
    # third namespace there, these are two different pairs that happen to mirror each other's ifindexes.
    for ns_id, nsid, members in matched:
        other = mapping[(ns_id, nsid)]
        for ifindex in members:
            want = raw[ns_id][ifindex].ifindex
            back = raw[other].get(want) if other is not None and want is not None else None
            seen = mapping.get((other, back.netnsid)) if other is not None and back is not None and back.netnsid is not None else None
            if seen is not None and seen != ns_id:
                mapping[(ns_id, nsid)] = None
                break
    return mapping


def _points_back(candidate: RawPeer | None, ifindex: int) -> bool:
    return candidate is not None and candidate.netnsid is not None and candidate.ifindex == ifindex
