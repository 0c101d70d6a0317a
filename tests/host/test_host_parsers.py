"""The collector's parsers, on recorded tool output (no root, no kernel): what each tool prints
becomes typed records, and odd or missing fields give None, never an exception."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from badsum.host import counters, kernel, links, nat, netns, ovs
from badsum.host.commands import Output, Target, run
from badsum.host.links import NsLinks, RawPeer
from badsum.host.model import Feature, Link, Route, VxlanInfo

# -- kernel ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "version", "distro", "build"),
    [
        ("3.10.0-514.16.1.el7.x86_64", (3, 10, 0), "el7", 514),
        ("3.10.0-514.el7", (3, 10, 0), "el7", 514),
        ("3.10.0-327.el7.x86_64+debug", (3, 10, 0), "el7", 327),
        ("3.10.0-1160.119.1.el7.x86_64", (3, 10, 0), "el7", 1160),
        ("4.18.0-305.el8.x86_64", (4, 18, 0), "el8", 305),
        ("4.18.0-553.5.1.el8_10.x86_64", (4, 18, 0), "el8", 553),
        ("5.14.0-70.13.1.el9_0.x86_64", (5, 14, 0), "el9", 70),
        ("5.4.17-2136.300.7.el8uek.x86_64", (5, 4, 17), "el8uek", 2136),  # UEK: never compared as RHEL
        ("5.15.0-91-generic", (5, 15, 0), None, None),  # Ubuntu
        ("6.1.0-18-amd64", (6, 1, 0), None, None),  # Debian
        ("6.18.44-fc-v595", (6, 18, 44), None, None),
        ("4.4", (4, 4, 0), None, None),
        ("garbage", (0, 0, 0), None, None),
    ],
)
def test_parse_release(release: str, version: tuple[int, int, int], distro: str | None, build: int | None) -> None:
    k = kernel.parse_release(release)
    assert (k.release, k.version, k.distro, k.distro_build) == (release, version, distro, build)


def test_tool_version_missing_and_odd() -> None:
    assert kernel.tool_version("ip", lambda argv: Output(None, "ip: not installed")) is None
    assert kernel.tool_version("nft", lambda argv: Output("nftables v1.0.6 (Lester Gooch #5)\n")) == "1.0.6"
    assert kernel.tool_version("iptables", lambda argv: Output("iptables v1.8.9 (nf_tables)\n")) == "1.8.9 (nf_tables)"
    assert kernel.tool_version("ovs-vsctl", lambda argv: Output("ovs-vsctl (Open vSwitch) 3.1.0\nDB Schema 8.3.1\n")) == "3.1.0"
    assert kernel.tool_version("tcpdump", lambda argv: Output("something else\n")) == "something else"
    assert kernel.tool_version("ethtool", lambda argv: Output(None, "ethtool --version: timed out")).startswith("unknown")


# -- namespaces ------------------------------------------------------------------------------------

CID = "4f2a0c9b" * 8


@pytest.mark.parametrize(
    "cgroup",
    [
        f"0::/system.slice/docker-{CID}.scope\n",
        f"12:memory:/docker/{CID}\n11:cpu:/docker/{CID}\n",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-{CID}.scope\n",
        f"0::/kubepods/besteffort/pod1b2c3d4e-0000-1111-2222-333344445555/{CID}\n",
        f"0::/kubepods.slice/kubepods-pod12.slice/crio-{CID}.scope\n",
        f"0::/machine.slice/libpod-{CID}.scope/container\n",
    ],
)
def test_container_id_from_cgroup(cgroup: str) -> None:
    assert netns.container_id(cgroup) == CID


@pytest.mark.parametrize("cgroup", ["0::/\n", "0::/user.slice/user-0.slice/session-3.scope\n",
                                    "0::/system.slice/" + "a" * 63 + ".scope\n", "0::/x/" + "b" * 65 + "\n"])  # fmt: skip
def test_no_container_id(cgroup: str) -> None:
    assert netns.container_id(cgroup) is None


def test_ns_inode() -> None:
    assert netns.ns_inode("net:[4026531840]") == 4026531840
    assert netns.ns_inode("mnt:[4026531840]") is None


# -- links -----------------------------------------------------------------------------------------

IP_ADDR = json.dumps([
    {"ifindex": 1, "ifname": "lo", "mtu": 65536, "operstate": "UNKNOWN", "link_type": "loopback",
     "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifindex": 2, "link_index": 7, "ifname": "v0", "mtu": 1450, "operstate": "UP", "link_type": "ether",
     "link_netnsid": 3, "linkinfo": {"info_kind": "veth"}, "master": "br0",
     "addr_info": [{"family": "inet", "local": "198.51.100.1", "prefixlen": 24},
                   {"family": "inet6", "local": "2001:db8::1", "prefixlen": 64}]},
    {"ifindex": 3, "ifname": "vx0", "mtu": 1450, "operstate": "DOWN", "link_type": "ether",
     "linkinfo": {"info_kind": "vxlan", "info_data": {"id": 42, "remote": "198.51.100.2", "local": "198.51.100.1",
                                                      "link": "v0", "port": 4789, "udp_csum": True, "df": "set"}}},
    {"ifindex": 4, "ifname": "va", "link": "vb", "mtu": 1500, "operstate": "UP", "linkinfo": {"info_kind": "veth"}},
    {"ifindex": 5, "ifname": "vb", "link": "va", "mtu": 1500, "operstate": "UP", "linkinfo": {"info_kind": "veth"}},
    {"ifindex": 6, "ifname": "eth0", "mtu": 9000, "operstate": "UP", "link_type": "ether"},
    {"ifindex": 7, "ifname": "vx6", "linkinfo": {"info_kind": "vxlan", "info_data": {"id": 7, "group6": "ff05::100"}}},
    {"ifname": "no-index"},
    "not a dict",
])  # fmt: skip


def test_parse_links() -> None:
    got, peers = links.parse_links(IP_ADDR)
    by = {link.name: link for link in got}
    assert by["lo"] == Link(1, "lo", "loopback", 65536, "UNKNOWN", addresses=("127.0.0.1/8",))
    assert by["v0"].kind == "veth" and by["v0"].master == "br0" and by["v0"].mtu == 1450
    assert by["v0"].addresses == ("198.51.100.1/24", "2001:db8::1/64")
    assert by["vx0"].vxlan == VxlanInfo(42, 4789, "198.51.100.1", "198.51.100.2", "v0", True, "set")
    assert by["vx6"].vxlan == VxlanInfo(7, 0, None, "ff05::100", None, None, None)
    assert by["vx6"].mtu == 0 and by["vx6"].state == "UNKNOWN"  # missing fields do not raise
    assert by["eth0"].kind == "device"
    assert peers == {2: RawPeer(7, 3, None), 4: RawPeer(5, None, "vb"), 5: RawPeer(4, None, "va")}
    assert "no-index" not in by


@pytest.mark.parametrize("bad", ["{", '{"a": 1}', "nope"])
def test_parse_links_rejects_non_list(bad: str) -> None:
    with pytest.raises(links.ParseError):
        links.parse_links(bad)


def test_parse_routes() -> None:
    text = json.dumps([
        {"dst": "default", "gateway": "198.51.100.254", "dev": "v0"},
        {"dst": "203.0.113.0/24", "gateway": "198.51.100.2", "dev": "v0", "metrics": [{"mtu": 1400}]},
        {"dst": "198.51.100.0/24", "dev": "v0", "protocol": "kernel", "metrics": [{"hoplimit": 3}]},
        {"gateway": "no dst"},
    ])  # fmt: skip
    assert links.parse_routes(text) == [Route("default", "v0", "198.51.100.254", None, "main"),
                                        Route("203.0.113.0/24", "v0", "198.51.100.2", 1400, "main"),
                                        Route("198.51.100.0/24", "v0", None, None, "main")]  # fmt: skip
    assert links.parse_routes("") == []


def test_parse_features_keeps_kernel_names() -> None:
    text = json.dumps([{
        "ifname": "v0",
        "rx-checksumming": {"active": True, "fixed": False, "requested": True},
        "tx-checksumming": {"active": True, "fixed": None, "requested": None},
        "tx-checksum-ip-generic": {"active": True, "fixed": False, "requested": True},
        "tx-udp_tnl-segmentation": {"active": False, "fixed": True, "requested": False},
        "odd": "string",
    }])  # fmt: skip
    f = links.parse_features(text)
    assert f == {
        "rx-checksumming": Feature(True, False, True),
        "tx-checksumming": Feature(True, False, None),
        "tx-checksum-ip-generic": Feature(True, False, True),
        "tx-udp_tnl-segmentation": Feature(False, True, False),
    }
    with pytest.raises(links.ParseError):
        links.parse_features("[]")


def test_parse_driver_and_list_id() -> None:
    assert links.parse_driver("driver: virtio_net\nversion: 1.0.0\nbus-info: 0000:00:03.0\n") == "virtio_net"
    assert links.parse_driver("version: 1\n") is None
    assert links.parse_list_id('[{"nsid":0,"name":"a"},{"nsid":1},{"name":"x"}]') == {0: "a"}


def _veth(ifindex: int, name: str) -> Link:
    return Link(ifindex, name, "veth", 1500, "UP")


def test_resolve_peers_by_name_and_by_matching() -> None:
    # host(unnamed) <-> c1 (process-held), host <-> a (named), a:x <-> a:y in the same namespace.
    host = NsLinks("host", (), [_veth(10, "h1"), _veth(11, "h2")],
                   {10: RawPeer(2, 0, None), 11: RawPeer(2, 1, None)}, {1: "a"})  # fmt: skip
    c1 = NsLinks("pid:99", (), [_veth(2, "eth0")], {2: RawPeer(10, 0, None)}, {})
    a = NsLinks("a", ("a",), [_veth(2, "eth0"), _veth(3, "x"), _veth(4, "y")],
                {2: RawPeer(11, 0, None), 3: RawPeer(4, None, "y"), 4: RawPeer(3, None, "x")}, {})  # fmt: skip
    out = links.resolve_peers([host, c1, a])
    get = {(ns, link.name): (link.peer_ns, link.peer_name, link.peer_ifindex) for ns, ls in out.items() for link in ls}
    assert get[("host", "h1")] == ("pid:99", "eth0", 2)
    assert get[("host", "h2")] == ("a", "eth0", 2)
    assert get[("pid:99", "eth0")] == ("host", "h1", 10)
    assert get[("a", "eth0")] == ("host", "h2", 11)
    assert get[("a", "x")] == ("a", "y", 4)


def test_resolve_peers_ambiguous_is_none() -> None:
    # host:10's peer is ifindex 2 behind netnsid 0; two unnamed namespaces have an eth0 (2) whose
    # peer is ifindex 10: nothing tells which one is host:10's, so it stays unknown.
    host = NsLinks("host", (), [_veth(10, "h1")], {10: RawPeer(2, 0, None)}, {})
    c1 = NsLinks("pid:1", (), [_veth(2, "eth0")], {2: RawPeer(10, 0, None)}, {})
    c2 = NsLinks("pid:2", (), [_veth(2, "eth0")], {2: RawPeer(10, 5, None)}, {})
    out = links.resolve_peers([host, c1, c2])
    assert out["host"][0].peer_ns is None and out["host"][0].peer_ifindex == 2 and out["host"][0].peer_name is None


def test_resolve_peers_mirror_image_is_rejected() -> None:
    # a:2 <-> w:10 (w named, known to a by name); x:10 <-> z:2 with z not collected. x:10 looks like
    # a:2's peer by ifindexes alone, but a already knows its netnsid 4 is w, so x's match is dropped.
    a = NsLinks("a", ("a",), [_veth(2, "eth0")], {2: RawPeer(10, 4, None)}, {4: "w"})
    x = NsLinks("pid:7", (), [_veth(10, "h1")], {10: RawPeer(2, 0, None)}, {})
    out = links.resolve_peers([a, x], ids_by_name={"w": "w"})
    assert out["a"][0].peer_ns == "w"
    assert out["pid:7"][0].peer_ns is None


def test_resolve_peers_named_outside_collected_set() -> None:
    a = NsLinks("a", ("a",), [_veth(2, "eth0")], {2: RawPeer(9, 4, None)}, {4: "b"})
    out = links.resolve_peers([a], ids_by_name={"b": "b"})
    assert (out["a"][0].peer_ns, out["a"][0].peer_name, out["a"][0].peer_ifindex) == ("b", None, 9)


# -- counters, sysctls -----------------------------------------------------------------------------


def test_parse_nstat_and_sysctl(tmp_path: Path) -> None:
    text = json.dumps({"kernel": {"TcpInCsumErrors": 3, "UdpInCsumErrors": 0, "IpInReceives": 9}})
    assert counters.parse_nstat(text) == {"TcpInCsumErrors": 3, "UdpInCsumErrors": 0}
    with pytest.raises(ValueError):
        counters.parse_nstat("{")
    out = "net.netfilter.nf_conntrack_checksum = 1\nnet.ipv4.ip_forward = 0\nother = 3\n"
    assert counters.parse_sysctl(out) == {"net.netfilter.nf_conntrack_checksum": "1", "net.ipv4.ip_forward": "0"}
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "ip_forward").write_text("1\n")
    assert counters.read_own_sysctls(str(tmp_path)) == {"net.ipv4.ip_forward": "1"}


# -- NAT -------------------------------------------------------------------------------------------

SAVE = """# Generated by iptables-nft-save v1.8.9 on Thu Nov 20 10:00:00 2026
*mangle
:PREROUTING ACCEPT [0:0]
COMMIT
# Completed on Thu Nov 20 10:00:00 2026
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-POSTROUTING - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
COMMIT
"""


def test_split_tables_and_backend() -> None:
    t = nat.split_tables(SAVE)
    assert t["mangle"] == ("*mangle", ":PREROUTING ACCEPT [0:0]", "COMMIT")
    assert t["nat"][-2:] == ("-A KUBE-POSTROUTING -j MASQUERADE --random-fully", "COMMIT")
    assert nat.backend_of("iptables-save v1.8.9 (legacy)") == "legacy"
    assert nat.backend_of("iptables-save v1.8.9 (nf_tables)") == "nf_tables"
    assert nat.backend_of("iptables-save v1.4.21") is None


SAVE6 = """# Generated by ip6tables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 2001:db8:42::/64 -j MASQUERADE
COMMIT
"""


def test_collect_nat_reads_both_backends() -> None:
    seen: list[list[str]] = []

    def fake(argv: list[str]) -> Output:
        seen.append(argv)
        return {"iptables-save": Output(SAVE), "iptables-legacy-save": Output(""), "ip6tables-save": Output(SAVE6),
                "ip6tables-legacy-save": Output(""), "nft": Output("table ip nat {\n}\n")}[argv[0]]  # fmt: skip

    rules, errors = nat.collect_nat(fake, backend="nf_tables", legacy_installed=True, nft_loadable=True)
    assert errors == [] and rules.iptables_backend == "nf_tables"
    assert rules.ip6tables_nat == ("*nat", ":POSTROUTING ACCEPT [0:0]",
                                   "-A POSTROUTING -s 2001:db8:42::/64 -j MASQUERADE", "COMMIT")
    assert rules.ip6tables_legacy_nat == ()
    assert rules.iptables_nat == nat.split_tables(SAVE)["nat"] and rules.iptables_legacy_nat == ()
    assert rules.nft_ruleset == "table ip nat {\n}\n"
    # Never `-t nat`: that would make the legacy backend load iptable_nat.
    assert all("-t" not in argv for argv in seen)


def test_collect_nat_failures_are_errors_and_none() -> None:
    rules, errors = nat.collect_nat(lambda argv: Output(None, f"{argv[0]}: Permission denied (you must be root)"),
                                    backend="legacy", legacy_installed=True, nft_loadable=True)  # fmt: skip
    assert rules.iptables_nat is None and rules.nft_ruleset is None and rules.iptables_legacy_nat is None
    assert rules.ip6tables_nat is None
    assert len(errors) == 3 and any("IPv6 NAT" in e for e in errors)
    rules, errors = nat.collect_nat(lambda argv: Output(None, f"{argv[0]}: not installed"), backend=None,
                                    legacy_installed=False, nft_loadable=True)  # fmt: skip
    assert rules.nft_ruleset is None and rules.iptables_nat is None


def test_nft_not_asked_when_it_would_load_a_module(tmp_path: Path) -> None:
    (tmp_path / "modules").write_text("veth 40960 0 - Live 0x0\nip_tables 36864 0 - Live 0x0\n")
    assert nat.module_absent("nf_tables", proc=str(tmp_path), sys=str(tmp_path / "sys"))
    assert not nat.module_absent("ip_tables", proc=str(tmp_path), sys=str(tmp_path / "sys"))
    assert not nat.module_absent("nf_tables", proc=str(tmp_path / "none"))  # no module support at all
    asked: list[str] = []
    rules, _ = nat.collect_nat(lambda argv: asked.append(argv[0]) or Output(""), backend="nf_tables",
                               legacy_installed=False, nft_loadable=False)  # fmt: skip
    assert asked == [] and rules.nft_ruleset == "" and rules.iptables_nat == ()


# -- OVS -------------------------------------------------------------------------------------------

# Recorded from a badsum lab's private OVS (ovs-vsctl 3.1.0, --format=json, the four list commands).
BRIDGES = ('{"data":[[["uuid","b1"],"br0","netdev",["set",[["uuid","p1"],["uuid","p2"],["uuid","p3"]]]],'
           '[["uuid","b2"],"br-int","",["uuid","p4"]]],"headings":["_uuid","name","datapath_type","ports"]}')
PORTS = ('{"data":[[["uuid","p1"],"br0",["uuid","i1"]],[["uuid","p2"],"c1-veth",["uuid","i2"]],'
         '[["uuid","p3"],"bond0",["set",[["uuid","i3"],["uuid","i4"]]]],[["uuid","p4"],"vx",["uuid","i5"]]],'
         '"headings":["_uuid","name","interfaces"]}')
IFACES = ('{"data":[[["uuid","i1"],"br0","internal"],[["uuid","i2"],"c1-veth",""],[["uuid","i3"],"eth1",""],'
          '[["uuid","i4"],"eth2","dpdk"],[["uuid","i5"],"vx","vxlan"]],"headings":["_uuid","name","type"]}')
OPEN_VSWITCH = ('{"data":[[["set",[]],["map",[["userspace-tso-enable","false"],["n-handler-threads","2"]]]]],'
                '"headings":["ovs_version","other_config"]}')
VSCTL = f"{BRIDGES}\n{PORTS}\n{IFACES}\n{OPEN_VSWITCH}\n"  # fmt: skip


def test_ovs_build() -> None:
    bridges, other, version = ovs.build(VSCTL)
    assert version is None and other == {"userspace-tso-enable": "false", "n-handler-threads": "2"}
    br0, brint = sorted(bridges, key=lambda b: b.name, reverse=True)
    assert (br0.name, br0.datapath_type) == ("br0", "netdev")
    assert [(p.name, p.type) for p in br0.ports] == [("br0", "internal"), ("c1-veth", "system"),
                                                     ("eth1", "system"), ("eth2", "dpdk")]  # fmt: skip
    assert (brint.name, brint.datapath_type, [(p.name, p.type) for p in brint.ports]) == ("br-int", "system", [("vx", "vxlan")])


def test_ovs_cmdline() -> None:
    db, ctl = ovs.parse_cmdline(["ovs-vswitchd", "unix:/run/x/db.sock", "--unixctl=/run/x/v.ctl", "--disable-system"], 7)
    assert (db, ctl) == ("unix:/run/x/db.sock", "/run/x/v.ctl")
    db, ctl = ovs.parse_cmdline(["ovs-vswitchd", "--pidfile", "--detach"], 42)
    assert (db, ctl) == ("unix:/var/run/openvswitch/db.sock", "/var/run/openvswitch/ovs-vswitchd.42.ctl")


def test_ovs_unreadable_database_is_an_error() -> None:
    info = ovs.read_instance("unix:/nonexistent/db.sock", 5, None, "host",
                             lambda argv, target: Output(None, "ovs-vsctl: database connection failed"))  # fmt: skip
    assert info.running is True and info.bridges == () and "connection failed" in (info.error or "")
    info = ovs.read_instance("ssl:1.2.3.4:6640", None, None, "host", lambda argv, target: Output(""))
    assert info.running is False and "not read" in (info.error or "")


# -- commands --------------------------------------------------------------------------------------


def test_run_missing_tool_and_timeout() -> None:
    assert run(["badsum-no-such-tool-xyz"]).error == "badsum-no-such-tool-xyz: not installed"
    out = run(["sleep", "5"], timeout=0.2)
    assert out.stdout is None and "timed out" in (out.error or "")
    out = run(["sh", "-c", "echo oops >&2; exit 3"])
    assert out.stdout is None and out.error == "sh -c echo oops >&2; exit 3: oops"


def test_run_in_vanished_namespace(tmp_path: Path) -> None:
    out = run(["true"], Target("gone", str(tmp_path / "nope"), 1))
    assert out.vanished and out.stdout is None and "vanished" in (out.error or "")


def test_run_refuses_a_path_that_names_another_namespace() -> None:
    # /proc/self/ns/net has some inode; claiming another inode must not enter it.
    real = os.stat("/proc/self/ns/net").st_ino
    out = run(["true"], Target("pid:1", "/proc/self/ns/net", real + 1))
    assert out.vanished and "another namespace" in (out.error or "")


def test_parse_features_text() -> None:
    text = ("Features for flannel.1:\nrx-checksumming: on\ntx-checksumming: on\n\ttx-checksum-ipv4: off [fixed]\n"
            "\ttx-checksum-ip-generic: on\nudp-fragmentation-offload: off [requested on]\n"
            "tx-udp_tnl-segmentation: off [fixed]\nhighdma: on [fixed]\n")  # fmt: skip
    f = links.parse_features_text(text)
    assert f["tx-checksum-ipv4"] == Feature(False, True, None)
    assert f["tx-checksum-ip-generic"] == Feature(True, False, None)
    assert f["udp-fragmentation-offload"] == Feature(False, False, True)
    assert f["tx-udp_tnl-segmentation"] == Feature(False, True, None)
    assert "Features for flannel.1" not in f and len(f) == 7
    with pytest.raises(links.ParseError):
        links.parse_features_text("Cannot get device features: No such device\n")


def test_stale_netns_name_is_an_error_not_a_namespace(tmp_path: Path) -> None:
    (tmp_path / "leftover").write_text("")  # what a crashed runtime leaves: a file, no nsfs mount
    d = netns.discover(named_dirs=((str(tmp_path), ""),))
    assert [n.id for n in d.namespaces if n.id == "leftover"] == []
    assert any("leftover is not a mounted namespace" in e for e in d.errors)
    assert d.namespaces[0].id == "host" and d.namespaces[0].enter is None
    assert d.namespaces[0].inode == os.stat("/proc/self/ns/net").st_ino


def test_parse_geneve_devices() -> None:
    """Geneve parameters from iproute2's JSON (this kernel cannot create Geneve devices: recorded shapes)."""
    from badsum.host.model import GeneveInfo

    text = (Path(__file__).resolve().parents[1] / "data" / "ip" / "geneve-ip-j-d-addr.json").read_text()
    got, _ = links.parse_links(text)
    by = {link.name: link for link in got}
    assert by["genev_sys_6081"].kind == "geneve" and by["genev_sys_6081"].master == "ovs-system"
    assert by["genev_sys_6081"].geneve == GeneveInfo(None, 6081, None, None, external=True)
    assert by["gnv0"].geneve == GeneveInfo(100, 6081, "198.51.100.2", False, df="unset", ttl="0",
                                           udp6zerocsumtx=False, udp6zerocsumrx=False)  # fmt: skip
    assert by["gnv0"].addresses == ("203.0.113.1/24",)
    assert by["gnv6"].geneve == GeneveInfo(7, 6082, "2001:db8::2", True, df="inherit", ttl="inherit",
                                           udp6zerocsumtx=True, udp6zerocsumrx=True)  # fmt: skip
    odd = by["gnv-odd"].geneve
    assert odd is not None and odd.vni is None and odd.port == 6081 and odd.ttl is None  # wrong types do not raise
    assert all(link.vxlan is None for link in got)


def test_geneve_survives_the_snapshot_round_trip() -> None:
    from badsum.host.model import HostSnapshot

    text = (Path(__file__).resolve().parents[1] / "data" / "ip" / "geneve-ip-j-d-addr.json").read_text()
    got, _ = links.parse_links(text)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rules"))
    from rule_fixtures import host, snapshot

    snap = snapshot("6.1.0", host(tuple(got)))
    again = HostSnapshot.from_json(snap.to_json())
    assert again.ns("host").link("gnv0").geneve == snap.ns("host").link("gnv0").geneve
