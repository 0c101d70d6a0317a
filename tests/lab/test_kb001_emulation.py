"""veth-marks-verified (KB-001 emulated) on the real kernel, with and without --fix, judged by
oracles the test reads itself while `badsum lab run --json` runs: `tc -j filter show` and
`nstat` inside the lab's namespaces, the application's bytes against the payload's own sha256,
the relay's flip log, and afterwards `ip -j netns list` and the kernel's list of BPF programs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from support import need_root, need_tool

pytestmark = pytest.mark.root

PROGRAM = "kb001_veth_xmit"
NBYTES = 256 * 1024
PORT_BEFORE, PORT_AFTER = 9100, 9200


class Run(NamedTuple):
    doc: dict
    """The `--json` envelope."""
    rc: int
    out: Path
    prefix: str
    filters: list[list[dict]]
    """Every `tc -j filter show dev veth-c2 egress` in h2 seen while the run lasted."""
    csum_errors_c2: list[int]
    """`nstat` TcpInCsumErrors in c2, sampled while the run lasted (the namespace's counters start at 0)."""
    prog_ids: set[int]


def _ns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def _sh(argv: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _nstat(ns: str) -> int | None:
    r = _sh(["ip", "netns", "exec", ns, "nstat", "-asz", "TcpInCsumErrors"])
    for line in r.stdout.splitlines():
        if line.startswith("TcpInCsumErrors"):
            return int(line.split()[1])
    return None


def _run(tmp: Path, fix: bool) -> Run:
    from badsum.lab.state import new_prefix

    prefix, out = new_prefix(), tmp / ("fix" if fix else "nofix")
    argv = [sys.executable, "-m", "badsum", "lab", "run", "veth-marks-verified", "--json", "--out", str(out),
            "--prefix", prefix, *(["--fix"] if fix else [])]  # fmt: skip
    # The envelope goes to a file: a pipe nobody reads while polling would fill and stall the run.
    out.parent.mkdir(parents=True, exist_ok=True)
    envelope, log = out.parent / f"{out.name}.json", out.parent / f"{out.name}.stderr"
    with envelope.open("w") as so, log.open("w") as se:
        proc = subprocess.Popen(argv, stdout=so, stderr=se, text=True)
    filters: list[list[dict]] = []
    errors: list[int] = []
    ids: set[int] = set()
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if _ns_exists(f"{prefix}-h2"):
            r = _sh(["ip", "netns", "exec", f"{prefix}-h2", "tc", "-j", "filter", "show", "dev", "veth-c2", "egress"])
            if r.returncode == 0 and r.stdout.strip():
                shown = json.loads(r.stdout)
                filters.append(shown)
                ids |= {f["options"]["prog"]["id"] for f in shown if f.get("options", {}).get("prog")}
        if _ns_exists(f"{prefix}-c2") and (n := _nstat(f"{prefix}-c2")) is not None:
            errors.append(n)
        time.sleep(0.1)
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: the lab tears down
    proc.wait(timeout=60)
    assert envelope.read_text().strip(), log.read_text()[-2000:]
    return Run(json.loads(envelope.read_text()), proc.returncode, out, prefix, filters, errors, ids)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Run]:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "tc"):
        need_tool(tool)
    from badsum.lab import kb001

    if why := kb001.why_not():
        pytest.skip(f"KB-001 cannot be emulated here: {why}")
    tmp = tmp_path_factory.mktemp("kb001")
    return {fix: _run(tmp, fix) for fix in (False, True)}


def _flips(run: Run, port: int) -> int:
    lines = (run.out / "relay-flips.jsonl").read_text().splitlines()
    return sum(json.loads(line)["dport"] == port for line in lines if line)


def _want() -> str:
    from badsum.lab.agent import payload

    return hashlib.sha256(payload(NBYTES)).hexdigest()


def test_both_runs_finished(runs: dict[bool, Run]) -> None:
    for fix, run in runs.items():
        assert run.doc["status"] != "error" and not run.doc["errors"], (fix, run.doc["errors"])
        assert run.doc["data"]["scenario"] == "veth-marks-verified"
        assert run.doc["data"]["fix_applied"] is fix


def test_without_fix_corrupt_data_reaches_the_application_and_no_counter_moves(runs: dict[bool, Run]) -> None:
    run = runs[False]
    data = run.doc["data"]
    tcp = data["traffic"]["routed-emulated"]["tcp"]
    flips = _flips(run, PORT_BEFORE)
    assert flips > 0, "the relay flipped nothing"
    # The application got every byte, and they are not the bytes the payload hashes to.
    assert tcp["server"]["bytes"] == NBYTES
    assert tcp["client"]["sha256"] == _want() != tcp["server"]["sha256"]
    # nstat in c2, read by this test: TcpInCsumErrors never moved during the whole run.
    assert run.csum_errors_c2 and set(run.csum_errors_c2) == {0}, run.csum_errors_c2
    assert data["reproduced"] is True and data["symptom_observed"] is True
    assert run.rc == 1  # findings: corrupt data delivered


