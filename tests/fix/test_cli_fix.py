"""`badsum fix` as a command: dry run, exit codes, the envelope, --from, usage errors, --persist under
--root, --undo. The host and the rules are stood in for (hand-made findings, a simulated host)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeHost, FakeLink, finding, tx_off

from badsum.cli import fix as cli_fix
from badsum.cli.main import main
from badsum.fix import apply as apply_mod
from badsum.fix import session
from badsum.fix.persist import uninstall
from badsum.fix.session import Host
from badsum.host.model import HOST_NS, HostSnapshot, KernelInfo, Link, Namespace
from badsum.rules.model import FixAction

SNAP = HostSnapshot(5.0, "h", KernelInfo("6.1.0", (6, 1, 0)), True, (
    Namespace(HOST_NS, 1, None, links=(Link(5, "flannel.1", "vxlan", 1450, "up"),)),
    Namespace("bs1-c1", 2, "/run/netns/bs1-c1", links=(Link(2, "eth0", "veth", 1500, "up"),))))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """Findings the stand-in rules return, the simulated host, and a journal under tmp_path."""
    state = {"findings": [finding("KB-005", [("bs1-c1", "eth0")], [tx_off("bs1-c1", "eth0")]),
                          finding("KB-004", [(HOST_NS, "flannel.1")], [tx_off(HOST_NS, "flannel.1", setting="tx-checksum-ip-generic")])],
             "collected": []}
    host = FakeHost(links={("/run/netns/bs1-c1", "eth0"): FakeLink(2), (None, "flannel.1"): FakeLink(5)})
    state["host"] = host

    def collect(now: float, namespaces: set[str] | None = None) -> HostSnapshot:
        state["collected"].append(namespaces)
        return SNAP

    def evaluate(snapshot: HostSnapshot) -> list:
        # "Fixed" once the simulated interface has TX checksum off.
        out = []
        for f in state["findings"]:
            a = f.fix[0]
            if a.kind == "sysctl":
                if host.sysctls[(a.enter, a.target)] != a.value:
                    out.append(f)
                continue
            link = host.links[(a.enter, a.target)]
            if link.features["tx-checksum-ip-generic"]["active"]:
                out.append(f)
        return out

    real_apply, real_undo = session.apply_plan, session.undo
    monkeypatch.setattr(Host, "collect", lambda self, now, namespaces=None: collect(now, namespaces))
    monkeypatch.setattr(Host, "namespaces", lambda self: SNAP.namespaces)
    monkeypatch.setattr(Host, "evaluate", lambda self, snapshot: evaluate(snapshot))
    monkeypatch.setattr(Host, "known_rules", lambda self: {"KB-004", "KB-005", "KB-003", "KB-011", "KB-012"})
    monkeypatch.setattr(Host, "apply", lambda self, actions, journal, now, inodes: real_apply(actions, journal, now, host, inodes))
    monkeypatch.setattr(Host, "undo", lambda self, journal, entries, now: real_undo(journal, entries, now, host, uninstall))
    monkeypatch.setattr(apply_mod, "ns_inode", lambda enter: {None: 1, "/run/netns/bs1-c1": 2}.get(enter))
    monkeypatch.delenv(cli_fix.ENV_ROOT, raising=False)
    monkeypatch.delenv(cli_fix.ENV_JOURNAL, raising=False)
    state["journal"] = tmp_path / "j.json"
    state["root"] = tmp_path / "root"
    return state


def envelope(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out)


def test_dry_run_prints_exact_commands_and_changes_nothing(world: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["fix", "--journal", str(world["journal"])]) == 1
    out = capsys.readouterr().out
    assert "dry run: nothing was changed" in out
    assert "nsenter --net=/run/netns/bs1-c1 -- ethtool -K eth0 tx off" in out
    assert "ethtool -K flannel.1 tx-checksum-ip-generic off" in out
    assert "TSO" in out  # the cost
    assert not world["host"].calls and not world["journal"].exists()


def test_rule_ids_limit_the_plan_and_unknown_ids_are_usage_errors(world: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["fix", "kb-004", "--json"]) == 1
    data = envelope(capsys)["data"]
    assert [a["rules"] for a in data["actions"]] == [["KB-004"]]
    assert main(["fix", "KB-003"]) == 0  # a known rule without findings: nothing to do
    assert "no findings to fix" in capsys.readouterr().out
    assert main(["fix", "KB-999"]) == 2
    assert "unknown rule id KB-999" in capsys.readouterr().err


def test_json_envelope(world: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["fix", "--json", "--journal", str(world["journal"])]) == 1
    env = envelope(capsys)
    assert env["schema_version"] == 1 and env["command"] == "fix" and env["status"] == "findings"
    assert env["data"]["mode"] == "plan" and env["data"]["journal"] == str(world["journal"])
    (a,) = [a for a in env["data"]["actions"] if a["namespace"] == "bs1-c1"]
    assert a["argv"] == ["nsenter", "--net=/run/netns/bs1-c1", "--", "ethtool", "-K", "eth0", "tx", "off"]
    world["findings"] = []
    assert main(["fix", "--json"]) == 0
    assert envelope(capsys)["status"] == "ok"


def test_namespace_option_limits_collection_and_plan(world: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["fix", "--json", "--namespace", "bs1-c1"]) == 1
    assert world["collected"][-1] == {"bs1-c1"}
    assert [a["namespace"] for a in envelope(capsys)["data"]["actions"]] == ["bs1-c1"]


def test_usage_errors(world: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    snap = tmp_path / "snap.json"
    snap.write_text(SNAP.to_json())
    assert main(["fix", "--from", str(snap), "--apply"]) == 2
    assert main(["fix", "--undo", "--persist"]) == 2
    assert main(["fix", "--undo", "--apply"]) == 2  # argparse: mutually exclusive
    assert main(["fix", "--from", str(snap)]) == 1  # a saved snapshot plans without root
    capsys.readouterr()
    assert main(["fix", "--from", str(tmp_path / "missing.json"), "--json"]) == 3
    assert envelope(capsys)["errors"][0]["code"] == "snapshot.unreadable"


@pytest.mark.parametrize(("content", "code"), [("{not json", "snapshot.not_json"), ('{"hello": 1}', "snapshot.not_a_snapshot"),
                                               ('{"kernel": {}, "namespaces": [], "schema_version": 99}', "snapshot.schema")])  # fmt: skip
def test_from_reads_the_snapshot_as_doctor_does(world: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                content: str, code: str) -> None:  # fmt: skip
    """One reader, one error code per way a snapshot file can be wrong (doctor's codes), exit 3."""
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["fix", "--from", str(bad), "--json"]) == 3
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert doc["status"] == "error" and doc["errors"][0]["code"] == code
    assert cap.err == f"badsum: {doc['errors'][0]['message']}\n"
    assert main(["doctor", "--from", str(bad), "--json"]) == 3
    assert envelope(capsys)["errors"][0]["code"] == code


