"""collect_snapshot() on real topologies, judged by independent oracles the test runs itself.

Root tests build namespaces named `bs<6 hex>-*` (tests/host/hostkit.py) and one namespace held
only by a process (`unshare --net sleep`), and remove them. Every fact in the snapshot is compared
with what `ip -j -d`, `ethtool --json -k`, `ethtool -i`, `nstat`, `iptables-save`, `nft` and
`sysctl` say. Nothing is ever put in the root namespace; collections are restricted to the test's
namespaces (and the host's) so that other work on the machine cannot disturb them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import need_root, need_tool
from hostkit import Netns, ethtool_features, in_pid_ns, ip_links, nstat, run

from badsum.host import collect as collect_mod
from badsum.host.collect import collect_snapshot
from badsum.host.counters import CSUM_COUNTERS
from badsum.host.links import parse_features_text
from badsum.host.model import HOST_NS, HostSnapshot, Namespace

pytestmark = pytest.mark.root

A_ADDR, B_ADDR, P_ADDR = "198.51.100.1", "198.51.100.2", "203.0.113.1"
NFT_A = """table inet bs_test {
\tchain post {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname "v0" masquerade
\t}
}
"""


@dataclass
class Topo:
    n: Netns
    a: str
    b: str
    held: subprocess.Popen[bytes]

    @property
    def held_id(self) -> str:
        return f"pid:{self.held.pid}"

    def ids(self) -> set[str]:
        return {HOST_NS, self.a, self.b, self.held_id}


def _tools() -> None:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "nsenter", "unshare", "iptables", "nft", "sysctl"):
        need_tool(tool)


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    _tools()
    with Netns() as n:
        a, b = n.add("a", "b")
        held = n.spawn_held(120)
        n.ip("a", "link", "add", "v0", "mtu", "1450", "type", "veth", "peer", "name", "v1", "mtu", "1450", "netns", b)
        n.ip("a", "link", "add", "vp", "type", "veth", "peer", "name", "eth0", "netns", str(held.pid))
        n.ip("a", "link", "add", "va", "type", "veth", "peer", "name", "vb")
        n.ip("a", "link", "add", "br0", "type", "bridge")
        n.ip("a", "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789", "local", A_ADDR,
             "remote", B_ADDR, "dev", "v0", "udpcsum", "df", "set")  # fmt: skip
        n.ip("a", "link", "set", "vx0", "master", "br0")
        n.ip("a", "addr", "add", f"{A_ADDR}/24", "dev", "v0")
        n.ip("b", "addr", "add", f"{B_ADDR}/24", "dev", "v1")
        n.ip("a", "addr", "add", f"{P_ADDR}/25", "dev", "vp")
        for dev in ("v0", "vp", "va", "vb", "br0", "vx0"):
            n.ip("a", "link", "set", dev, "up")
        n.ip("b", "link", "set", "v1", "up")
        in_pid_ns(held.pid, ["ip", "link", "set", "eth0", "up"])
        n.ip("a", "route", "add", "203.0.113.128/25", "via", B_ADDR, "dev", "v0", "mtu", "1400")
        # A second table and the mark that selects it, as Calico and Cilium steer their traffic; and
        # Cilium's proxy table (a typed `local` route outside the local table).
        n.ip("a", "route", "add", "default", "via", B_ADDR, "dev", "v0", "table", "100", "mtu", "1410")
        n.ip("a", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "2004")
        n.ip("a", "rule", "add", "fwmark", "0x4000", "table", "100", "priority", "100")
        n.ip("a", "rule", "add", "fwmark", "0x200/0xf00", "table", "2004", "priority", "9")
        n.ip("a", "rule", "add", "not", "from", "198.51.100.0/24", "iif", "v0", "table", "main", "priority", "110")
        n.ip("a", "-6", "rule", "add", "from", "2001:db8:1::/64", "table", "200", "priority", "200")
        n.exec("a", ["ethtool", "-K", "v0", "tx", "off"])
        n.exec("a", ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        n.exec("a", ["nft", "-f", "-"], input=NFT_A)
        n.exec("b", ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "198.51.100.0/24", "-j", "MASQUERADE"])
        n.exec("b", ["iptables", "-t", "mangle", "-A", "PREROUTING", "-p", "udp", "--dport", "4789", "-j", "MARK",
                     "--set-mark", "7"])  # fmt: skip
        n.exec("b", ["ip6tables", "-t", "nat", "-A", "POSTROUTING", "-s", "2001:db8:42::/64", "-j", "MASQUERADE"])
        for short, dev in (("a", "v0"), ("b", "v1"), ("a", "vp"), ("a", "va"), ("a", "vb"), ("a", "br0")):
            _wait_up(n, short, dev)
        yield Topo(n, a, b, held)


def _wait_up(n: Netns, short: str, dev: str) -> None:
    deadline = time.monotonic() + 10
    while json.loads(n.ip(short, "-j", "link", "show", dev))[0]["operstate"] != "UP":
        assert time.monotonic() < deadline, f"{dev} did not come up"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def snap(topo: Topo) -> HostSnapshot:
    return collect_snapshot(1_700_000_000.0, counter_interval=0.2, namespaces=topo.ids())


def _ns(snap: HostSnapshot, ns_id: str) -> Namespace:
    ns = snap.ns(ns_id)
    assert ns is not None, f"{ns_id} missing from {[n.id for n in snap.namespaces]}"
    return ns


def _oracle_kind(entry: dict) -> str:
    kind = entry.get("linkinfo", {}).get("info_kind")
    return kind or ("loopback" if entry.get("link_type") == "loopback" else "device")


# -- links, features, addresses, routes ---------------------------------------------------------------


def test_links_match_ip_link(topo: Topo, snap: HostSnapshot) -> None:
    for ns_name in (topo.a, topo.b):
        ns = _ns(snap, ns_name)
        assert ns.errors == ()
        oracle = {e["ifname"]: e for e in ip_links(ns_name)}
        assert {link.name for link in ns.links} == set(oracle)
        for link in ns.links:
            e = oracle[link.name]
            assert (link.ifindex, link.kind, link.mtu, link.state, link.master) == (
                e["ifindex"], _oracle_kind(e), e["mtu"], e["operstate"], e.get("master"))  # fmt: skip
    a = _ns(snap, topo.a)
    assert {(link.name, link.kind) for link in a.links} >= {("v0", "veth"), ("br0", "bridge"), ("vx0", "vxlan")}
    assert a.link("v0").mtu == 1450 and a.link("vx0").master == "br0"


def test_vxlan_parameters_match_ip_link(topo: Topo, snap: HostSnapshot) -> None:
    data = next(e for e in ip_links(topo.a) if e["ifname"] == "vx0")["linkinfo"]["info_data"]
    vx = _ns(snap, topo.a).link("vx0").vxlan
    assert vx is not None
    assert (vx.vni, vx.port, vx.local, vx.remote, vx.lower, vx.udpcsum, vx.df) == (
        data["id"], data["port"], data["local"], data["remote"], data["link"], data["udp_csum"], data["df"])  # fmt: skip
    assert (vx.vni, vx.port, vx.udpcsum, vx.df, vx.lower) == (42, 4789, True, "set", "v0")


def test_features_match_ethtool(topo: Topo, snap: HostSnapshot) -> None:
    for ns_name in (topo.a, topo.b):
        for link in _ns(snap, ns_name).links:
            oracle = ethtool_features(ns_name, link.name)
            assert link.features is not None, link.name
            assert set(link.features) == set(oracle)
            for name, f in link.features.items():
                o = oracle[name]
                assert (f.active, f.fixed, f.requested) == (o["active"], o["fixed"] is True, o["requested"]), name
    v0 = _ns(snap, topo.a).link("v0")
    assert v0.feature_on("tx-checksum-ip-generic") is False  # `ethtool -K v0 tx off` in the fixture
    assert v0.feature_on("tx-checksumming") is False and v0.feature_on("rx-checksumming") is True
    assert _ns(snap, topo.b).link("v1").feature_on("tx-checksum-ip-generic") is True


def test_old_ethtool_text_agrees_with_json(topo: Topo) -> None:
    """The text fallback (ethtool without `--json -k`, as on EL7) reads the same active/fixed."""
    for link in ip_links(topo.a):
        text = topo.n.exec("a", ["ethtool", "-k", link["ifname"]])
        got = parse_features_text(text)
        oracle = ethtool_features(topo.a, link["ifname"])
        assert {k: (v.active, v.fixed) for k, v in got.items()} == {k: (o["active"], o["fixed"] is True)
                                                                     for k, o in oracle.items()}  # fmt: skip


def test_driver_matches_ethtool_i(topo: Topo, snap: HostSnapshot) -> None:
    for link in _ns(snap, topo.a).links:
        out = topo.n.exec("a", ["ethtool", "-i", link.name], check=False)
        drivers = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("driver:")]
        assert link.driver == (drivers[0] if drivers else None), link.name
    assert _ns(snap, topo.a).link("v0").driver == "veth"


def test_addresses_and_routes_match_ip(topo: Topo, snap: HostSnapshot) -> None:
    a = _ns(snap, topo.a)
    for e in json.loads(topo.n.ip("a", "-j", "addr", "show")):
        expect = tuple(f"{x['local']}/{x['prefixlen']}" for x in e["addr_info"])
        assert a.link(e["ifname"]).addresses == expect
    assert f"{A_ADDR}/24" in a.link("v0").addresses
    oracle = []
    for fam in ("-4", "-6"):
        for r in json.loads(topo.n.ip("a", "-j", fam, "route", "show") or "[]"):
            mtu = next((m["mtu"] for m in r.get("metrics", []) if "mtu" in m), None)
            oracle.append((r["dst"], r.get("dev"), r.get("gateway"), mtu))
    assert [(r.dst, r.dev, r.via, r.mtu) for r in a.routes] == oracle
    assert ("203.0.113.128/25", "v0", B_ADDR, 1400) in oracle


def test_every_table_and_policy_rule_match_ip(topo: Topo, snap: HostSnapshot) -> None:
    """Routes of every table (the local table's address routes aside) and every policy rule, both
    families, against `ip -j route show table all` and `ip -j rule show`."""
    a = _ns(snap, topo.a)
    main, others = [], []
    for fam in ("-4", "-6"):
        for r in json.loads(topo.n.ip("a", "-j", fam, "route", "show", "table", "all") or "[]"):
            table = str(r.get("table", "main"))
            if table == "local" and r.get("type") in ("local", "broadcast", "anycast", "multicast"):
                continue
            mtu = next((m["mtu"] for m in r.get("metrics", []) if "mtu" in m), None)
            (main if table == "main" else others).append((r["dst"], r.get("dev"), r.get("gateway"), mtu, table))
    assert [(r.dst, r.dev, r.via, r.mtu, r.table) for r in a.routes] == main
    assert [(r.dst, r.dev, r.via, r.mtu, r.table) for r in a.table_routes] == others
    assert ("default", "v0", B_ADDR, 1410, "100") in others
    assert [(r.dst, r.dev, r.type) for r in a.table("2004")] == [("default", "lo", "local")]
    assert a.main_routes() == a.routes  # what the rules and path finding read: unchanged
    oracle = [(fam, r["priority"], str(r.get("table")) if "table" in r else None)
              for fam, f in ((4, "-4"), (6, "-6")) for r in json.loads(topo.n.ip("a", "-j", f, "rule", "show"))]
    assert [(r.family, r.priority, r.table) for r in a.rules] == oracle
    by_prio = {(r.family, r.priority): r for r in a.rules}
    assert by_prio[(4, 100)].fwmark == "0x4000" and by_prio[(4, 100)].table == "100"
    assert by_prio[(4, 9)].fwmark == "0x200/0xf00" and by_prio[(4, 9)].table == "2004"
    assert by_prio[(4, 110)].invert and by_prio[(4, 110)].src == "198.51.100.0/24" and by_prio[(4, 110)].iif == "v0"
    assert by_prio[(6, 200)].src == "2001:db8:1::/64" and by_prio[(6, 200)].table == "200"
    assert [r.table for r in a.rules if r.family == 4 and r.priority in (0, 32766, 32767)] == ["local", "main", "default"]


# -- veth peers and the namespace only a process holds ----------------------------------------------------


def test_veth_peers_named_on_both_ends(topo: Topo, snap: HostSnapshot) -> None:
    a, b, p = _ns(snap, topo.a), _ns(snap, topo.b), _ns(snap, topo.held_id)
    idx = lambda ns, dev: next(e["ifindex"] for e in ip_links(ns) if e["ifname"] == dev)
    p_eth0 = json.loads(in_pid_ns(topo.held.pid, ["ip", "-j", "link", "show", "eth0"]))[0]["ifindex"]
    pairs = [
        (a.link("v0"), (topo.b, "v1", idx(topo.b, "v1"))),
        (b.link("v1"), (topo.a, "v0", idx(topo.a, "v0"))),
        (a.link("vp"), (topo.held_id, "eth0", p_eth0)),
        (p.link("eth0"), (topo.a, "vp", idx(topo.a, "vp"))),
        (a.link("va"), (topo.a, "vb", idx(topo.a, "vb"))),
        (a.link("vb"), (topo.a, "va", idx(topo.a, "va"))),
    ]
    for link, expect in pairs:
        assert link is not None and (link.peer_ns, link.peer_name, link.peer_ifindex) == expect, link


def test_process_held_namespace_found(topo: Topo, snap: HostSnapshot) -> None:
    pid = topo.held.pid
    p = _ns(snap, topo.held_id)
    assert (p.pid, p.command, p.enter, p.names) == (pid, "sleep 120", f"/proc/{pid}/ns/net", ())
    assert p.inode == os.stat(f"/proc/{pid}/ns/net").st_ino
    cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    if not any(len(w) == 64 for w in cgroup.replace("/", " ").replace("-", " ").split()):
        assert p.container_id is None
    assert {link.name for link in p.links} == {"lo", "eth0"} and p.errors == ()


def test_named_namespaces_carry_their_path(topo: Topo, snap: HostSnapshot) -> None:
    a = _ns(snap, topo.a)
    assert (a.enter, a.names, a.inode) == (f"/run/netns/{topo.a}", (topo.a,), os.stat(f"/run/netns/{topo.a}").st_ino)
    host = _ns(snap, HOST_NS)
    assert host.enter is None and host.inode == os.stat("/proc/self/ns/net").st_ino


# -- NAT, sysctls, counters ---------------------------------------------------------------------------


def _save_lines(text: str) -> tuple[str, ...]:
    return tuple(line for line in text.splitlines() if line.strip() and not line.startswith("#"))


def test_nat_rules_match_iptables_save_and_nft(topo: Topo, snap: HostSnapshot) -> None:
    b, a = _ns(snap, topo.b), _ns(snap, topo.a)
    assert b.nat is not None and a.nat is not None
    assert b.nat.iptables_nat == _save_lines(topo.n.exec("b", ["iptables-save", "-t", "nat"]))
    assert b.nat.iptables_mangle == _save_lines(topo.n.exec("b", ["iptables-save", "-t", "mangle"]))
    assert any("MASQUERADE" in line for line in b.nat.iptables_nat)
    assert b.nat.iptables_backend in ("nf_tables", "legacy")
    assert a.nat.nft_ruleset == topo.n.exec("a", ["nft", "list", "ruleset"])
    assert "masquerade" in a.nat.nft_ruleset and a.nat.iptables_nat == ()
    assert b.nat.ip6tables_nat == _save_lines(topo.n.exec("b", ["ip6tables-save", "-t", "nat"]))
    assert any("MASQUERADE" in line and "2001:db8:42::/64" in line for line in b.nat.ip6tables_nat)
    assert a.nat.ip6tables_nat == ()


def test_sysctls_match(topo: Topo, snap: HostSnapshot) -> None:
    for ns_name in (topo.a, topo.b):
        ns = _ns(snap, ns_name)
        for key, value in ns.sysctls.items():
            assert value == topo.n.exec(ns_name.rsplit("-", 1)[1], ["sysctl", "-n", key]).strip()
        assert "net.ipv4.ip_forward" in ns.sysctls
    assert _ns(snap, topo.a).sysctls["net.ipv4.ip_forward"] == "1"
    assert _ns(snap, topo.b).sysctls["net.ipv4.ip_forward"] == "0"


BAD_UDP = r"""
import socket, struct, sys
dst, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
payload = b"badsum"
# UDP header with a checksum that is certainly wrong (the right one is never 0x1234 here).
hdr = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0x1234)
for _ in range(n):
    s.sendto(hdr + payload, (dst, 0))
