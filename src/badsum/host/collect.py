"""collect_snapshot(): every namespace, its links, features, routes (every table), policy rules, counters, NAT and sysctls, every
Open vSwitch, the kernel and the tools, in one frozen HostSnapshot.

Read-only, and it never fails as a whole: a namespace it cannot enter or that vanishes, a missing
tool, no root, all end up in `errors` with the fact left None. Namespaces are read in parallel by
a small thread pool of subprocesses (argv lists with timeouts); the checksum counters are sampled
in every namespace first, everything else is read while the interval runs, and after one sleep
the counters are sampled again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from badsum.host import cni, commands, counters, cri, kernel, kernel_log, links, nat, ovs, tc
from badsum.host.commands import Output
from badsum.host.links import RawPeer
from badsum.host.model import (
    HOST_NS,
    CounterSample,
    HostSnapshot,
    Link,
    Namespace,
    NatRules,
    NsOwner,
    PolicyRule,
    Route,
)
from badsum.host.netns import Discovery, NsRef, discover

WORKERS = 8
#: Routes kept per namespace (both families, every table, the main table first): a router with a
#: full BGP table has a million; what the rules need is the few the namespace's own traffic uses.
MAX_ROUTES = 5000
#: Policy rules kept per namespace (both families).
MAX_RULES = 1000
#: iptables-save on a node with thousands of kube-proxy rules takes seconds.
NAT_TIMEOUT = 30.0
T = TypeVar("T")


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _now() -> float:
    return time.monotonic()


@dataclass(slots=True)
class _Facts:
    """What one namespace gave so far (mutable while collecting; frozen into Namespace at the end)."""

    ref: NsRef
    enterable: bool
    errors: list[str] = field(default_factory=list)
    vanished: bool = False
    links: list[Link] | None = None
    peers: dict[int, RawPeer] = field(default_factory=dict)
    nsid_names: dict[int, str] | None = None
    routes: list[Route] | None = None
    table_routes: list[Route] = field(default_factory=list)
    rules: list[PolicyRule] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    nat: NatRules | None = None
    first: tuple[float, dict[str, int]] | None = None
    second: tuple[float, dict[str, int]] | None = None

    def run(self, argv: list[str], timeout: float = commands.DEFAULT_TIMEOUT) -> Output:
        if self.vanished:
            return Output(None, "namespace vanished")
        out = commands.run(argv, self.ref.target, timeout=timeout)
        if out.vanished:
            self.vanished = True
            self.errors.append(f"{out.error}: during the snapshot; what it could not read is unknown")
        return out


@dataclass(frozen=True, slots=True)
class _HostWide:
    """Facts that decide how namespaces are read, found once."""

    root: bool
    backend: str | None
    legacy_installed: bool
    nft_loadable: bool
    ethtool_json: bool
    """`ethtool --json -k` works (ethtool >= 5.x); older ones (EL7) are read as text."""
    tc: bool = False
    """iproute2's tc is installed (the tc programs of each link are read with it)."""


