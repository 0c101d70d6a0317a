"""`badsum lab run ovs-userspace-veth` (KB-005) end to end, judged by the test's own oracles.

The scenario runs for real: a private ovs-vswitchd (userspace `netdev` datapath) between two
veth-attached namespaces. The CLI runs twice, without and with `--fix`, each with `--keep` so that
this test can read the kernel's state itself before removing the lab with `badsum lab clean`:

- `nstat -a -s -z --json` inside the kept namespaces. They were created by the run, so their
  absolute counters are the run's deltas;
- `ethtool --json -k eth0` inside them (the fix turns tx checksum offload off);
- `tcpdump -vv -r` and `tshark` on the run's own pcapng files; tshark also reassembles the TCP
  stream that reached c2, and its sha256 must be the one the client sent;
- exit codes and the JSON envelope.

A third run drives the scenario through the Python API and reads c2's counters at the moment the
fix is applied, to split the counter deltas into before and after the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import need_root, need_tool
from labkit import inventory, netns_names

from badsum.lab import state as lab_state
from badsum.lab.lab import Lab
from badsum.lab.scenarios.ovs_userspace_veth import POINTS, SCENARIO

pytestmark = pytest.mark.root

BADSUM = [sys.executable, "-m", "badsum"]
NAME = "ovs-userspace-veth"
NBYTES = 100_000  # what the scenario sends per TCP transfer
INCORRECT = re.compile(r"cksum 0x[0-9a-f]{4} \(incorrect -> 0x[0-9a-f]{4}\)")


@dataclass
class Kept:
    """One CLI run, kept, and what this test read from it before cleaning it."""

    prefix: str
    code: int
    doc: dict
    stderr: str
    out: Path
    nstat: dict[str, dict[str, int]]
    ethtool: dict[str, dict]
    clean_code: int
    left_after_clean: list[str]

    @property
    def data(self) -> dict:
        return self.doc["data"]


def unused_prefix() -> str:
    taken = {n.split("-", 1)[0] for n in netns_names()}
    while (p := lab_state.new_prefix()) in taken or (lab_state.RUN_ROOT / p).exists():
        pass
    return p


def nstat(ns: str) -> dict[str, int]:
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-a", "-s", "-z", "--json"], capture_output=True,
                         text=True, timeout=10, check=True).stdout  # fmt: skip
    return {k: int(v) for group in json.loads(out).values() for k, v in group.items()}


def ethtool_k(ns: str, dev: str) -> dict:
    out = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "--json", "-k", dev], capture_output=True, text=True,
                         timeout=10, check=True).stdout  # fmt: skip
    return json.loads(out)[0]


def run_kept(out: Path, fix: bool) -> Kept:
    prefix = unused_prefix()
    argv = [*BADSUM, "lab", "run", NAME, "--json", "--keep", "--prefix", prefix, "--out", str(out)]
    r = subprocess.run([*argv, *(["--fix"] if fix else [])], capture_output=True, text=True, timeout=180, check=False)
    try:
        names = [f"{prefix}-{n}" for n in ("host", "c1", "c2")]
        assert set(names) <= set(netns_names()), (r.returncode, r.stderr)
        counters = {n: nstat(f"{prefix}-{n}") for n in ("c1", "c2")}
        feats = {n: ethtool_k(f"{prefix}-{n}", "eth0") for n in ("c1", "c2")}
    finally:
        argv = [*BADSUM, "lab", "clean", "--prefix", prefix]
        c = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    left = [str(i) for i in inventory().of(prefix)]
    return Kept(prefix, r.returncode, json.loads(r.stdout), r.stderr, out, counters, feats, c.returncode, left)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Kept]:
    need_root()
    for tool in ("tcpdump", "ethtool", "nstat", "ovs-vswitchd"):
        need_tool(tool)
    base = tmp_path_factory.mktemp("kb005")
    return {"plain": run_kept(base / "plain", fix=False), "fix": run_kept(base / "fix", fix=True)}


def tcpdump_vv(path: Path, expr: str) -> list[str]:
    argv = ["tcpdump", "-n", "-vv", "-r", str(path), expr]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def incorrect_tcp(path: Path) -> tuple[int, int]:
    """(TCP segments tcpdump calls incorrect, TCP segments) in a capture."""
    lines = [ln for ln in tcpdump_vv(path, "tcp") if "Flags [" in ln]
    return sum(1 for ln in lines if INCORRECT.search(ln)), len(lines)


def capture(run: Kept, phase: str, point: str) -> Path:
    return Path(run.data["captures"][f"{phase} {point}"])


# -- exit codes, envelope, folder ---------------------------------------------------------------


def test_exit_codes_1_with_the_symptom_and_0_after_the_fix(runs: dict[str, Kept]) -> None:
    assert runs["plain"].code == 1, runs["plain"].stderr
    assert runs["plain"].doc["status"] == "findings"
    assert runs["fix"].code == 0, runs["fix"].stderr
    assert runs["fix"].doc["status"] == "ok"
    for r in runs.values():
        assert r.doc["command"] == "lab run" and r.doc["errors"] == [] and r.doc["schema_version"] == 1
        assert r.stderr == (f"badsum: kept namespaces {r.prefix}-*; "
                            f"remove them with `badsum lab clean --prefix {r.prefix}`\n")  # fmt: skip


def test_json_result_keys(runs: dict[str, Kept]) -> None:
    plain, fix = runs["plain"].data, runs["fix"].data
    assert plain["scenario"] == fix["scenario"] == NAME
    assert (plain["fix_applied"], plain["symptom_observed"], plain["reproduced"]) == (False, True, True)
    assert (fix["fix_applied"], fix["symptom_observed"], fix["reproduced"]) == (True, False, True)
    for r in runs.values():
        d = r.data
        assert d["prefix"] == r.prefix and d["out_dir"] == str(r.out)
        assert all(set(e) == {"oracle", "what", "value"} and e["what"] for e in d["evidence"])
        oracles = {e["oracle"] for e in d["evidence"]}
        assert {"nstat", "tcpdump", "application", "ethtool", "ping", "badsum pcap"} <= oracles
        assert set(d["counters"]) == {"c1", "c2"}
        assert isinstance(d["drops"], list) and (d["drops"] or d["drops_note"])
    phases = {"plain": ["run"], "fix": ["before fix", "after fix"]}
    for key, r in runs.items():
        want = {f"{ph} {pt}" for ph in phases[key] for pt in POINTS}
        assert set(r.data["captures"]) == want
        for path in r.data["captures"].values():
            assert Path(path).parent == r.out and path.endswith(".pcapng") and Path(path).stat().st_size > 0


def test_run_folder(runs: dict[str, Kept]) -> None:
    for r in runs.values():
        names = {p.name for p in r.out.iterdir()}
        assert {"topology.json", "result.json", "summary.txt", "counters.json", "drops.json"} <= names
        assert not [n for n in names if n.endswith(".pcap")]  # every capture was turned into pcapng
        assert json.loads((r.out / "result.json").read_text()) == r.data
        assert json.loads((r.out / "counters.json").read_text()) == r.data["counters"]
        assert json.loads((r.out / "drops.json").read_text()) == r.data["drops"]
        topo = json.loads((r.out / "topology.json").read_text())
        assert topo["name"] == NAME and topo["namespaces"] == ["host", "c1", "c2"]
        summary = (r.out / "summary.txt").read_text().splitlines()
        assert summary[0] == f"{NAME}: {r.data['verdict']}"
        assert any(line.startswith("  [tcpdump] ") for line in summary)


def test_clean_after_keep_leaves_nothing(runs: dict[str, Kept]) -> None:
    for r in runs.values():
        assert r.clean_code == 0
        assert r.left_after_clean == []


# -- the test's own oracles ---------------------------------------------------------------------


def test_captures_open_in_tshark_and_tcpdump_with_the_point_as_interface(runs: dict[str, Kept]) -> None:
    need_tool("tshark")
    for r in runs.values():
        for label, path in r.data["captures"].items():
            point = label.rsplit(" ", 1)[1]
            t = subprocess.run(["tshark", "-r", path, "-T", "fields", "-e", "frame.interface_name"],
                               capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
            assert t.returncode == 0, t.stderr
            names = t.stdout.split()
            assert names and set(names) == {point}, (label, set(names))
            d = subprocess.run(["tcpdump", "-n", "-r", path], capture_output=True, text=True, timeout=60, check=False)
            assert d.returncode == 0 and len(d.stdout.splitlines()) == len(names), d.stderr


def test_tcpdump_sees_incorrect_tcp_checksums_at_c2_before_the_fix_and_none_after(runs: dict[str, Kept]) -> None:
    bad, total = incorrect_tcp(capture(runs["plain"], "run", "c2:eth0"))
    assert bad > 0 and bad == total  # every TCP segment reaching c2 carries the pseudo-header sum alone
    bad, total = incorrect_tcp(capture(runs["fix"], "before fix", "c2:eth0"))
    assert bad > 0 and bad == total
    bad, total = incorrect_tcp(capture(runs["fix"], "after fix", "c2:eth0"))
    assert total > 10 and bad == 0
    for phase, run in (("run", runs["plain"]), ("before fix", runs["fix"])):
        # "ping works": ICMP checksums are computed in software and arrive correct.
        lines = tcpdump_vv(capture(run, phase, "c2:eth0"), "icmp")
        assert len([ln for ln in lines if "ICMP echo" in ln]) >= 6  # 3 requests and 3 replies
        assert not [ln for ln in lines if "wrong icmp cksum" in ln or "bad cksum" in ln or "incorrect" in ln]


def test_nstat_counts_the_dropped_segments_in_c2(runs: dict[str, Kept]) -> None:
    plain, fix = runs["plain"], runs["fix"]
    arrived_bad = incorrect_tcp(capture(plain, "run", "c2:eth0"))[0]
    # Every bad segment that reached c2 was counted; retransmissions after the capture stopped may add more.
    assert plain.nstat["c2"]["TcpInCsumErrors"] >= arrived_bad > 0
    assert plain.nstat["c2"]["TcpInCsumErrors"] >= plain.data["counters"]["c2"]["TcpInCsumErrors"] > 0
    assert plain.nstat["c1"]["TcpInCsumErrors"] == 0  # nothing c2 sent back was bad: c2 never answered
    before_bad = incorrect_tcp(capture(fix, "before fix", "c2:eth0"))[0]
    assert fix.nstat["c2"]["TcpInCsumErrors"] >= before_bad > 0
    assert fix.nstat["c2"]["TcpInSegs"] > NBYTES // 65536  # after the fix c2 accepted the transfer


def test_application_data_arrives_intact_only_after_the_fix(runs: dict[str, Kept]) -> None:
    tcp = runs["plain"].data["traffic"]["run"]["tcp"]
    assert not tcp["ok"] and tcp["server"]["bytes"] == 0 and tcp["client"]["error"]
    tcp = runs["fix"].data["traffic"]["after fix"]["tcp"]
    assert tcp["ok"] and tcp["client"]["error"] is None
    assert tcp["server"]["bytes"] == NBYTES
    assert tcp["server"]["sha256"] == tcp["client"]["sha256"]


def test_the_stream_tshark_reassembles_at_c2_is_what_the_client_sent(runs: dict[str, Kept]) -> None:
    """Independent of the agents: the bytes on the wire at c2, reassembled by tshark."""
    need_tool("tshark")
    run = runs["fix"]
    path = capture(run, "after fix", "c2:eth0")
    r = subprocess.run(["tshark", "-r", str(path), "-q", "-z", "follow,tcp,raw,0"], capture_output=True, text=True,
                       timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("Node 1:", 1)[1].splitlines()[1:]
    # Client-to-server data is unindented hex; the server's direction is indented with a tab.
    sent = bytes.fromhex("".join(ln.strip() for ln in lines if ln.strip() and not ln.startswith(("\t", "="))))
    assert len(sent) == NBYTES
    assert hashlib.sha256(sent).hexdigest() == run.data["traffic"]["after fix"]["tcp"]["client"]["sha256"]


def test_ethtool_shows_tx_offload_off_after_the_fix(runs: dict[str, Kept]) -> None:
    for ns in ("c1", "c2"):
        before = runs["plain"].ethtool[ns]
        assert before["tx-checksum-ip-generic"]["active"] is True  # the veth default: the cause
        after = runs["fix"].ethtool[ns]
        assert after["tx-checksumming"]["active"] is False
        assert after["tx-checksum-ip-generic"]["active"] is False


# -- counters split at the fix (Python API) -----------------------------------------------------


def test_no_checksum_errors_after_the_fix_python_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_root()
    need_tool("ovs-vswitchd")
    at_fix: dict[str, int] = {}
    real_set_feature = Lab.set_feature

    def read_then_fix(self: Lab, ns: str, dev: str, feature: str, on: bool) -> None:
        if not at_fix:  # the first fix step: the before-fix phase is over
            at_fix.update(nstat(self.ns("c2")))
        real_set_feature(self, ns, dev, feature, on)

    monkeypatch.setattr(Lab, "set_feature", read_then_fix)
    result = SCENARIO.run(tmp_path / "out", fix=True, keep=True)
    try:
        after = nstat(f"{result.prefix}-c2")
        feats = ethtool_k(f"{result.prefix}-c1", "eth0")
    finally:
        report = lab_state.clean(result.prefix)
    assert not report.errors and report.prefixes == [result.prefix]
    assert result.fix_applied and not result.symptom_observed
    assert at_fix["TcpInCsumErrors"] > 0  # before the fix: the symptom, counted by c2's kernel
    assert after["TcpInCsumErrors"] - at_fix["TcpInCsumErrors"] == 0  # after the fix: none
    assert after["TcpInSegs"] - at_fix["TcpInSegs"] > NBYTES // 65536
    assert feats["tx-checksumming"]["active"] is False
    assert inventory().of(result.prefix) == []


# -- badsum follow (eBPF) during the phases -----------------------------------------------------


def _follow(run: Kept, phase: str) -> dict:
    data = run.data["follow"].get(phase)
    assert data is not None and "not_run" not in data, f"badsum follow did not run in {phase}: {data}"
    return data


def _tcp_to_c2(data: dict) -> list[dict]:
    from badsum.lab.scenarios.ovs_userspace_veth import C2

    return [f for f in data["flows"] if f["flow"]["proto"] == 6 and f["flow"]["dst"] == C2]


def test_follow_names_the_unfinished_hop_and_counts_the_drops_nstat_counts(runs: dict[str, Kept]) -> None:
    """KB-005 from the kernel's side: PARTIAL up to host:c1-veth, re-created by ovs-vswitchd with
    nothing pending at host:c2-veth; the TCP_CSUM drops at c2:eth0 are the ones c2's own
    TcpInCsumErrors counts (nstat, read by this test in the kept namespace)."""
    for run, phase in ((runs["plain"], "run"), (runs["fix"], "before fix")):
        data = _follow(run, phase)
        flows = _tcp_to_c2(data)
        assert flows, data["summary"]
        for f in flows:
            fb = f["first_bad_hop"]
            assert fb is not None, f["hops"]
            assert (fb["after"], fb["before"], fb["kind"]) == ("host:c1-veth", "host:c2-veth", "unfinished"), fb
            assert fb["likely_causes"][0]["id"] in ("KB-005", "KB-007"), fb
        drops = sum(d["count"] for d in data["drops"] if d["reason"] == "TCP_CSUM" and d["label"] == "c2:eth0")
        assert drops == run.nstat["c2"]["TcpInCsumErrors"] > 0, (drops, run.nstat["c2"])
        # Nothing else went bad: the pings (checksummed in software) are fine.
        assert {fl["first_bad_hop"]["kind"] for fl in data["flows"] if fl["first_bad_hop"]} == {"unfinished"}


def test_follow_after_the_fix_sees_no_fault_and_no_drop(runs: dict[str, Kept]) -> None:
    data = _follow(runs["fix"], "after fix")
    assert _tcp_to_c2(data), data["summary"]
    assert data["summary"]["flows_bad"] == 0, [f["first_bad_hop"] for f in data["flows"]]
    assert not [d for d in data["drops"] if d["reason"].endswith("_CSUM")], data["drops"]
    # The transfer after the fix crossed the same datapath: its sums were complete at the sender.
    kinds = {k for f in _tcp_to_c2(data) for h in f["hops"] for k in h["kinds"]}
    assert kinds <= {"ok", "dropped", "unverifiable"}, kinds