"""


def test_counters_sampled_twice_and_rising(topo: Topo, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [c for c in CSUM_COUNTERS]
    before = nstat(topo.b, *names)
    real_sleep = collect_mod._sleep

    def sleep_and_send(seconds: float) -> None:
        topo.n.exec("a", [sys.executable, "-c", BAD_UDP, B_ADDR, "3"])
        deadline = time.monotonic() + 5
        while nstat(topo.b, "UdpInCsumErrors")["UdpInCsumErrors"] < before["UdpInCsumErrors"] + 3:
            assert time.monotonic() < deadline, "the bad datagrams never arrived"
            time.sleep(0.02)
        real_sleep(seconds)

    monkeypatch.setattr(collect_mod, "_sleep", sleep_and_send)
    s = collect_snapshot(time.time(), counter_interval=0.3, namespaces={topo.b})
    after = nstat(topo.b, *names)
    c = _ns(s, topo.b).counters
    assert c is not None
    assert c.first == {k: v for k, v in before.items() if k in CSUM_COUNTERS}
    assert c.second == {k: v for k, v in after.items() if k in CSUM_COUNTERS}
    assert c.rising() == {"UdpInCsumErrors": 3}
    assert c.interval_s >= 0.3


# -- whole-snapshot properties --------------------------------------------------------------------------


def test_json_round_trip(snap: HostSnapshot) -> None:
    again = HostSnapshot.from_json(snap.to_json())
    assert again == snap
    assert again.to_json() == snap.to_json()


def test_host_facts(snap: HostSnapshot) -> None:
    assert snap.taken_at == 1_700_000_000.0 and snap.root is True
    assert snap.kernel.release == os.uname().release and snap.hostname == os.uname().nodename
    assert snap.kernel.version[:2] == tuple(int(x) for x in os.uname().release.split(".")[:2])
    assert snap.tools["ip"] and snap.tools["ethtool"] and set(snap.tools) >= {"ip", "ethtool", "iptables", "nft",
                                                                               "ovs-vsctl", "tcpdump"}  # fmt: skip
    host = _ns(snap, HOST_NS)
    assert {link.name for link in host.links} == {e["ifname"] for e in ip_links(None)}


def _state(n: Netns, names: list[str]) -> dict[str, object]:
    """Everything the collector could conceivably touch, read by the tools themselves."""
    out: dict[str, object] = {}
    for ns in [None, *names]:
        ex = (lambda argv, ns=ns: run(["ip", "netns", "exec", ns, *argv] if ns else argv, check=False))
        links = json.loads(ex(["ip", "-j", "link", "show"]))
        out[f"{ns}:link"] = links
        out[f"{ns}:addr"] = ex(["ip", "-j", "addr", "show"])
        out[f"{ns}:route"] = ex(["ip", "-j", "route", "show", "table", "all"])
        out[f"{ns}:rule"] = ex(["ip", "-j", "rule", "show"]) + ex(["ip", "-j", "-6", "rule", "show"])
        out[f"{ns}:nft"] = ex(["nft", "list", "ruleset"])
        out[f"{ns}:sysctl"] = ex(["sysctl", "net.ipv4.ip_forward", "net.ipv4.tcp_syn_linear_timeouts"])
        for link in links:
            out[f"{ns}:{link['ifname']}:features"] = ex(["ethtool", "--json", "-k", link["ifname"]])
    out["netns"] = sorted(os.listdir("/run/netns"))
    out["nstat-history"] = sorted(p.name for p in Path("/tmp").glob(".nstat*"))
    return out


def test_collector_changes_nothing(topo: Topo) -> None:
    before = _state(topo.n, [topo.a, topo.b])
    collect_snapshot(time.time(), counter_interval=0.1, namespaces=topo.ids())
    assert _state(topo.n, [topo.a, topo.b]) == before


def _children() -> set[int]:
    me = os.getpid()
    kids = set()
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            kids |= {int(p) for p in Path(f"/proc/{me}/task/{task}/children").read_text().split()}
        except OSError:
            pass
    return kids


def test_no_fd_thread_or_process_leaks(topo: Topo) -> None:
    collect_snapshot(time.time(), counter_interval=0.0, namespaces=topo.ids())  # warm up imports
    fds, threads, kids = set(os.listdir("/proc/self/fd")), threading.active_count(), _children()
    for _ in range(3):
        collect_snapshot(time.time(), counter_interval=0.0, namespaces=topo.ids())
    assert set(os.listdir("/proc/self/fd")) == fds
    assert threading.active_count() == threads
    assert _children() == kids


# -- failure is data ------------------------------------------------------------------------------------


def test_restricted_to_some_namespaces(topo: Topo) -> None:
    s = collect_snapshot(time.time(), counter_interval=0.0, namespaces={topo.a, "bs-no-such-ns"})
    assert [n.id for n in s.namespaces] == [topo.a]
    assert any("'bs-no-such-ns' not found" in e for e in s.errors)
    v0 = _ns(s, topo.a).link("v0")
    assert (v0.peer_ns, v0.peer_ifindex is not None) == (topo.b, True)  # by name, though b was not read


def test_namespace_vanishing_mid_snapshot_is_an_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _tools()
    with Netns() as n:
        c, d = n.add("c", "d")
        held = n.spawn_held(60)
        real_sleep = collect_mod._sleep

        def vanish(seconds: float) -> None:  # between the two counter samples
            run(["ip", "netns", "delete", c])
            n.stop(held)
            real_sleep(seconds)

        monkeypatch.setattr(collect_mod, "_sleep", vanish)
        s = collect_snapshot(time.time(), counter_interval=0.1, namespaces={c, d, f"pid:{held.pid}"})
    gone_c, gone_p, kept = _ns(s, c), _ns(s, f"pid:{held.pid}"), _ns(s, d)
    for gone in (gone_c, gone_p):
        assert gone.counters is None
        assert any("vanished" in e for e in gone.errors), gone.errors
        assert {link.name for link in gone.links} == {"lo"}  # read before it went: kept
    assert kept.errors == () and kept.counters is not None


def test_without_root_in_process(topo: Topo, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.geteuid() patched to a user id in this (root) process: the collector must not try what
    needs root, and must say what it could not see."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    s = collect_snapshot(time.time(), counter_interval=0.0, namespaces=topo.ids())
    assert s.root is False and any(e.startswith("not root") for e in s.errors)
    host = _ns(s, HOST_NS)
    assert {link.name for link in host.links} == {e["ifname"] for e in ip_links(None)}
    assert host.nat is None and any("NAT rules unknown" in e for e in host.errors)
    for ns_id in (topo.a, topo.b, topo.held_id):
        ns = _ns(s, ns_id)
        assert ns.links == () and ns.counters is None and ns.nat is None
        assert any("cannot enter" in e for e in ns.errors)


def test_without_root_for_real(topo: Topo) -> None:
    """A real unprivileged run (uid nobody, via setpriv) with the system Python."""
    setpriv, py = shutil.which("setpriv"), "/usr/bin/python3"
    if setpriv is None or not os.access(py, os.X_OK):
        pytest.skip("needs setpriv and /usr/bin/python3")
    src = str(Path(collect_mod.__file__).parents[2])
    code = ("import sys; from badsum.host.collect import collect_snapshot as c; "
            f"sys.stdout.write(c(0.0, counter_interval=0.0, namespaces=set({sorted(topo.ids())!r})).to_json())")  # fmt: skip
    cp = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--", "env", f"PYTHONPATH={src}",
                         py, "-c", code], capture_output=True, text=True, timeout=60, cwd="/", check=False)  # fmt: skip
    if cp.returncode != 0 and ("ModuleNotFoundError" in cp.stderr or "Permission denied" in cp.stderr):
        pytest.skip(f"the system Python cannot run badsum as nobody here: {cp.stderr.strip()[-200:]}")
    assert cp.returncode == 0, cp.stderr
    s = HostSnapshot.from_json(cp.stdout)
    assert s.root is False
    host = _ns(s, HOST_NS)
    assert {link.name for link in host.links} == {e["ifname"] for e in ip_links(None)}
    assert host.nat is None
    for ns_id in (topo.a, topo.b):  # named ones are listed even without root, but not read
        assert any("cannot enter" in e for e in _ns(s, ns_id).errors)
    # pid:<held> belongs to root: nobody cannot even see which namespace it is in.
    assert s.ns(topo.held_id) is None and any("could not be read" in e for e in s.errors)


def test_root_without_cap_sys_admin(topo: Topo) -> None:
    """Root in a restricted container: uid 0 but no CAP_SYS_ADMIN (setpriv drops it for real)."""
    setpriv = need_tool("setpriv")
    code = ("import sys; from badsum.host.collect import collect_snapshot as c; "
            f"sys.stdout.write(c(0.0, counter_interval=0.0, namespaces=set({sorted(topo.ids())!r})).to_json())")  # fmt: skip
    cp = subprocess.run([setpriv, "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--", sys.executable, "-c", code],
                        capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    s = HostSnapshot.from_json(cp.stdout)
    assert s.root is True and any("CAP_SYS_ADMIN" in e for e in s.errors)
    assert {link.name for link in _ns(s, HOST_NS).links} == {e["ifname"] for e in ip_links(None)}
    for ns_id in (topo.a, topo.b, topo.held_id):
        ns = _ns(s, ns_id)
        assert ns.links == () and any("no CAP_SYS_ADMIN" in e for e in ns.errors)