def collect_snapshot(now: float, *, counter_interval: float = 1.0, namespaces: set[str] | None = None) -> HostSnapshot:
    """Snapshot this host. `now` is the Unix time to record; `namespaces` restricts the namespaces read
    to those ids (doctor's `--namespace`); counters are sampled `counter_interval` seconds apart."""
    root = os.geteuid() == 0
    host_errors: list[str] = []
    try:
        found = discover()
    except Exception as e:  # noqa: BLE001 - the snapshot never fails as a whole
        own = os.stat("/proc/self/ns/net").st_ino if os.path.exists("/proc/self/ns/net") else 0
        found = Discovery((NsRef(HOST_NS, own, None),), (f"internal error finding namespaces: {type(e).__name__}: {e}",))
    host_errors += found.errors
    refs = list(found.namespaces)
    if namespaces is not None:
        wanted, known = set(namespaces), {r.id for r in refs}
        host_errors += [f"namespace {n!r} not found" for n in sorted(wanted - known)]
        refs = [r for r in refs if r.id in wanted]
    can_enter = root and _has_cap_sys_admin()
    if not root:
        host_errors.append("not root: other namespaces cannot be entered, and iptables/nft rules and "
                           "Open vSwitch databases may be unreadable; those facts are unknown")  # fmt: skip
    elif not can_enter:
        host_errors.append("root without CAP_SYS_ADMIN (a restricted container?): other namespaces cannot be "
                           "entered; their facts are unknown")  # fmt: skip
    facts = [_Facts(r, enterable=can_enter or r.enter is None) for r in refs]
    for f in facts:
        if not f.enterable:
            why = "not root" if not root else "no CAP_SYS_ADMIN"
            f.errors.append(f"{why}: cannot enter this namespace; its links, routes, counters and rules are unknown")
    live = [f for f in facts if f.enterable]
    hw = _HostWide(
        root=root,
        backend=nat.backend_of(commands.run(["iptables-save", "-V"]).stdout or ""),
        legacy_installed=commands.which("iptables-legacy-save") is not None,
        nft_loadable=not nat.module_absent("nf_tables"),
        ethtool_json=commands.run(["ethtool", "--json", "-k", "lo"]).stdout is not None,
        tc=commands.which("tc") is not None,
    )
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="badsum-snapshot") as pool:
        _each(pool, live, lambda f: _sample(f, "first"), host_errors)
        tools_f = {name: pool.submit(kernel.tool_version, name) for name in kernel.TOOLS}
        ns_by_inode = {r.inode: r.target for r in found.namespaces}
        ovs_f = pool.submit(ovs.collect_ovs, lambda argv, target: commands.run(argv, target), ns_by_inode)
        _each(pool, live, lambda f: _read_namespace(f, hw), host_errors)
        if commands.which("ethtool") is None:
            host_errors.append("ethtool is not installed: features and drivers of every link are unknown")
        else:
            _each(pool, [(f, link) for f in live if f.links for link in f.links],
                  lambda item: _read_ethtool(*item, json=hw.ethtool_json), host_errors)  # fmt: skip
        started = [f.first[0] for f in live if f.first is not None]
        if started:
            _sleep(max(0.0, max(started) + counter_interval - _now()))
        _each(pool, live, lambda f: _sample(f, "second"), host_errors)
        tools = {name: _result(fut, host_errors, f"{name} version") for name, fut in tools_f.items()}
        ovs_infos = _result(ovs_f, host_errors, "Open vSwitch") or ()

    read = [f for f in facts if f.links is not None]
    try:
        resolved = links.resolve_peers(
            [links.NsLinks(f.ref.id, f.ref.names, f.links or [], f.peers, f.nsid_names) for f in read],
            ids_by_name={n: r.id for r in found.namespaces for n in r.names},
        )
    except Exception as e:  # noqa: BLE001 - the snapshot never fails as a whole
        host_errors.append(f"internal error resolving veth peers: {type(e).__name__}: {e}")
        resolved = {f.ref.id: list(f.links or []) for f in read}
    frozen = tuple(_freeze(f, resolved.get(f.ref.id)) for f in facts)
    snap = HostSnapshot(
        taken_at=now,
        hostname=os.uname().nodename,
        kernel=kernel.parse_release(os.uname().release),
        root=root,
        namespaces=frozen,
        ovs=tuple(ovs_infos),
        tools=tools,
        errors=tuple(host_errors),
        owners=_owners(frozen, host_errors),
        kernel_log=kernel_log.read_kernel_log(),
    )
    try:
        return replace(snap, cni=cni.detect(snap, cni.process_names()), errors=tuple(host_errors))
    except Exception as e:  # noqa: BLE001 - the snapshot never fails as a whole
        return replace(snap, errors=(*host_errors, f"internal error telling the CNI: {type(e).__name__}: {e}"))