@pytest.mark.parametrize("source", ["from", "live"])
def test_unknown_namespace_is_a_usage_error_naming_the_known_ones(world: dict, tmp_path: Path, source: str,
                                                                  capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """`fix --namespace nosuch` used to plan nothing and exit 0: as in doctor and watch, it is exit 2
    with one line naming the namespaces there are, and nothing is collected or planned."""
    snap = tmp_path / "snap.json"
    snap.write_text(SNAP.to_json())
    argv = ["fix", "--from", str(snap)] if source == "from" else ["fix"]
    world["collected"].clear()
    assert main([*argv, "--namespace", "nosuch"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err == "badsum: unknown namespace 'nosuch' for --namespace (known: host, bs1-c1)\n"
    assert world["collected"] == []
    assert main([*argv, "--namespace", "bs1-c1", "--namespace", "nosuch", "--json"]) == 2
    doc = envelope(capsys)
    assert doc["status"] == "error" and doc["errors"][0]["code"] == "namespace.unknown"
    assert main([*argv, "--namespace", "bs1-c1"]) == 1  # a known one still plans


def test_apply_then_undo(world: dict, capsys: pytest.CaptureFixture) -> None:
    j = str(world["journal"])
    assert main(["fix", "--apply", "--json", "--journal", j]) == 0
    env = envelope(capsys)
    assert env["status"] == "ok"
    assert [r["status"] for r in env["data"]["results"]] == ["applied", "applied"]
    assert {r["status"] for r in env["data"]["recheck"]} == {"gone"}
    # the re-check collected only the namespaces involved
    assert world["collected"][-1] == {"bs1-c1", HOST_NS}
    assert not world["host"].links[("/run/netns/bs1-c1", "eth0")].features["tx-checksum-ip-generic"]["active"]
    assert main(["fix", "--undo", "--journal", j]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 entries restored" in out
    assert world["host"].links[("/run/netns/bs1-c1", "eth0")].features["tx-checksum-ip-generic"]["active"]
    assert main(["fix", "--undo", "--journal", j]) == 0
    assert "nothing to undo" in capsys.readouterr().out


def test_apply_reports_a_finding_that_remains(world: dict, capsys: pytest.CaptureFixture) -> None:
    world["host"].fail = {"ethtool -K"}
    assert main(["fix", "KB-005", "--apply", "--json", "--journal", str(world["journal"])]) == 3
    env = envelope(capsys)
    assert env["status"] == "error" and env["errors"][0]["code"] == "fix.apply_failed"
    assert env["data"]["recheck"] == [{"finding": "KB-005 on bs1-c1:eth0", "rule": "KB-005", "status": "still there"}]


def test_undo_refusal_is_exit_3_and_the_others_still_run(world: dict, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    j = str(world["journal"])
    assert main(["fix", "--apply", "--journal", j]) == 0
    monkeypatch.setattr(apply_mod, "ns_inode", lambda enter: {None: 1}.get(enter))  # bs1-c1 deleted
    capsys.readouterr()
    assert main(["fix", "--undo", "--journal", j]) == 3
    cap = capsys.readouterr()
    assert "1 of 2 entries restored" in cap.out
    assert "namespace bs1-c1 (/run/netns/bs1-c1) no longer exists" in cap.err
    assert world["host"].links[(None, "flannel.1")].features["tx-checksum-ip-generic"]["active"]


def test_persist_prints_and_with_apply_writes_under_root_and_undo_removes(world: dict, capsys: pytest.CaptureFixture) -> None:
    root, j = world["root"], str(world["journal"])
    assert main(["fix", "KB-004", "--persist", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "/etc/udev/rules.d/90-badsum-flannel.1.rules" in out
    assert 'RUN+="/usr/sbin/ethtool -K %k tx-checksum-ip-generic off"' in out
    assert not root.exists()  # printed only
    assert main(["fix", "KB-004", "--persist", "--apply", "--root", str(root), "--journal", j]) == 0
    rule = root / "etc/udev/rules.d/90-badsum-flannel.1.rules"
    assert rule.is_file()
    kinds = [e["kind"] for e in json.loads(Path(j).read_text())["entries"]]
    assert kinds == ["ethtool-feature", "file"]
    assert main(["fix", "--undo", "--journal", j]) == 0
    assert not rule.exists()


def test_default_journal_lives_under_root(world: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["fix", "--json", "--root", str(world["root"])]) == 1
    assert envelope(capsys)["data"]["journal"] == str(world["root"] / "var/lib/badsum/fix-journal.json")


def test_apply_needs_root(world: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(cli_fix.os, "geteuid", lambda: 1000)
    assert main(["fix", "--apply", "--journal", str(world["journal"])]) == 3
    assert "needs root" in capsys.readouterr().err
    assert not world["host"].calls


def test_persist_apply_writes_host_sysctls_to_sysctl_d_and_says_why_not_for_a_container(
        world: dict, capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """A sysctl in the host namespace: set live and kept in /etc/sysctl.d/90-badsum.conf (merged with
    the admin's line there); one in a container's namespace: set live, not persisted, with the reason.
    `--undo` puts back both values and the file."""
    root, j = world["root"], str(world["journal"])
    host = world["host"]
    host.sysctls = {(None, "net.ipv4.ip_forward"): "0", ("/run/netns/bs1-c1", "net.ipv4.conf.all.rp_filter"): "1"}
    world["findings"] = [
        finding("KB-011", [(HOST_NS, "net.ipv4.ip_forward")], [FixAction("sysctl", HOST_NS, None, "net.ipv4.ip_forward", "net.ipv4.ip_forward", "1")]),
        finding("KB-012", [("bs1-c1", "net.ipv4.conf.all.rp_filter")],
                [FixAction("sysctl", "bs1-c1", "/run/netns/bs1-c1", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.rp_filter", "2")])]
    dropin = root / "etc/sysctl.d/90-badsum.conf"
    dropin.parent.mkdir(parents=True)
    admin = "# the admin's own line, kept\nvm.swappiness = 10\n"
    dropin.write_text(admin)
    assert main(["fix", "KB-011", "KB-012", "--persist", "--json", "--root", str(root)]) == 1
    data = envelope(capsys)["data"]
    persisted = {p["namespace"]: p for p in data["persist"]}
    assert persisted[HOST_NS]["method"] == "sysctl.d" and persisted[HOST_NS]["artefact"]["path"] == "/etc/sysctl.d/90-badsum.conf"
    assert persisted["bs1-c1"]["method"] == "none" and "host's namespace only" in persisted["bs1-c1"]["fits"]
    assert data["persist_notes"] == []
    assert dropin.read_text() == admin  # a dry run writes nothing
    assert main(["fix", "KB-011", "KB-012", "--persist", "--apply", "--root", str(root), "--journal", j]) == 0
    assert host.sysctls == {(None, "net.ipv4.ip_forward"): "1", ("/run/netns/bs1-c1", "net.ipv4.conf.all.rp_filter"): "2"}
    assert dropin.read_text() == admin + "\n# badsum: KB-011\nnet.ipv4.ip_forward = 1\n"
    assert [e["kind"] for e in json.loads(Path(j).read_text())["entries"]] == ["sysctl", "sysctl", "file"]
    assert main(["fix", "--undo", "--journal", j]) == 0
    assert host.sysctls == {(None, "net.ipv4.ip_forward"): "0", ("/run/netns/bs1-c1", "net.ipv4.conf.all.rp_filter"): "1"}
    assert dropin.read_text() == admin
