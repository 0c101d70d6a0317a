"""`--persist` for sysctls (one sysctl.d drop-in owned by badsum, merged) and for every other kind of
action a plan can hold: persisted, or `none` with the reason. Pure: a temporary root, no host state."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from fakes import finding, mtu

from badsum.fix import sysctl_d
from badsum.fix.apply import undo
from badsum.fix.journal import Journal, open_entries
from badsum.fix.persist import Environment, choose, install, uncovered, uninstall
from badsum.fix.plan import build_plan
from badsum.fix.session import read_sysctl_files
from badsum.host.model import HOST_NS, HostSnapshot, KernelInfo, Link, Namespace
from badsum.rules.model import FixAction

DROPIN = "etc/sysctl.d/90-badsum.conf"


def sysctl(ns: str, key: str, value: str) -> FixAction:
    return FixAction("sysctl", ns, None if ns == HOST_NS else f"/run/netns/{ns}", key, key, value)


def feature(ns: str, dev: str, name: str) -> FixAction:
    return FixAction("ethtool-feature", ns, None if ns == HOST_NS else f"/run/netns/{ns}", dev, name, "off")


def plan_for(*actions: FixAction, rule: str = "KB-011"):
    return list(build_plan([finding(rule, [(a.ns, a.target) for a in actions], list(actions))]).actions)


def env_at(root: Path) -> Environment:
    return Environment(sysctl_files=read_sysctl_files(root))


HOST = HostSnapshot(0.0, "h", KernelInfo("6.1.0", (6, 1, 0)), True, (
    Namespace(HOST_NS, 1, None, links=(
        Link(2, "ens192", "device", 1500, "up", driver="vmxnet3"),
        Link(3, "tunl0", "ipip", 1480, "up"),
        Link(4, "vxlan.calico", "vxlan", 1450, "up"),
        Link(9, "veth1a2b3c4", "veth", 1500, "up", peer_ns="c1", peer_name="eth0"))),
    Namespace("c1", 2, "/run/netns/c1", links=(Link(2, "eth0", "veth", 1500, "up", peer_ns=HOST_NS),))))


def test_every_action_kind_is_persisted_or_says_why() -> None:
    """The fix actions the rules give (LRO on a vmxnet3 NIC, UDP GRO forwarding on a veth, TX checksum
    on tunl0, an MTU, sysctls here and in a container, an iptables rule): each in exactly one
    Persistence; the ones nothing on the host can keep say why."""
    acts = plan_for(
        feature(HOST_NS, "ens192", "lro"), feature(HOST_NS, "vxlan.calico", "large-receive-offload"),
        feature(HOST_NS, "veth1a2b3c4", "rx-udp-gro-forwarding"), feature(HOST_NS, "tunl0", "tx-checksumming"),
        feature("c1", "eth0", "rx-udp-gro-forwarding"), mtu(HOST_NS, "vxlan.calico", 1400),
        sysctl(HOST_NS, "net.ipv4.conf.all.rp_filter", "2"), sysctl("c1", "net.ipv6.conf.all.forwarding", "1"),
        FixAction("iptables-rule", HOST_NS, None, "nat", "-I\0POSTROUTING\x001\0-j\0RETURN", ""))
    keep = choose(acts, HOST)
    assert uncovered(acts, keep) == []
    named = [a.command() for p in keep for a in p.actions]
    assert sorted(named) == sorted(p.command for p in acts)  # each exactly once
    by = {(p.ns, p.target): p for p in keep}
    assert by[(HOST_NS, "ens192")].artefact.text.splitlines()[-1] == (
        'ACTION=="add", SUBSYSTEM=="net", NAME=="ens192", DRIVERS=="vmxnet3", RUN+="/usr/sbin/ethtool -K $name lro off"')
    assert 'KERNEL=="tunl0", RUN+="/usr/sbin/ethtool -K %k tx-checksumming off"' in by[(HOST_NS, "tunl0")].artefact.text
    veth = by[(HOST_NS, "veth1a2b3c4")]
    assert 'KERNEL=="veth*", RUN+="/usr/sbin/ethtool -K %k rx-udp-gro-forwarding off"' in veth.artefact.text
    assert veth.alternatives == ()  # no .link key for rx-udp-gro-forwarding
    calico = by[(HOST_NS, "vxlan.calico")]
    assert calico.method == "udev-rule" and "large-receive-offload off" in calico.artefact.text
    assert any("LargeReceiveOffload=false" in a.text and "MTUBytes=1400" in a.text for a in calico.alternatives)
    host_sysctl = by[(HOST_NS, "sysctl")]
    assert host_sysctl.method == "sysctl.d" and host_sysctl.artefact.path == "/etc/sysctl.d/90-badsum.conf"
    for key in [("c1", "eth0"), ("c1", "sysctl"), (HOST_NS, "nat/POSTROUTING")]:
        assert by[key].method == "none" and by[key].artefact is None and by[key].fits, key
    assert "host's namespace only" in by[("c1", "sysctl")].fits
    assert any("tuning" in lim and "--sysctl" in lim for lim in by[("c1", "sysctl")].limits)


def test_host_sysctls_make_one_dropin_with_the_rules_named() -> None:
    acts = plan_for(sysctl(HOST_NS, "net.ipv4.conf.all.rp_filter", "2"), sysctl(HOST_NS, "net.core.rmem_max", "4194304"))
    (p,) = choose(acts, None)
    assert p.artefact.kind == "sysctl.d" and p.artefact.mode == 0o644
    assert p.artefact.text == sysctl_d.HEADER + (
        "\n# badsum: KB-011\nnet.ipv4.conf.all.rp_filter = 2\n\n# badsum: KB-011\nnet.core.rmem_max = 4194304\n")
    assert [s.key for s in p.artefact.settings] == ["net.ipv4.conf.all.rp_filter", "net.core.rmem_max"]


def test_merge_updates_badsums_own_line_and_touches_nothing_else() -> None:
    existing = (sysctl_d.HEADER + "\n# badsum: KB-012\nnet/ipv4/conf/all/rp_filter = 1\n"
                "\n# the admin's\nvm.swappiness = 10\n; a semicolon comment\n")  # fmt: skip
    text = sysctl_d.merge(existing, [sysctl_d.Setting("net.ipv4.conf.all.rp_filter", "2", ("KB-011",)),
                                     sysctl_d.Setting("net.ipv4.ip_forward", "1", ("KB-011",))])  # fmt: skip
    assert text == (sysctl_d.HEADER + "\n# badsum: KB-012, KB-011\nnet.ipv4.conf.all.rp_filter = 2\n"
                    "\n# the admin's\nvm.swappiness = 10\n; a semicolon comment\n"
                    "\n# badsum: KB-011\nnet.ipv4.ip_forward = 1\n")  # fmt: skip


def test_keys_follow_sysctl_d_separator_rules() -> None:
    assert sysctl_d.normalize("net.ipv4.conf.flannel/1.rp_filter") == "net/ipv4/conf/flannel.1/rp_filter"
    assert sysctl_d.normalize("net/ipv4/conf/flannel.1/rp_filter") == "net/ipv4/conf/flannel.1/rp_filter"
    assert sysctl_d.normalize("-net.core.rmem_max") == "net/core/rmem_max"
    assert sysctl_d.interface_of("net.ipv4.conf.flannel/1.rp_filter") == "flannel.1"
    assert sysctl_d.interface_of("net.ipv4.conf.all.rp_filter") is None
    assert sysctl_d.value_in("a.b = 1\n# a.b = 3\na/b=2\n", "a.b") == "2"  # the last assignment wins


@pytest.mark.parametrize(("key", "value"), [("net.core.x\nkernel.y", "1"), ("net.core.*", "1"), ("net.core.x", "1\nkernel.y = 2"),
                                            ("net.core.x", ""), ("net.core.x", "1 # c")])  # fmt: skip
def test_a_line_that_cannot_be_written_safely_is_refused(key: str, value: str) -> None:
    (p,) = choose(plan_for(sysctl(HOST_NS, key, value)), None)
    assert p.method == "none" and p.artefact is None and "safely" in p.fits


def test_a_multi_word_value_is_kept() -> None:
    (p,) = choose(plan_for(sysctl(HOST_NS, "net.ipv4.tcp_rmem", "4096 131072 6291456")), None)
    assert p.method == "sysctl.d" and "net.ipv4.tcp_rmem = 4096 131072 6291456\n" in p.artefact.text


def test_a_later_file_that_sets_the_key_otherwise_is_named(tmp_path: Path) -> None:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / "usr/lib/sysctl.d").mkdir(parents=True)
    (tmp_path / "etc/sysctl.d/99-sysctl.conf").write_text("net.ipv4.conf.all.rp_filter=0\n")
    (tmp_path / "etc/sysctl.d/10-early.conf").write_text("net.ipv4.conf.all.rp_filter=1\n")  # read before ours: harmless
    (tmp_path / "usr/lib/sysctl.d/99-sysctl.conf").write_text("net.ipv4.conf.all.rp_filter=5\n")  # masked by /etc's
    (tmp_path / "etc/sysctl.d/50-not-conf.txt").write_text("net.ipv4.conf.all.rp_filter=7\n")
    files = read_sysctl_files(tmp_path)
    assert sorted(files) == ["/etc/sysctl.d/10-early.conf", "/etc/sysctl.d/99-sysctl.conf"]
    (p,) = choose(plan_for(sysctl(HOST_NS, "net.ipv4.conf.all.rp_filter", "2")), None, Environment(sysctl_files=files))
    wins = [lim for lim in p.limits if "wins at boot" in lim]
    assert wins == [("/etc/sysctl.d/99-sysctl.conf sets net.ipv4.conf.all.rp_filter = 0 and is read after "
                     "/etc/sysctl.d/90-badsum.conf: it wins at boot; change it there")]  # fmt: skip


def test_install_new_dropin_then_undo_removes_it(tmp_path: Path) -> None:
    root, j = tmp_path / "root", Journal(tmp_path / "j.json")
    (p,) = choose(plan_for(sysctl(HOST_NS, "net.ipv4.ip_forward", "1")), None, env_at(root))
    status, where, _entry = install(p.artefact, root, j, 1.0, p.rules)
    dest = root / DROPIN
    assert status == "written" and where == str(dest) and dest.read_text() == p.artefact.text
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    e = j.entries()[0]
    assert e.kind == "file" and e.after["merge"] == {"written": {"net.ipv4.ip_forward": "1"}, "previous": {"net.ipv4.ip_forward": None}}
    assert install(p.artefact, root, j, 2.0, p.rules)[0] == "unchanged"
    (r,) = undo(j, open_entries(j.entries()), 3.0, file_undo=uninstall)
    assert r.status == "restored" and not dest.exists()


def test_install_merges_into_what_is_there_at_write_time_and_undo_puts_it_back(tmp_path: Path) -> None:
    root, j = tmp_path, Journal(tmp_path / "j.json")
    dest = root / DROPIN
    dest.parent.mkdir(parents=True)
    before = sysctl_d.HEADER + "\n# badsum: KB-012\nnet.ipv4.ip_forward = 0\n"
    dest.write_text(before)
    (p,) = choose(plan_for(sysctl(HOST_NS, "net.ipv4.ip_forward", "1")), None, env_at(root))
    dest.write_text(before + "\n# added between plan and apply\nvm.swappiness = 10\n")
    install(p.artefact, root, j, 1.0, p.rules)
    assert dest.read_text() == (sysctl_d.HEADER + "\n# badsum: KB-012, KB-011\nnet.ipv4.ip_forward = 1\n"
                                "\n# added between plan and apply\nvm.swappiness = 10\n")  # fmt: skip
    (r,) = undo(j, open_entries(j.entries()), 2.0, file_undo=uninstall)
    assert r.status == "restored"
    assert dest.read_text() == before + "\n# added between plan and apply\nvm.swappiness = 10\n"


def test_undo_after_an_edit_elsewhere_takes_only_badsums_lines_out(tmp_path: Path) -> None:
    root, j = tmp_path, Journal(tmp_path / "j.json")
    (p,) = choose(plan_for(sysctl(HOST_NS, "net.ipv4.ip_forward", "1"), sysctl(HOST_NS, "net.core.rmem_max", "4194304")),
                  None, env_at(root))  # fmt: skip
    install(p.artefact, root, j, 1.0, p.rules)
    dest = root / DROPIN
    dest.write_text(dest.read_text() + "\n# the admin's\nvm.swappiness = 10\n")
    (r,) = undo(j, open_entries(j.entries()), 2.0, file_undo=uninstall)
    assert r.status == "restored" and "taken back out" in r.message
    assert dest.read_text() == sysctl_d.HEADER + "\n# the admin's\nvm.swappiness = 10\n"


def test_undo_leaves_a_key_someone_changed_since(tmp_path: Path) -> None:
    root, j = tmp_path, Journal(tmp_path / "j.json")
    (p,) = choose(plan_for(sysctl(HOST_NS, "net.ipv4.ip_forward", "1")), None, env_at(root))
    install(p.artefact, root, j, 1.0, p.rules)
    dest = root / DROPIN
    edited = dest.read_text().replace("net.ipv4.ip_forward = 1", "net.ipv4.ip_forward = 0")
    dest.write_text(edited)
    (r,) = undo(j, open_entries(j.entries()), 2.0, file_undo=uninstall)
    assert r.status == "refused" and "net.ipv4.ip_forward changed since" in r.message
    assert dest.read_text() == edited


def test_two_runs_then_undo_of_both_leaves_no_file(tmp_path: Path) -> None:
    root, j = tmp_path, Journal(tmp_path / "j.json")
    (p,) = choose(plan_for(sysctl(HOST_NS, "net.ipv4.ip_forward", "1")), None, env_at(root))
    install(p.artefact, root, j, 1.0, p.rules)
    (q,) = choose(plan_for(sysctl(HOST_NS, "net.core.rmem_max", "4194304"), rule="KB-012"), None, env_at(root))
    assert "net.ipv4.ip_forward = 1" in q.artefact.text  # the first run's line is kept
    install(q.artefact, root, j, 2.0, q.rules)
    # Only the first run's rule: its line comes out, the second's stays.
    (r,) = undo(j, open_entries(j.entries(), {"KB-011"}), 3.0, file_undo=uninstall)
    assert r.status == "restored"
    text = (root / DROPIN).read_text()
    assert "ip_forward" not in text and "net.core.rmem_max = 4194304" in text
    (r,) = undo(j, open_entries(j.entries()), 4.0, file_undo=uninstall)
    assert r.status == "restored" and not (root / DROPIN).exists()


def test_reading_the_sysctl_d_tree_is_bounded(tmp_path: Path) -> None:
    d = tmp_path / "etc/sysctl.d"
    d.mkdir(parents=True)
    for i in range(300):
        (d / f"{i:03d}.conf").write_text("x = 1\n")
    (d / "999-huge.conf").write_bytes(b"a" * (1 << 20))
    files = read_sysctl_files(tmp_path)
    assert len(files) <= 256 and all(len(t) <= 256 * 1024 for t in files.values())