def _owners(namespaces: tuple[Namespace, ...], errors: list[str]) -> dict[str, NsOwner]:
    """The runtime's names for the namespaces it holds (crictl, else its state files; host/cri.py)."""
    try:
        naming = cri.CriNamer().name(namespaces)
    except Exception as e:  # noqa: BLE001 - names are a courtesy: the snapshot never fails for them
        errors.append(f"container names unknown: {type(e).__name__}: {e}")
        return {}
    return {ns_id: NsOwner(o.container, o.pod, o.pod_namespace, o.runtime)
            for ns_id, o in naming.owners.items() if o.runtime and (o.container or o.pod)}  # fmt: skip


def _has_cap_sys_admin(status: str = "/proc/self/status") -> bool:
    """setns() into a network namespace needs CAP_SYS_ADMIN (root in a container may lack it)."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 21 & 1)  # CAP_SYS_ADMIN = 21
    except (OSError, ValueError, IndexError):
        pass
    return True  # cannot tell: try, and let a failure be an error line


def _each(pool: ThreadPoolExecutor, items: list[T], fn: Callable[[T], None], errors: list[str]) -> None:
    """Run fn over items in the pool and wait; a bug in one item is an error line, not a crash."""
    futures = [pool.submit(fn, item) for item in items]
    for item, fut in zip(items, futures):
        _result(fut, errors, f"reading {_label(item)}")


def _label(item: object) -> str:
    if isinstance(item, _Facts):
        return f"namespace {item.ref.id}"
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], _Facts) and isinstance(item[1], Link):
        return f"{item[0].ref.id}:{item[1].name}"
    return repr(item)


def _result(fut: Future[T], errors: list[str], what: str) -> T | None:
    try:
        return fut.result()
    except Exception as e:  # noqa: BLE001 - the snapshot never fails as a whole
        errors.append(f"internal error {what}: {type(e).__name__}: {e}")
        return None


def _sample(f: _Facts, which: str) -> None:
    out = f.run(counters.NSTAT_ARGV)
    if out.stdout is None:
        if not f.vanished:
            f.errors.append(f"checksum counters unknown ({which} sample): {out.error}")
        return
    try:
        value = (_now(), counters.parse_nstat(out.stdout))
    except ValueError as e:
        f.errors.append(f"checksum counters unknown: nstat output not understood ({e})")
        return
    if which == "first":
        f.first = value
    else:
        f.second = value


def _read_namespace(f: _Facts, hw: _HostWide) -> None:
    out = f.run(["ip", "-j", "-d", "addr", "show"])
    if out.stdout is not None:
        try:
            f.links, f.peers = links.parse_links(out.stdout)
        except links.ParseError as e:
            f.errors.append(f"links unknown: {e}")
    elif not f.vanished:
        f.errors.append(f"links unknown: {out.error}")
    # After the link dump: dumping a veth makes the kernel assign the netnsid of its peer.
    out = f.run(["ip", "-j", "netns", "list-id"])
    if out.stdout is not None:
        try:
            f.nsid_names = links.parse_list_id(out.stdout)
        except links.ParseError as e:
            f.errors.append(f"netns ids unknown: {e}")
    _read_routes(f)
    _read_rules(f)
    if f.links and hw.tc:
        _read_tc_bpf(f)
    if f.ref.enter is None:
        f.sysctls = counters.read_own_sysctls()
    else:
        out = f.run(counters.SYSCTL_ARGV)
        if out.stdout is not None:
            f.sysctls = counters.parse_sysctl(out.stdout)
        elif not f.vanished:
            f.errors.append(f"sysctls unknown: {out.error}")
    if not hw.root:
        f.errors.append("not root: NAT rules unknown (iptables-save and nft need root)")
        return
    rules, errors = nat.collect_nat(lambda argv: f.run(argv, timeout=NAT_TIMEOUT), backend=hw.backend,
                                    legacy_installed=hw.legacy_installed, nft_loadable=hw.nft_loadable)  # fmt: skip
    if not f.vanished:
        f.nat = rules
        f.errors += errors


def _read_tc_bpf(f: _Facts) -> None:
    """The eBPF programs on each link's tc hooks (a lab emulation of an old kernel bug is one)."""
    assert f.links is not None
    found, errors = tc.collect_tc_bpf(lambda argv: f.run(argv), [link.name for link in f.links])
    if not f.vanished:
        f.errors += errors
    if found is not None:
        f.links = [replace(link, tc_bpf=found.get(link.name)) for link in f.links]


