"""Persistence artefacts: which one fits which interface, their exact text, and writing them under a root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fakes import finding, mtu, tx_off

from badsum.fix.apply import undo
from badsum.fix.journal import APPLIED, UNDONE, Journal, open_entries
from badsum.fix.persist import (
    Environment,
    choose,
    install,
    name_pattern,
    uninstall,
)
from badsum.fix.plan import build_plan
from badsum.host.model import HOST_NS, HostSnapshot, KernelInfo, Link, Namespace
from badsum.rules.model import FixAction


def snap(*links_by_ns: tuple[str, list[Link]]) -> HostSnapshot:
    return HostSnapshot(0.0, "h", KernelInfo("6.1.0", (6, 1, 0)), True, tuple(
        Namespace(ns, i + 1, None if ns == HOST_NS else f"/run/netns/{ns}", links=tuple(links))
        for i, (ns, links) in enumerate(links_by_ns)))


def plan_for(*actions: FixAction):
    return list(build_plan([finding("KB-004", [(a.ns, a.target) for a in actions], list(actions))]).actions)


def test_name_pattern_follows_runtime_generated_names_only() -> None:
    assert name_pattern("veth1a2b3c4") == "veth*"
    assert name_pattern("cali0123abcd456") == "cali*"
    assert name_pattern("lxc9f8e7d6") == "lxc*"
    assert name_pattern("flannel.1") == "flannel.1"
    assert name_pattern("eth0") == "eth0"
    assert name_pattern("vethabcdef") == "vethabcdef"  # no digit: a chosen name, not a generated one


def test_flannel_vxlan_gets_the_documented_udev_rule() -> None:
    s = snap((HOST_NS, [Link(5, "flannel.1", "vxlan", 1450, "up", driver="vxlan")]))
    (p,) = choose(plan_for(tx_off(HOST_NS, "flannel.1", setting="tx-checksum-ip-generic")), s)
    assert p.method == "udev-rule"
    assert p.artefact.path == "/etc/udev/rules.d/90-badsum-flannel.1.rules"
    assert p.artefact.text.splitlines()[-1] == (
        'ACTION=="add", SUBSYSTEM=="net", KERNEL=="flannel.1", RUN+="/usr/sbin/ethtool -K %k tx-checksum-ip-generic off"')
    assert p.artefact.text.startswith("# Written by `badsum fix --persist --apply` for KB-004 on host:flannel.1.")
    # tx-checksum-ip-generic has a .link key (the whole TX checksum group): offered, not written.
    (alt,) = p.alternatives
    assert alt.kind == "systemd-link" and "TransmitChecksumOffload=false" in alt.text and "OriginalName=flannel.1" in alt.text


def test_host_side_veths_match_by_pattern_and_say_how_many_it_covers() -> None:
    links = [Link(i, f"cali{i:04x}beef0{i}", "veth", 1500, "up") for i in range(7, 10)]
    s = snap((HOST_NS, links))
    found = choose(plan_for(*(tx_off(HOST_NS, link.name) for link in links)), s)
    assert [p.method for p in found] == ["udev-rule"] * 3
    assert found[0].artefact.path == "/etc/udev/rules.d/90-badsum-cali-any.rules"
    assert 'KERNEL=="cali*"' in found[0].artefact.text
    assert [p.artefact is None for p in found] == [False, True, True]  # one file covers the three
    assert any("3 on this host now" in lim for lim in found[0].limits)


def test_mtu_on_a_named_tunnel_is_a_link_file_with_the_default_policies() -> None:
    s = snap((HOST_NS, [Link(4, "vxlan0", "vxlan", 1500, "up")]))
    (p,) = choose(plan_for(mtu(HOST_NS, "vxlan0", 1400)), s)
    assert p.method == "systemd-link"
    assert p.artefact.path == "/etc/systemd/network/10-badsum-vxlan0.link"
    text = p.artefact.text
    assert "[Match]\nOriginalName=vxlan0\n" in text and "MTUBytes=1400\n" in text
    assert "MACAddressPolicy=persistent" in text  # what 99-default.link would have given it
    assert p.alternatives[0].text.splitlines()[-1].endswith('RUN+="/usr/sbin/ip link set dev %k mtu 1400"')


def test_a_nic_under_networkmanager_gets_a_dispatcher_script_else_a_udev_rule_on_name_and_driver() -> None:
    s = snap((HOST_NS, [Link(2, "ens192", "device", 1500, "up", driver="vmxnet3")]))
    acts = plan_for(tx_off(HOST_NS, "ens192", setting="tx-udp_tnl-segmentation"),
                    tx_off(HOST_NS, "ens192", setting="tx-udp_tnl-csum-segmentation"))
    (p,) = choose(acts, s, Environment(udev=True, networkmanager=True))
    assert p.method == "nm-dispatcher" and p.artefact.mode == 0o755
    assert p.artefact.path == "/etc/NetworkManager/dispatcher.d/90-badsum-ens192"
    assert p.artefact.text.startswith("#!/bin/sh\n")
    assert '[ "$1" = "ens192" ] || exit 0' in p.artefact.text
    assert 'exec /usr/sbin/ethtool -K "$1" tx-udp_tnl-segmentation off tx-udp_tnl-csum-segmentation off' in p.artefact.text
    (q,) = choose(acts, s, Environment(udev=True, networkmanager=False))
    assert q.method == "udev-rule"
    assert 'NAME=="ens192", DRIVERS=="vmxnet3", RUN+="/usr/sbin/ethtool -K $name tx-udp_tnl-segmentation off' in q.artefact.text


def test_container_side_interface_gets_no_file_and_the_reason() -> None:
    s = snap((HOST_NS, [Link(9, "veth1a2b3c4", "veth", 1500, "up", peer_ns="c1", peer_name="eth0")]),
             ("c1", [Link(2, "eth0", "veth", 1500, "up", peer_ns=HOST_NS, peer_name="veth1a2b3c4")]))
    (p,) = choose(plan_for(tx_off("c1", "eth0")), s)
    assert p.method == "none" and p.artefact is None
    assert "not the host's" in p.fits
    assert any("never see an interface created inside c1" in lim for lim in p.limits)
    assert any("race" in lim for lim in p.limits)  # the veth* rule at creation is offered, with its limits
    assert 'KERNEL=="veth*"' in p.alternatives[0].text


def test_iptables_rules_are_not_persisted_and_say_why() -> None:
    rule = FixAction("iptables-rule", "n1", "/run/netns/n1", "nat", "-I\0KUBE-POSTROUTING\x001\0-j\0RETURN", "")
    acts = plan_for(rule)
    (p,) = choose(acts, None)
    assert p.method == "none" and p.artefact is None and p.target == "nat/KUBE-POSTROUTING"
    assert "rewrites" in p.fits and any("kubernetes#92035" in lim for lim in p.limits)
    assert p.as_dict()["commands"] == [rule.command()]


def test_install_under_a_root_journals_and_undo_removes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    s = snap((HOST_NS, [Link(5, "flannel.1", "vxlan", 1450, "up")]))
    (p,) = choose(plan_for(tx_off(HOST_NS, "flannel.1")), s)
    j = Journal(tmp_path / "j.json")
    status, where, _entry = install(p.artefact, root, j, 10.0, p.rules)
    dest = root / "etc/udev/rules.d/90-badsum-flannel.1.rules"
    assert status == "written" and where == str(dest) and dest.read_text() == p.artefact.text
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    e = j.entries()[0]
    assert e.kind == "file" and e.status == APPLIED and e.target == str(dest) and e.before["existed"] is False
    assert install(p.artefact, root, j, 11.0, p.rules)[0] == "unchanged"
    (r,) = undo(j, open_entries(j.entries()), 12.0, file_undo=uninstall)
    assert r.status == "restored" and not dest.exists()
    assert j.entries()[0].status == UNDONE


def test_install_over_an_existing_file_puts_it_back_and_an_edited_file_is_left(tmp_path: Path) -> None:
    root = tmp_path
    s = snap((HOST_NS, [Link(2, "ens192", "device", 1500, "up", driver="vmxnet3")]))
    (p,) = choose(plan_for(tx_off(HOST_NS, "ens192")), s, Environment(networkmanager=True))
    dest = root / p.artefact.path.lstrip("/")
    dest.parent.mkdir(parents=True)
    dest.write_text("#!/bin/sh\n# the admin's own\n")
    os.chmod(dest, 0o700)
    j = Journal(tmp_path / "j.json")
    install(p.artefact, root, j, 1.0, p.rules)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    (r,) = undo(j, open_entries(j.entries()), 2.0, file_undo=uninstall)
    assert r.status == "restored" and dest.read_text() == "#!/bin/sh\n# the admin's own\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    install(p.artefact, root, j, 3.0, p.rules)
    dest.write_text(dest.read_text() + "# edited by hand\n")
    (r,) = undo(j, open_entries(j.entries()), 4.0, file_undo=uninstall)
    assert r.status == "refused" and "edited since" in r.message and dest.exists()


def test_names_that_cannot_be_written_into_a_rule_are_refused() -> None:
    (p,) = choose(plan_for(tx_off(HOST_NS, 'we"ird')), None)
    assert p.method == "none" and p.artefact is None