def test_with_fix_the_kernel_drops_the_corrupt_segments_and_data_arrives_intact(runs: dict[bool, Run]) -> None:
    run = runs[True]
    data = run.doc["data"]
    before, after = data["traffic"]["routed-emulated"]["tcp"], data["traffic"]["routed-rx-off"]["tcp"]
    assert before["server"]["sha256"] != _want() and before["server"]["bytes"] == NBYTES
    assert after["server"]["bytes"] == NBYTES and after["server"]["sha256"] == after["client"]["sha256"] == _want()
    # nstat in c2: every corrupt segment of the phase after the fix was dropped by c2's TCP, none before.
    n_after = _flips(run, PORT_AFTER)
    assert n_after > 0 and _flips(run, PORT_BEFORE) > 0
    assert run.csum_errors_c2[0] == 0 and max(run.csum_errors_c2) == n_after, run.csum_errors_c2
    assert data["traffic"]["routed-emulated"]["counters"]["c2"]["TcpInCsumErrors"] == 0
    assert data["traffic"]["routed-rx-off"]["counters"]["c2"]["TcpInCsumErrors"] == n_after
    assert data["fix_applied"] is True and data["symptom_observed"] is False and data["reproduced"] is True
    assert run.rc == 0


def test_the_filter_is_there_during_the_run(runs: dict[bool, Run]) -> None:
    for fix, run in runs.items():
        progs = [f["options"] for shown in run.filters for f in shown if f.get("options", {}).get("prog")]
        assert progs, f"tc never showed a filter on h2:veth-c2 egress (fix={fix})"
        assert {p["prog"]["name"] for p in progs} == {PROGRAM}
        assert all(p["direct-action"] for p in progs)
        assert all(p["bpf_name"].startswith("kb001_veth.bpf.o") for p in progs), progs
        assert len(run.prog_ids) == 1
        assert run.doc["data"]["traffic"]["emulation"]["program_id"] in run.prog_ids


def test_nothing_is_left_behind(runs: dict[bool, Run]) -> None:
    netns = [e["name"] for e in json.loads(_sh(["ip", "-j", "netns", "list"]).stdout or "[]")]
    for run in runs.values():
        assert not [n for n in netns if n.startswith(run.prefix + "-")]
    ids = {rid for run in runs.values() for rid in run.prog_ids}
    if (bpftool := _sh(["sh", "-c", "command -v bpftool"]).stdout.strip()):
        listed = json.loads(_sh([bpftool, "-j", "prog", "show"]).stdout or "[]")
        loaded = {(p["id"], p.get("name", "")) for p in listed}
    else:
        from badsum.kernel import libbpf

        loaded = {(i, name) for i, _, name in libbpf.loaded_programs()}
    assert not {i for i, _ in loaded} & ids, "the emulation's program outlived the lab"
    assert not [i for i, name in loaded if name == PROGRAM]


def test_follow_sees_the_mark_at_the_veth_before_the_fix_and_not_after(runs: dict[bool, Run]) -> None:
    for fix, run in runs.items():
        data = run.doc["data"]
        emulated = data["follow"]["routed-emulated"]
        assert "not_run" not in emulated, emulated
        # Rows by device and direction: a device can also have a `drop` row (an unrelated drop there).
        hops = {(h["device"], h["direction"]): h for f in emulated["flows"] for h in f["hops"]
                if f["flow"]["dport"] == PORT_BEFORE}  # fmt: skip
        flips = _flips(run, PORT_BEFORE)
        assert hops[("c2:eth0", "in")]["kinds"].get("marked-verified-bad") == flips, hops[("c2:eth0", "in")]
        assert hops[("h2:veth-c2", "out")]["kinds"].get("marked-verified-bad") == flips
        assert hops[("h2:eth0", "in")]["kinds"].get("bad") == flips  # unverified (NONE) and wrong before the veth
        if fix:
            fixed = data["follow"]["routed-rx-off"]
            assert "marked-verified-bad" not in fixed["summary"]["hops_by_kind"]
            assert sum(d["count"] for d in fixed["drops"] if d["reason"] == "TCP_CSUM" and d["label"] == "c2:eth0") \
                == _flips(run, PORT_AFTER)


def test_every_output_says_the_bug_was_emulated_where_and_which_commit_fixed_it(runs: dict[bool, Run]) -> None:
    for run in runs.values():
        for data in (run.doc["data"], json.loads((run.out / "result.json").read_text())):
            emu = data["traffic"]["emulation"]
            assert emu["emulated"] is True and emu["kb"] == "KB-001"
            assert (emu["hook"], emu["device"], emu["receiving_device"]) == ("tc egress", "h2:veth-c2", "c2:eth0")
            assert emu["fixed_by"] == "ce8c839b74e3" and emu["fixed_in"] == "Linux 4.4"
            assert "EMULATED" in data["verdict"] and "ce8c839b74e3" in data["verdict"]
            assert data["evidence"][0]["oracle"] == "emulation"
            # The shared field every emulating lab fills (the same record).
            assert [e["kb"] for e in data["emulation"]] == ["KB-001"]
            assert {k: data["emulation"][0][k] for k in ("hook", "device", "fixed_by", "fixed_in", "emulated")} == \
                {k: emu[k] for k in ("hook", "device", "fixed_by", "fixed_in", "emulated")}
        summary = (run.out / "summary.txt").read_text()
        assert "KB-001 EMULATED" in summary.splitlines()[0] and "tc egress on h2:veth-c2" in summary
        assert "  EMULATED KB-001 (tc egress on h2:veth-c2): " in summary and "ce8c839b74e3" in summary
