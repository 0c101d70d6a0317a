"""`badsum doctor` end to end: --from/--save/--json, exit codes, bad snapshot files, --namespace.

Snapshots are the rule fixtures (tests/rules/fixtures); most checks run the real process
(`python -m badsum`) so exit codes, stdout and stderr are what a user sees. Live collection
needs root and is marked so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import need_root

from badsum.host.model import HOST_NS, HostSnapshot

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "rules" / "fixtures"
DOCS = REPO / "docs" / "cli.md"
BADSUM = [sys.executable, "-m", "badsum"]
sys.path.insert(0, str(REPO / "tests" / "rules"))  # rule_fixtures: kube-proxy's rules for the live test
FINDING_KEYS = {"rule", "severity", "outcome", "objects", "evidence", "fix", "references"}
KB005 = FIXTURES / "KB-005" / "fire-netdev-veth.json"
CLEAN = FIXTURES / "clean-host.json"


def doctor(*args: str | Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BADSUM, "doctor", *map(str, args)], capture_output=True, text=True, timeout=120,
                          input=input, cwd=REPO, check=False)  # fmt: skip


def envelope(r: subprocess.CompletedProcess[str]) -> dict:
    doc = json.loads(r.stdout)
    assert set(doc) == {"schema_version", "command", "status", "data", "errors"}
    assert doc["command"] == "doctor"
    assert doc["status"] == {0: "ok", 1: "findings", 2: "error", 3: "error"}[r.returncode]
    return doc


def write(tmp_path: Path, snap: HostSnapshot, name: str = "snap.json") -> Path:
    path = tmp_path / name
    path.write_text(snap.to_json())
    return path


def load(path: Path) -> HostSnapshot:
    return HostSnapshot.from_json(path.read_text())


# -- --from: text and exit codes ----------------------------------------------------------------


def test_findings_text_leads_with_the_answer_and_gives_the_fix() -> None:
    r = doctor("--from", KB005)
    assert r.returncode == 1, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith("badsum doctor: 1 problem on node1: 1 fail, 0 warn")
    block = r.stdout[r.stdout.index("FAIL"):]
    assert block.startswith("FAIL  high     KB-005")
    assert "objects:      bs1a2b3c-c1:eth0 (veth), host:c1-veth (ovs-port)" in block
    assert "fix:          nsenter --net=/run/netns/bs1a2b3c-c1 -- ethtool -K eth0 tx off" in block
    assert "# cost: also turns off TSO/GSO for that interface" in block
    assert "https://github.com/openvswitch/ovs/commit/ddcf96d2dcc1e5257077a5839621a1c09d2088d5" in block
    assert "evidence:" in block and "references:" in block


def test_most_severe_first() -> None:
    r = doctor("--from", FIXTURES / "CSUM-COUNTERS-RISING" / "fire-host-udp.json")
    assert r.returncode == 1
    heads = [m.group(1) for m in re.finditer(r"^(?:FAIL|WARN)\s+(\w+)\s", r.stdout, re.MULTILINE)]
    assert heads == ["high", "low"]


def test_clean_host_exits_0_with_no_finding() -> None:
    r = doctor("--from", CLEAN)
    assert r.returncode == 0, r.stdout
    assert r.stdout.startswith("badsum doctor: nothing wrong found on node1")
    assert "FAIL" not in r.stdout and "WARN" not in r.stdout
    assert "(-v lists them)" in r.stdout


def test_verbose_lists_passes_skips_unknowns() -> None:
    r = doctor("--from", CLEAN, "-v")
    assert r.returncode == 0
    assert re.search(r"^  PASS +KB-004 +host:flannel.1 \(vxlan\): ", r.stdout, re.MULTILINE)
    assert re.search(r"^  SKIP +KB-005 +-: Open vSwitch is installed but not running", r.stdout, re.MULTILINE)


# -- --json ---------------------------------------------------------------------------------------


def test_json_envelope_and_finding_keys() -> None:
    r = doctor("--from", KB005, "--json")
    assert r.returncode == 1 and r.stderr == ""
    doc = envelope(r)
    data = doc["data"]
    assert data["source"] == str(KB005) and data["host"] == "node1" and data["root"] is True
    (f,) = data["findings"]
    assert FINDING_KEYS <= set(f)
    assert f["rule"] == "KB-005" and f["severity"] == "high" and f["outcome"] == "fail"
    assert [(o["namespace"], o["name"]) for o in f["objects"]] == [("bs1a2b3c-c1", "eth0"), ("host", "c1-veth")]
    assert f["fix"] == ["nsenter --net=/run/netns/bs1a2b3c-c1 -- ethtool -K eth0 tx off"]
    assert f["references"][0].startswith("https://github.com/openvswitch/ovs/commit/")
    assert data["counts"]["fail"] == 1 and sum(data["counts"].values()) == len(data["findings"]) + len(data["outcomes"])
    assert all(o["outcome"] in ("pass", "skip", "unknown") for o in data["outcomes"])


def test_json_clean_host_is_ok() -> None:
    r = doctor("--from", CLEAN, "--json")
    assert r.returncode == 0
    doc = envelope(r)
    assert doc["data"]["findings"] == []
    assert [e["code"] for e in doc["errors"]] == ["ovs.not_running"]


# -- --save / --from round trip -------------------------------------------------------------------


def test_save_from_a_snapshot_reproduces_every_finding(tmp_path: Path) -> None:
    src = FIXTURES / "KB-004" / "fire-node-namespace.json"
    out = tmp_path / "again.json"
    first = doctor("--from", src, "--save", out, "--json")
    assert first.returncode == 1 and out.exists()
    assert envelope(first)["data"]["saved"] == str(out)
    assert json.loads(out.read_text()) == json.loads(src.read_text())
    second = doctor("--from", out, "--json")
    strip = lambda doc: [(f["rule"], f["outcome"], f["objects"], f["evidence"], f["fix"]) for f in doc["data"]["findings"]]
    assert strip(envelope(second)) == strip(envelope(first))
    assert not list(tmp_path.glob(".*.part"))


def test_from_stdin() -> None:
    r = doctor("--from", "-", "--json", input=KB005.read_text())
    assert r.returncode == 1 and envelope(r)["data"]["findings"][0]["rule"] == "KB-005"


def test_save_to_an_unwritable_place_exits_3(tmp_path: Path) -> None:
    r = doctor("--from", CLEAN, "--save", tmp_path / "no" / "such" / "dir" / "s.json")
    assert r.returncode == 3
    assert re.fullmatch(r"badsum: cannot write .*s\.json: No such file or directory\n", r.stderr)
    assert r.stdout.startswith("badsum doctor: nothing wrong found")


# -- bad snapshot files -------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"is not JSON"),
    ("[1, 2]", r"is not a badsum host snapshot"),
    ('{"hello": 1}', r"is not a badsum host snapshot"),
    ("", r"is not JSON"),
])  # fmt: skip
def test_bad_snapshot_file_exits_3_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    r = doctor("--from", path)
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.startswith("badsum: ") and r.stderr.count("\n") == 1 and re.search(message, r.stderr)
    j = doctor("--from", path, "--json")
    assert j.returncode == 3 and envelope(j)["errors"][0]["code"].startswith("snapshot.")


def test_another_schema_version_exits_3(tmp_path: Path) -> None:
    raw = json.loads(KB005.read_text())
    raw["schema_version"] = 99
    path = tmp_path / "future.json"
    path.write_text(json.dumps(raw))
    r = doctor("--from", path, "--json")
    assert r.returncode == 3
    (err,) = envelope(r)["errors"]
    assert err["code"] == "snapshot.schema" and "99" in err["message"] and "Traceback" not in r.stderr


def test_snapshot_with_a_field_of_the_wrong_shape_exits_3(tmp_path: Path) -> None:
    raw = json.loads(KB005.read_text())
    del raw["namespaces"][0]["links"][0]["name"]
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(raw))
    r = doctor("--from", path)
    assert r.returncode == 3 and "Traceback" not in r.stderr and r.stderr.startswith("badsum: ")


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_snapshot_exits_3(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.json" if kind == "missing" else tmp_path
    r = doctor("--from", path)
    assert r.returncode == 3 and r.stderr.startswith(f"badsum: cannot read {path}: ")


# -- --namespace ----------------------------------------------------------------------------------


def two_nodes(tmp_path: Path) -> Path:
    a = load(FIXTURES / "KB-004" / "fire-node-namespace.json")  # findings in namespace node1
    c = load(FIXTURES / "CSUM-COUNTERS-RISING" / "fire-pod-tcp.json")  # findings in pid:1234
    return write(tmp_path, dataclasses.replace(a, namespaces=a.namespaces + c.namespaces[1:]))


def test_namespace_limits_the_scope(tmp_path: Path) -> None:
    path = two_nodes(tmp_path)
    every = envelope(doctor("--from", path, "--json"))["data"]
    assert {f["rule"] for f in every["findings"]} == {"KB-004", "CSUM-COUNTERS-RISING"}
    only = envelope(doctor("--from", path, "--json", "--namespace", "node1"))["data"]
    assert {f["rule"] for f in only["findings"]} == {"KB-004"}
    assert only["namespaces"] == ["node1"]
    both = doctor("--from", path, "--json", "-n", "node1", "--namespace", "pid:1234")
    assert {f["rule"] for f in envelope(both)["data"]["findings"]} == {"KB-004", "CSUM-COUNTERS-RISING"}


def test_unknown_namespace_is_a_usage_error(tmp_path: Path) -> None:
    """As in `fix` and `watch`: exit 2, one line naming the namespaces there are, no report."""
    r = doctor("--from", two_nodes(tmp_path), "--namespace", "ghost")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "badsum: unknown namespace 'ghost' for --namespace (known: host, node1, pid:1234)\n"
    j = doctor("--from", two_nodes(tmp_path), "-n", "node1", "-n", "ghost", "-n", "nope", "--json")
    assert j.returncode == 2 and j.stderr.startswith("badsum: unknown namespaces 'ghost', 'nope' for --namespace")
    assert envelope(j)["errors"] == [{"code": "namespace.unknown", "message": j.stderr.removeprefix("badsum: ").strip()}]


# -- what could not be inspected: one clear line, no traceback -------------------------------------


def test_not_root_snapshot_is_incomplete(tmp_path: Path) -> None:
    path = write(tmp_path, dataclasses.replace(load(CLEAN), root=False))
    r = doctor("--from", path)
    assert r.returncode == 3
    assert "note: not root:" in r.stdout and "sudo badsum doctor" in r.stdout and "incomplete" in r.stdout
    assert "error" == envelope(doctor("--from", path, "--json"))["status"]


def test_vanished_namespace_ovs_down_and_missing_iptables_are_notes(tmp_path: Path) -> None:
    snap = load(FIXTURES / "KB-004" / "fire-kernel-4.19.100.json")
    gone = "vanished while it was read: its links, routes, counters and rules are unknown"
    nss = tuple(dataclasses.replace(ns, errors=(gone,), nat=None) if ns.id == HOST_NS else ns for ns in snap.namespaces)
    snap = dataclasses.replace(snap, namespaces=nss, tools={**snap.tools, "iptables": None},
                               ovs=load(CLEAN).ovs)  # fmt: skip
    r = doctor("--from", write(tmp_path, snap), "-v")
    assert r.returncode == 0, r.stdout
    assert f"note: namespace host: {gone}" in r.stdout
    assert "note: Open vSwitch is installed but not running" in r.stdout
    assert "note: iptables is not installed: NAT rules were not read" in r.stdout
    assert re.search(r"UNKNOWN +KB-004 +host:flannel.1 \(vxlan\): iptables is not installed", r.stdout)
    assert r.stderr == ""


# -- usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "61", "abc"])
def test_bad_interval_is_a_usage_error(value: str) -> None:
    r = doctor("--from", CLEAN, "--interval", value)
    assert r.returncode == 2 and "--interval" in r.stderr


def test_help_has_examples_and_exit_codes() -> None:
    r = doctor("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "exit codes" in r.stdout


def test_docs_cover_every_doctor_option() -> None:
    from badsum.cli.main import build_parser

    docs = DOCS.read_text()
    assert "## `badsum doctor`" in docs
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices and "doctor" in a.choices)
    options = [o for a in sub.choices["doctor"]._actions for o in a.option_strings]
    missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", docs)]
    assert not missing and {"--save", "--from", "--namespace", "--interval", "--json", "-v"} <= set(options)


# -- live (root) ----------------------------------------------------------------------------------


def _lab_namespaces() -> list[str]:
    """Namespaces of badsum labs (bs + 6 hex digits), read with `ip -j netns list`."""
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [n["name"] for n in json.loads(out or "[]") if re.match(r"bs[0-9a-f]{6}-", n["name"])]


@pytest.mark.root
def test_live_doctor_on_this_host(tmp_path: Path) -> None:
    need_root()
    saved = tmp_path / "live.json"
    labs_up = _lab_namespaces()
    r = doctor("--json", "--save", saved, "--interval", "0.2")
    doc = envelope(r)
    if not labs_up and not _lab_namespaces():
        # A fresh host (CI runs tests one after another): nothing wrong, and no false finding.
        assert r.returncode == 0 and doc["data"]["findings"] == [], doc["data"]["findings"]
    else:
        assert r.returncode in (0, 1), r.stderr  # someone else's lab ran meanwhile
    assert doc["data"]["root"] is True and HOST_NS in doc["data"]["namespaces"]
    again = doctor("--from", saved, "--json")
    keep = lambda d: sorted((f["rule"], json.dumps(f["objects"]), f["evidence"]) for f in d["data"]["findings"])
    assert again.returncode == r.returncode and keep(envelope(again)) == keep(doc)


@pytest.mark.root
def test_live_namespace_scope_and_unknown_namespace() -> None:
    need_root()
    r = doctor("--json", "--namespace", "host", "--interval", "0.2")
    assert r.returncode in (0, 1), r.stderr
    assert envelope(r)["data"]["namespaces"] == [HOST_NS]
    missing = doctor("--namespace", "bs-no-such-namespace", "--interval", "0.2")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("badsum: unknown namespace 'bs-no-such-namespace' for --namespace (known: host")


@pytest.mark.root
def test_live_doctor_without_root_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The collector believes it is not root (os.geteuid patched): a clear note, exit 3, no traceback."""
    need_root()
    from badsum.cli.main import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code = main(["doctor", "--interval", "0.1"])
    out, err = capsys.readouterr()
    assert code == 3, (out, err)
    assert out.count("note: not root") == 1 and "Traceback" not in err
    assert len([line for line in out.splitlines() if line.startswith("note:")]) <= 6  # grouped, not one per namespace


