"""The snapshot's records: a Namespace is the NsRef it was found as, plus what was read inside it."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

from badsum.host import netns
from badsum.host.model import HOST_NS, HostSnapshot, KernelInfo, Link, Namespace, NsRef, Target

IDENTITY = ("id", "inode", "enter", "names", "pid", "command", "container_id")
CID = "ab" * 32
FIXTURES = Path(__file__).resolve().parents[1] / "rules" / "fixtures"


def test_the_identity_is_declared_once() -> None:
    assert tuple(f.name for f in fields(NsRef)) == IDENTITY
    assert tuple(f.name for f in fields(Namespace))[: len(IDENTITY)] == IDENTITY  # same positional order
    assert not set(IDENTITY) & set(Namespace.__annotations__), "Namespace repeats NsRef's fields"
    assert issubclass(Namespace, NsRef) and netns.NsRef is NsRef


def test_a_namespace_keeps_what_it_was_found_as() -> None:
    ref = NsRef("pid:42", 4026532001, "/proc/42/ns/net", ("web",), 42, "vpp -c /etc/vpp.conf", CID)
    ns = replace(Namespace.found(ref), links=(Link(2, "eth0", "veth", 1500, "up"),), errors=("x",))
    assert tuple(getattr(ns, f) for f in IDENTITY) == tuple(getattr(ref, f) for f in IDENTITY)
    assert ns.target == ref.target == Target("pid:42", "/proc/42/ns/net", 4026532001)
    assert ns.link("eth0") is not None and ns.errors == ("x",)


def test_json_keeps_the_namespace_flat() -> None:
    ns = Namespace("web", 4026532001, "/run/netns/web", ("web",), 7, "sleep 1", CID)
    snap = HostSnapshot(0.0, "node", KernelInfo("6.1.0", (6, 1, 0)), True, (Namespace(HOST_NS, 1, None), ns))
    raw = json.loads(snap.to_json())["namespaces"][1]
    assert {k: raw[k] for k in IDENTITY} == {"id": "web", "inode": 4026532001, "enter": "/run/netns/web",
                                             "names": ["web"], "pid": 7, "command": "sleep 1", "container_id": CID}  # fmt: skip
    assert HostSnapshot.from_json(snap.to_json()) == snap


def test_a_namespace_saved_without_the_optional_identity_fields_loads() -> None:
    text = json.dumps({"schema_version": 1, "taken_at": 0.0, "hostname": "n", "root": False,
                       "kernel": {"release": "6.1.0", "version": [6, 1, 0]},
                       "namespaces": [{"id": "host", "inode": 1, "enter": None}]})  # fmt: skip
    (ns,) = HostSnapshot.from_json(text).namespaces
    assert ns == Namespace(HOST_NS, 1, None) and ns.names == () and ns.pid is None and ns.links == ()


def test_recorded_snapshots_read_and_write_back_the_same_json() -> None:
    paths = [p for p in sorted(FIXTURES.rglob("*.json")) if not p.name.endswith(".expect.json")]
    assert len(paths) > 20
    for path in paths:
        text = path.read_text()
        assert json.loads(HostSnapshot.from_json(text).to_json()) == json.loads(text), path


def test_owners_kernel_log_and_cni_survive_the_json_round_trip() -> None:
    from badsum.host.model import CniSighting, KernelLog, KernelLogEvent, NsOwner

    log = KernelLog("/dev/kmsg", (KernelLogEvent("hw-csum-failure", "eth0", 12, 3, "eth0: hw csum failure"),),
                    {"hw-csum-failure": 1}, 900, False, None)  # fmt: skip
    snap = HostSnapshot(0.0, "node", KernelInfo("6.1.0", (6, 1, 0)), True, (Namespace(HOST_NS, 1, None),),
                        owners={"pid:7": NsOwner("web-1", runtime="docker")}, kernel_log=log,
                        cni=(CniSighting("flannel", "cni", "vxlan", ("host:flannel.1",), 1, ("flanneld",)),))  # fmt: skip
    again = HostSnapshot.from_json(snap.to_json())
    assert again == snap
    assert again.owners["pid:7"].label() == "docker web-1" and again.kernel_log.devices("hw-csum-failure") == {"eth0": 1}
    assert NsOwner("app", "web-0", "shop", "crictl").label() == "pod shop/web-0 (container app)"


def test_routes_of_every_table_and_policy_rules_survive_the_json_round_trip() -> None:
    from badsum.host.model import PolicyRule, Route

    ns = replace(Namespace("a", 2, "/run/netns/a"),
                 routes=(Route("default", "eth0", "192.0.2.1", None, "main"),),
                 table_routes=(Route("default", "vxlan.calico", None, 1450, "100"),
                               Route("198.51.100.0/24", None, None, None, "200", "blackhole")),
                 rules=(PolicyRule(0, 4, table="local"),
                        PolicyRule(100, 4, table="100", fwmark="0x4000/0xff00"),
                        PolicyRule(101, 6, action="goto", src="2001:db8::/64", iif="eth0", invert=True,
                                   other=("goto=32766", "ipproto=udp")),
                        PolicyRule(32766, 4, table="main", suppress_prefixlen=0)))  # fmt: skip
    snap = HostSnapshot(0.0, "node", KernelInfo("6.1.0", (6, 1, 0)), True, (ns,))
    again = HostSnapshot.from_json(snap.to_json())
    assert again == snap
    (a,) = again.namespaces
    assert [r.dst for r in a.table("100")] == ["default"] and a.main_routes() == a.routes
    assert [r.table for r in a.all_routes()] == ["main", "100", "200"]


def test_a_snapshot_saved_before_tables_and_rules_were_read_loads_as_the_main_table() -> None:
    """Old snapshots have neither `table` on a route nor `table_routes`/`rules`: their routes were
    the main table's, and stay so for the rules (`main_routes`)."""
    text = json.dumps({"schema_version": 1, "taken_at": 0.0, "hostname": "n", "root": True,
                       "kernel": {"release": "6.1.0", "version": [6, 1, 0]},
                       "namespaces": [{"id": "host", "inode": 1, "enter": None,
                                       "routes": [{"dst": "default", "dev": "eth0", "via": "192.0.2.1", "mtu": None}]}]})  # fmt: skip
    (ns,) = HostSnapshot.from_json(text).namespaces
    assert ns.routes[0].table is None and ns.main_routes() == ns.routes and ns.table("main") == ns.routes
    assert ns.table_routes == () and ns.rules == ()