def _read_routes(f: _Facts) -> None:
    """Every table, IPv4 and IPv6 (the MTU of a route is what PMTU problems turn on); the main table
    goes to `routes` as before, the rest to `table_routes`; bounded by MAX_ROUTES, main first."""
    main: list[Route] = []
    others: list[Route] = []
    # `-4` is needed: with `table all`, iproute2 6.1 dumps every family unless told one.
    for argv in (["ip", "-j", "-4", "route", "show", "table", "all"], ["ip", "-j", "-6", "route", "show", "table", "all"]):
        out = f.run(argv)
        if out.stdout is None:
            if not f.vanished:
                f.errors.append(f"routes unknown: {out.error}")
            return
        try:
            found = links.parse_routes(out.stdout)
        except links.ParseError as e:
            f.errors.append(f"routes unknown: {e}")
            return
        main += [r for r in found if r.table == "main"]
        others += [r for r in found if r.table != "main"]
    total = len(main) + len(others)
    if total > MAX_ROUTES:
        f.errors.append(f"routes cut: {MAX_ROUTES} of {total} kept (the main table first); the rest are not in the snapshot")
        others = others[: max(0, MAX_ROUTES - len(main))]
        main = main[:MAX_ROUTES]
    f.routes, f.table_routes = main, others


def _read_rules(f: _Facts) -> None:
    """Policy rules, IPv4 then IPv6 (`ip -j rule show`): which table a packet looks up."""
    rules: list[PolicyRule] = []
    for family, argv in ((4, ["ip", "-j", "-4", "rule", "show"]), (6, ["ip", "-j", "-6", "rule", "show"])):
        out = f.run(argv)
        if out.stdout is None:
            if not f.vanished:
                f.errors.append(f"policy rules unknown (IPv{family}): {out.error}")
            continue
        try:
            rules += links.parse_rules(out.stdout, family)
        except links.ParseError as e:
            f.errors.append(f"policy rules unknown (IPv{family}): {e}")
    if len(rules) > MAX_RULES:
        f.errors.append(f"policy rules cut: {MAX_RULES} of {len(rules)} kept; the rest are not in the snapshot")
        rules = rules[:MAX_RULES]
    f.rules = rules


def _read_ethtool(f: _Facts, link: Link, *, json: bool) -> None:
    out = f.run(["ethtool", "--json", "-k", link.name] if json else ["ethtool", "-k", link.name])
    feats = None
    if out.stdout is not None:
        try:
            feats = links.parse_features(out.stdout) if json else links.parse_features_text(out.stdout)
        except links.ParseError as e:
            f.errors.append(f"{link.name}: features unknown: {e}")
    elif not f.vanished:
        f.errors.append(f"{link.name}: features unknown: {out.error}")
    out = f.run(["ethtool", "-i", link.name])
    driver = links.parse_driver(out.stdout) if out.stdout is not None else None
    if out.stdout is None and not f.vanished and "Operation not supported" not in (out.error or ""):
        f.errors.append(f"{link.name}: driver unknown: {out.error}")  # (lo has no driver: not an error)
    assert f.links is not None
    i = next(i for i, x in enumerate(f.links) if x.ifindex == link.ifindex)
    f.links[i] = replace(f.links[i], features=feats, driver=driver)  # one writer per link: no lock needed


def _freeze(f: _Facts, resolved: list[Link] | None) -> Namespace:
    sample = None
    if f.first is not None and f.second is not None:
        sample = CounterSample(first=f.first[1], second=f.second[1], interval_s=round(f.second[0] - f.first[0], 3))
    return replace(Namespace.found(f.ref), links=tuple(resolved or ()), routes=tuple(f.routes or ()), counters=sample,
                   nat=f.nat, sysctls=f.sysctls, errors=tuple(f.errors), table_routes=tuple(f.table_routes),
                   rules=tuple(f.rules))  # fmt: skip


__all__ = ["collect_snapshot"]