@pytest.mark.root
def test_live_vxlan_node_is_found_and_doctors_own_fix_clears_it() -> None:
    """A flannel-like node in a throwaway namespace: VXLAN with TX offload on, MTU 1500 over a
    1500 underlay, kube-proxy's rules before kubernetes#92035. doctor must report KB-004 and the
    MTU problem in that namespace; running its own fix commands must make both go away (checked
    again by doctor, and by iptables-save and ip -j link as independent oracles)."""
    need_root()
    from support import need_tool

    for tool in ("ip", "iptables-restore", "iptables-save", "nsenter", "ethtool"):
        need_tool(tool)
    from rule_fixtures import KUBE_BEFORE

    from badsum.rules.masquerade import unguarded_masquerades

    name = f"bsd{os.getpid() % 0x1000:03x}{os.urandom(2).hex()[:3]}-node"
    run = lambda *argv, **kw: subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30, **kw)
    inns = lambda *argv, **kw: run("ip", "netns", "exec", name, *argv, **kw)
    run("ip", "netns", "add", name)
    try:
        inns("ip", "link", "add", "under0", "mtu", "1500", "type", "veth", "peer", "name", "under1")  # the underlay
        inns("ip", "addr", "add", "198.51.100.1/24", "dev", "under0")
        # No `dev`: the underlay is whatever the route to the remote uses, so the kernel cannot refuse the MTU.
        inns("ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "remote", "198.51.100.2", "local", "198.51.100.1",
             "dstport", "8472", "nolearning", "noudpcsum")  # fmt: skip (flannel leaves the outer checksum at 0)
        inns("ip", "link", "set", "flannel.1", "mtu", "1500")
        for dev in ("under0", "under1", "flannel.1"):
            inns("ip", "link", "set", dev, "up")  # under0's connected route 198.51.100.0/24 now leads to the remote
        inns("iptables-restore", input="\n".join(KUBE_BEFORE) + "\n")

        r = doctor("--json", "--namespace", name, "--interval", "0.2")
        assert r.returncode == 1, r.stderr
        doc = envelope(r)
        assert doc["data"]["namespaces"] == [name]
        found = {f["rule"]: f for f in doc["data"]["findings"]}
        assert set(found) == {"KB-004", "CFG-OVERLAY-MTU"}, found
        assert found["KB-004"]["outcome"] == "warn"  # 6.x has ea64d8d6c675: the configuration, not the kernel
        assert {(o["namespace"], o["name"]) for o in found["KB-004"]["objects"]} == {(name, "flannel.1"), (name, "nat/KUBE-POSTROUTING")}
        assert {(o["namespace"], o["name"]) for o in found["CFG-OVERLAY-MTU"]["objects"]} == {(name, "flannel.1"), (name, "under0")}
        assert found["CFG-OVERLAY-MTU"]["fix"] == [f"nsenter --net=/run/netns/{name} -- ip link set dev flannel.1 mtu 1450"]

        for action in found["KB-004"]["fix_actions"] + found["CFG-OVERLAY-MTU"]["fix_actions"]:
            if action["kind"] == "ethtool-feature":
                continue  # the unmark rules alone must be enough
            from badsum.rules.model import FixAction

            argv = FixAction(action["kind"], action["namespace"], f"/run/netns/{name}", action["target"],
                             action["setting"], action["value"], action["cost"]).argv()  # fmt: skip
            run(*argv)

        nat = inns("iptables-save", "-t", "nat").stdout.splitlines()
        assert unguarded_masquerades(nat) == []
        assert sum("KUBE-POSTROUTING" in line and "MASQUERADE" in line for line in nat) == 1
        link = json.loads(inns("ip", "-j", "link", "show", "flannel.1").stdout)[0]
        assert link["mtu"] == 1450
        after = envelope(doctor("--json", "--namespace", name, "--interval", "0.2"))
        assert after["data"]["findings"] == [], after["data"]["findings"]
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
