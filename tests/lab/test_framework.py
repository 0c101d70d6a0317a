"""The lab framework: topology as data, the journal, prefixes, `lab clean`, signals and bad input.

Pure tests (no mark) check what the framework decides without touching the kernel: documentation
addresses only, every build command inside a prefixed namespace, the journal round trip, prefix
rules, and what `clean` does with journals. Root tests (`@pytest.mark.root`) run the real CLI in
a subprocess and judge the result with independent tools: `ip -j netns list`, /proc, and the
inventory of tests/lab/conftest.py (which also checks, after every test, that nothing is left).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import need_root, need_tool
from labkit import Inventory, netns_names

from badsum.cli.main import main
from badsum.lab import evidence
from badsum.lab import state as lab_state
from badsum.lab.runner import CommandError, proc_starttime
from badsum.lab.scenarios import SCENARIOS
from badsum.lab.scenarios.ovs_userspace_veth import SCENARIO as OVS
from badsum.lab.state import PREFIX_RE, LabState, Proc, clean, new_prefix
from badsum.lab.topology import (
    Address,
    Bridge,
    Feature,
    Mtu,
    Route,
    Sysctl,
    Topology,
    TopologyError,
    Veth,
    Vxlan,
    build_commands,  # fmt: skip
    check_doc_address,
    route_commands,
)

BADSUM = [sys.executable, "-m", "badsum"]
SCENARIO = "ovs-userspace-veth"
RUN_TIMEOUT = 120


def lab_cli(*args: str | Path, env: dict[str, str] | None = None,
            timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([*BADSUM, "lab", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env, check=False)  # fmt: skip


def unused_prefix() -> str:
    taken = {n.split("-", 1)[0] for n in netns_names()}
    while True:
        p = new_prefix()
        if p not in taken and not (lab_state.RUN_ROOT / p).exists():
            return p


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def envelope(stdout: str) -> dict:
    doc = json.loads(stdout)
    assert set(doc) == {"schema_version", "command", "status", "data", "errors"}
    return doc


def tracefs_supported() -> bool:
    try:
        return "tracefs" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


def need_lab_tools() -> None:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "ovsdb-tool"):
        need_tool(tool)


@pytest.fixture
def short_run_root() -> Iterator[Path]:
    """A private journal root for a run started by this test (BADSUM_LAB_RUN), short enough for the
    private OVS's unix sockets (108 bytes), so `lab clean` there sees this test's journals only."""
    root = Path(tempfile.mkdtemp(prefix="bsl"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


# -- topology (pure) ----------------------------------------------------------------------------


@pytest.mark.parametrize("addr", ["192.0.2.1/24", "198.51.100.7", "203.0.113.254/32", "2001:db8::1/64",
                                  "2001:db8:ffff::2"])  # fmt: skip
def test_documentation_addresses_are_accepted(addr: str) -> None:
    check_doc_address(addr)


@pytest.mark.parametrize("addr", ["10.0.0.1/24", "192.0.3.1", "192.168.1.1/24", "8.8.8.8", "198.51.101.1",
                                  "203.0.112.9", "2001:db9::1", "fe80::1/64", "::1", "127.0.0.1"])  # fmt: skip
def test_other_addresses_are_refused(addr: str) -> None:
    with pytest.raises(TopologyError, match="not a documentation address"):
        check_doc_address(addr)


def _topology(**extra: object) -> Topology:
    t = Topology(name="t", namespaces=["a", "b"], veths=[Veth("a", "eth0", "b", "eth0")],
                 addresses=[Address("a", "eth0", "192.0.2.1/24"), Address("b", "eth0", "192.0.2.2/24")])  # fmt: skip
    for k, v in extra.items():
        getattr(t, k).extend(v)
    return t


@pytest.mark.parametrize("extra", [
    {"addresses": [Address("a", "eth0", "10.1.2.3/24")]},
    {"addresses": [Address("b", "eth0", "2001:db9::5/64")]},
    {"vxlans": [Vxlan("a", "vx0", 42, 4789, "192.0.2.1", "172.16.0.1", "eth0")]},
    {"vxlans": [Vxlan("a", "vx0", 42, 4789, "192.168.0.1", None, "eth0")]},
    {"routes": [Route("a", "10.0.0.0/8", via="192.0.2.2")]},
    {"routes": [Route("a", "default", via="192.168.1.1")]},
], ids=["ipv4-address", "ipv6-address", "vxlan-remote", "vxlan-local", "route-dst", "route-via"])  # fmt: skip
def test_validate_refuses_non_documentation_addresses(extra: dict) -> None:
    t = _topology(**extra)
    with pytest.raises(TopologyError, match="not a documentation address"):
        t.validate()
    with pytest.raises(TopologyError):
        build_commands(t, "bs000000")  # validation comes before any command


def test_validate_refuses_an_unknown_namespace() -> None:
    with pytest.raises(TopologyError, match="unknown namespace 'root'"):
        _topology(mtus=[Mtu("root", "eth0", 1400)]).validate()


def test_build_commands_act_only_inside_prefixed_namespaces() -> None:
    """Nothing in the root namespace: every argv names one of the run's namespaces."""
    t = _topology(
        bridges=[Bridge("b", "br0", ("eth0",), mtu=1450)],
        vxlans=[Vxlan("a", "vx0", 42, 4789, "192.0.2.1", "192.0.2.2", "eth0", udpcsum=True, mtu=1400)],
        mtus=[Mtu("a", "eth0", 1500)],
        sysctls=[Sysctl("a", "net.ipv4.ip_forward", "1")],
        features=[Feature("a", "eth0", "tx", False)],
        routes=[Route("a", "203.0.113.0/24", via="192.0.2.2"), Route("b", "default", dev="eth0")],
    )
    prefix = "bs0a1b2c"
    ours = {f"{prefix}-a", f"{prefix}-b"}
    cmds = build_commands(t, prefix) + route_commands(t, prefix)
    assert cmds[:2] == [["ip", "netns", "add", f"{prefix}-a"], ["ip", "netns", "add", f"{prefix}-b"]]
    for argv in cmds:
        assert all(isinstance(a, str) for a in argv), argv
        assert argv[0] == "ip", argv
        if argv[1:3] in (["netns", "add"], ["netns", "exec"]):
            assert argv[3] in ours, argv
        else:
            assert argv[1] == "-n" and argv[2] in ours, argv
        if "netns" in argv[3:]:  # the veth peer is created straight into the other namespace
            assert argv[argv.index("netns", 3) + 1] in ours, argv
    veth = next(c for c in cmds if "veth" in c)
    assert veth == ["ip", "-n", f"{prefix}-a", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                    "netns", f"{prefix}-b"]  # fmt: skip
    assert ["ip", "netns", "exec", f"{prefix}-a", "ethtool", "-K", "eth0", "tx", "off"] in cmds
    vx = next(c for c in cmds if "vxlan" in c)
    assert vx[vx.index("id") + 1] == "42" and "udpcsum" in vx and vx[vx.index("remote") + 1] == "192.0.2.2"
    assert route_commands(t, prefix)[-1] == ["ip", "-n", f"{prefix}-b", "route", "add", "default", "dev", "eth0"]


def test_every_scenario_topology_is_valid_and_uses_documentation_addresses() -> None:
    for s in SCENARIOS:
        t = s.topology()
        t.validate()
        assert build_commands(t, "bs000000"), s.name


# -- prefixes and the journal (pure) ------------------------------------------------------------


@pytest.mark.parametrize("good", ["bs000000", "bs1a2b3c", "bsffffff"])
def test_prefix_re_accepts(good: str) -> None:
    assert PREFIX_RE.match(good)


@pytest.mark.parametrize("bad", ["", "bs", "bs12345", "bs1234567", "BS123456", "bs12345G", "xs123456", "bs-12345",
                                 "bs12345\n", "../etc", "bs1234 6"])  # fmt: skip
def test_prefix_re_refuses(bad: str) -> None:
    assert not PREFIX_RE.match(bad)


def test_new_prefix_is_valid_and_random() -> None:
    many = {new_prefix() for _ in range(200)}
    assert all(PREFIX_RE.match(p) for p in many)
    assert len(many) > 190


@pytest.fixture
def run_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "run"
    monkeypatch.setattr(lab_state, "RUN_ROOT", root)
    return root


def test_journal_round_trip(run_root: Path) -> None:
    st = LabState("bs0a0b0c", "some-scenario", owner_pid=4242, owner_starttime=99,
                  namespaces=["bs0a0b0c-host", "bs0a0b0c-c1"],
                  procs=[Proc("tcpdump-x", 1234, 5678, ["tcpdump", "-i", "eth0"])],
                  tracefs_instance="/sys/kernel/tracing/instances/badsum-bs0a0b0c", mounted_tracefs=None)  # fmt: skip
    st.save()
    path = run_root / "bs0a0b0c" / "state.json"
    assert st.dir == run_root / "bs0a0b0c"
    assert sorted(p.name for p in st.dir.iterdir()) == ["state.json"]  # written atomically, no .tmp left
    raw = json.loads(path.read_text())
    assert raw["prefix"] == "bs0a0b0c" and raw["procs"][0]["pid"] == 1234 and raw["owner_pid"] == 4242
    assert LabState.load(path) == st
    st.procs.append(Proc("ovsdb-server", 7, None, ["ovsdb-server"]))
    st.save()
    assert LabState.load(path) == st


def test_journal_without_owner_fields_still_loads(run_root: Path) -> None:
    path = run_root / "bs0d0e0f" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"prefix": "bs0d0e0f", "scenario": "x", "namespaces": [], "procs": [],
                                "tracefs_instance": None, "mounted_tracefs": None}))  # fmt: skip
    st = LabState.load(path)
    assert st.owner_pid is None and not lab_state.owner_alive(st)


def _journal(prefix: str, **kw: object) -> LabState:
    st = LabState(prefix, "fake", **kw)  # type: ignore[arg-type]
    st.save()
    return st


def test_clean_by_prefix_touches_only_that_journal(run_root: Path) -> None:
    a, b = unused_prefix(), unused_prefix()
    _journal(a)
    _journal(b)
    stranger = run_root / "not-a-lab"  # a directory whose name is not a prefix: never ours
    stranger.mkdir()
    (stranger / "state.json").write_text(json.dumps({"prefix": "not-a-lab"}))
    report = clean(a)
    assert report.prefixes == [a] and not report.errors
    assert not (run_root / a).exists()
    assert (run_root / b / "state.json").exists()
    assert (stranger / "state.json").exists()
    report = clean()
    assert report.prefixes == [b] and not (run_root / b).exists()
    assert (stranger / "state.json").exists()


def test_clean_leaves_a_running_lab_alone(run_root: Path) -> None:
    """A journal whose owner still runs is a concurrent lab: `clean` must not pull it down."""
    live = unused_prefix()
    _journal(live, owner_pid=os.getpid(), owner_starttime=proc_starttime(os.getpid()))
    report = clean()
    assert report.running == [live] and report.prefixes == [] and not report.errors
    assert (run_root / live / "state.json").exists()
    report = clean(live)
    assert report.running == [live] and report.errors and "still running" in report.errors[0]
    assert (run_root / live / "state.json").exists()
    # A recycled pid (same pid, another start time) is not the owner any more.
    _journal(live, owner_pid=os.getpid(), owner_starttime=(proc_starttime(os.getpid()) or 0) + 1)
    assert clean(live).prefixes == [live]


def test_clean_kills_a_recorded_process_only_if_it_is_still_the_same_process(run_root: Path) -> None:
    mine = subprocess.Popen(["sleep", "60"])
    other = subprocess.Popen(["sleep", "60"])
    try:
        started = proc_starttime(mine.pid)
        # `other` is recorded with a wrong start time: its pid was "recycled", so it is not ours.
        wrong = (proc_starttime(other.pid) or 0) + 7
        _journal(unused_prefix(), procs=[Proc("sleep", mine.pid, started, ["sleep", "60"]),
                                         Proc("sleep", other.pid, wrong, ["sleep", "60"])])  # fmt: skip
        report = clean()
        assert mine.wait(5) == -signal.SIGKILL
        assert report.killed == [mine.pid]
        assert other.poll() is None
    finally:
        for p in (mine, other):
            if p.poll() is None:
                p.kill()
            p.wait(5)


# -- CLI usage errors (pure, in-process) --------------------------------------------------------


def in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_lab_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = in_process(capsys, "lab", "list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [s.name for s in SCENARIOS]
    code, out, _ = in_process(capsys, "lab", "list", "--json")
    doc = envelope(out)
    assert code == 0 and doc["command"] == "lab list" and doc["status"] == "ok"
    assert [s["name"] for s in doc["data"]["scenarios"]] == [s.name for s in SCENARIOS]
    assert {"name", "title", "kb", "needs_ovs"} <= set(doc["data"]["scenarios"][0])


def test_unknown_scenario_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    before = set(netns_names())
    code, out, err = in_process(capsys, "lab", "run", "no-such-scenario", "--out", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert err.startswith("badsum: unknown scenario 'no-such-scenario'") and SCENARIO in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert set(netns_names()) == before


@pytest.mark.parametrize("bad", ["bs12", "BS123456", "bs1234567", "bs12345g", "mylab", "bs123456-x"])
@pytest.mark.parametrize("action", ["run", "clean"])
def test_invalid_prefix_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, bad: str, action: str) -> None:
    argv = ["lab", "run", SCENARIO, "--out", str(tmp_path / "out")] if action == "run" else ["lab", "clean"]
    code, out, err = in_process(capsys, *argv, "--prefix", bad)
    assert code == 2 and out == ""
    assert err == f"badsum: --prefix must be 'bs' and 6 hex digits, not {bad!r}\n"
    assert not (tmp_path / "out").exists()


def test_lab_without_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = in_process(capsys, "lab")
    assert code == 2 and "ACTION" in err


def test_not_root_exits_3_and_builds_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # Becoming non-root for real is not possible here: the interpreter and the repository live
    # under /root, which another user cannot read. So the check is made in-process, with the
    # effective uid the preflight reads replaced.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    before = set(netns_names())
    code, out, err = in_process(capsys, "lab", "run", SCENARIO, "--out", str(tmp_path / "out"))
    assert code == 3 and out == ""
    assert err == "badsum: labs need root (network namespaces, veth, ethtool): run with sudo\n"
    code, out, err = in_process(capsys, "lab", "run", SCENARIO, "--json", "--out", str(tmp_path / "out"))
    doc = envelope(out)
    assert code == 3 and doc["status"] == "error" and doc["command"] == "lab run"
    assert doc["data"] == {"scenario": SCENARIO}
    assert doc["errors"] == [{"code": "lab.cannot_run", "message": err.removeprefix("badsum: ").strip()}]
    assert not (tmp_path / "out").exists()
    assert set(netns_names()) == before


# -- bad input on the real host (root) ----------------------------------------------------------


@pytest.mark.root
def test_prefix_collision_exits_3_and_leaves_the_namespace_alone(tmp_path: Path, lab_inventory) -> None:
    need_lab_tools()
    prefix = unused_prefix()
    theirs = f"{prefix}-x"
    subprocess.run(["ip", "netns", "add", theirs], check=True, timeout=10)
    try:
        r = lab_cli("run", SCENARIO, "--prefix", prefix, "--json", "--out", tmp_path / "out")
        assert r.returncode == 3, r.stderr
        assert r.stderr == (f"badsum: objects with prefix {prefix} already exist (namespace {theirs}): "
                            f"run `badsum lab clean --prefix {prefix}` first\n")  # fmt: skip
        doc = envelope(r.stdout)
        assert doc["status"] == "error" and doc["errors"][0]["code"] == "lab.cannot_run"
        assert [n for n in netns_names() if n.startswith(prefix)] == [theirs]
        assert not (lab_state.RUN_ROOT / prefix).exists()
        assert not (tmp_path / "out").exists()
        assert [str(i) for i in lab_inventory().of(prefix)] == [f"namespace {theirs}"]
    finally:
        subprocess.run(["ip", "netns", "delete", theirs], check=False, timeout=10)


@pytest.mark.root
def test_prefix_collision_with_a_leftover_journal_exits_3(tmp_path: Path) -> None:
    need_lab_tools()
    prefix = unused_prefix()
    journal = lab_state.RUN_ROOT / prefix
    journal.mkdir(parents=True)
    try:
        r = lab_cli("run", SCENARIO, "--prefix", prefix, "--out", tmp_path / "out")
        assert r.returncode == 3
        assert f"journal {journal}" in r.stderr and f"badsum lab clean --prefix {prefix}" in r.stderr
        assert not [n for n in netns_names() if n.startswith(prefix)]
        assert journal.is_dir() and not any(journal.iterdir())
    finally:
        shutil.rmtree(journal, ignore_errors=True)


@pytest.mark.root
def test_ovs_not_installed_exits_3_and_builds_nothing(tmp_path: Path) -> None:
    need_lab_tools()
    # A PATH that has every tool of this host except Open vSwitch's.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]:
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = bin_dir / name
            if not name.startswith("ovs") and not target.exists() and not target.is_symlink():
                target.symlink_to(os.path.join(d, name))
    env = {**os.environ, "PATH": str(bin_dir)}
    assert subprocess.run(["which", "ovs-vswitchd"], env=env, capture_output=True, check=False).returncode != 0
    before = set(netns_names())
    r = lab_cli("run", SCENARIO, "--out", tmp_path / "out", env=env)
    assert r.returncode == 3, r.stderr
    assert r.stderr == "badsum: ovsdb-server not found: install Debian's openvswitch-switch\n"
    assert r.stdout == ""
    assert set(netns_names()) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.root
def test_unwritable_out_folder_exits_3_and_builds_nothing(tmp_path: Path) -> None:
    need_lab_tools()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    before = set(netns_names())
    r = lab_cli("run", SCENARIO, "--json", "--out", blocker / "out")
    assert r.returncode == 3, r.stderr
    assert r.stderr == f"badsum: {blocker / 'out'}: Not a directory\n"
    assert envelope(r.stdout)["errors"][0]["code"] == "lab.cannot_run"
    assert set(netns_names()) == before


@pytest.mark.root
def test_tracefs_missing_the_run_still_works_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_lab_tools()
    # No tracefs where it is normally mounted, and mounting it fails as on a kernel without it.
    monkeypatch.setattr(evidence, "TRACEFS_CANDIDATES", ("/nonexistent/tracing", "/nonexistent/debug/tracing"))
    real_run = evidence.run

    def no_tracefs(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        if argv[0] == "mount":
            raise CommandError(argv, "mount: unknown filesystem type 'tracefs'.")
        return real_run(argv, **kw)

    monkeypatch.setattr(evidence, "run", no_tracefs)
    out = tmp_path / "out"
    result = OVS.run(out, fix=False)
    assert result.drops == []
    assert result.drops_note == "tracefs not available: mount: unknown filesystem type 'tracefs'."
    assert result.symptom_observed  # the rest of the evidence does not depend on tracing
    saved = json.loads((out / "result.json").read_text())
    assert saved["drops_note"] == result.drops_note and saved["drops"] == []
    assert json.loads((out / "drops.json").read_text()) == []


# -- crashes and signals (root) -----------------------------------------------------------------


def _start(prefix: str, out: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*BADSUM, "lab", "run", SCENARIO, "--prefix", prefix, "--out", str(out)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def _wait_built(prefix: str, proc: subprocess.Popen[str], inventory: Callable[[], Inventory],
                capturing: bool = False) -> None:  # fmt: skip
    """Until the run's namespaces and private OVS exist (and, if asked, tcpdump runs in c2)."""
    want = {f"{prefix}-host", f"{prefix}-c1", f"{prefix}-c2"}

    def ready() -> bool:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        inv = [str(i) for i in inventory().of(prefix)]
        ok = want <= set(netns_names()) and any("ovs-vswitchd" in i for i in inv)
        return ok and (not capturing or any(" tcpdump " in i for i in inv))

    wait_until(ready, 60, f"lab {prefix} to be built")


def _gone(prefix: str, inventory: Callable[[], Inventory]) -> list[str]:
    deadline = time.monotonic() + 5
    while (left := [str(i) for i in inventory().of(prefix)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.root
def test_sigkill_then_clean_prefix_removes_that_run_and_nothing_else(tmp_path: Path, lab_inventory) -> None:
    need_lab_tools()
    prefix, other = unused_prefix(), unused_prefix()
    keepme = f"keepme-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", keepme], check=True, timeout=10)
    fake = lab_state.RUN_ROOT / other / "state.json"  # a crashed run of another prefix: not ours to clean now
    LabState(other, "fake", namespaces=[f"{other}-x"]).save()
    fake_text = fake.read_text()
    proc = _start(prefix, tmp_path / "out")
    try:
        _wait_built(prefix, proc, lab_inventory, capturing=True)
        proc.kill()
        proc.wait(10)
        left = lab_inventory().kinds(prefix)
        assert {"namespace", "journal", "process"} <= left, left
        if tracefs_supported():
            assert "tracefs instance" in left, left  # drop tracing was on when the run died
        procs = [str(i) for i in lab_inventory().of(prefix) if i.kind == "process"]
        for program in ("ovsdb-server", "ovs-vswitchd", "tcpdump"):
            assert any(f" {program} " in p for p in procs), (program, procs)
        r = lab_cli("clean", "--prefix", prefix, "--json")
        assert r.returncode == 0, r.stderr
        data = envelope(r.stdout)["data"]
        assert data["prefixes"] == [prefix]
        assert sorted(data["namespaces"]) == sorted(f"{prefix}-{n}" for n in ("host", "c1", "c2"))
        assert data["killed"] and data["running"] == []
        assert _gone(prefix, lab_inventory) == []
        assert keepme in netns_names()
        assert fake.read_text() == fake_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        lab_cli("clean", "--prefix", prefix)
        subprocess.run(["ip", "netns", "delete", keepme], check=False, timeout=10)
        shutil.rmtree(fake.parent, ignore_errors=True)
    assert keepme not in netns_names()


@pytest.mark.root
def test_sigkill_then_clean_removes_every_dead_run_but_not_a_live_one(short_run_root: Path, tmp_path: Path,
                                                                      lab_inventory) -> None:  # fmt: skip
    need_lab_tools()
    env = {**os.environ, "BADSUM_LAB_RUN": str(short_run_root)}
    prefix, live = unused_prefix(), unused_prefix()
    keepme = f"keepme-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", keepme], check=True, timeout=10)
    # A journal whose owner (this pytest process) is alive: a lab running right now.
    (short_run_root / live).mkdir()
    (short_run_root / live / "state.json").write_text(json.dumps(
        {"prefix": live, "scenario": "fake", "owner_pid": os.getpid(), "owner_starttime": proc_starttime(os.getpid()),
         "namespaces": [], "procs": [], "tracefs_instance": None, "mounted_tracefs": None}))  # fmt: skip
    proc = _start(prefix, tmp_path / "out", env)
    try:
        _wait_built(prefix, proc, lab_inventory)
        proc.kill()
        proc.wait(10)
        assert (short_run_root / prefix / "state.json").exists()
        assert "namespace" in lab_inventory().kinds(prefix)
        r = lab_cli("clean", env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("removed 3 namespace(s) of 1 run(s); stopped ")
        assert r.stderr == f"badsum: left alone, still running: {live}\n"
        assert _gone(prefix, lab_inventory) == []
        assert not (short_run_root / prefix).exists()
        assert (short_run_root / live / "state.json").exists()
        assert keepme in netns_names()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        lab_cli("clean", "--prefix", prefix, env=env)
        subprocess.run(["ip", "netns", "delete", keepme], check=False, timeout=10)


@pytest.mark.root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_tears_down_and_exits_130(sig: signal.Signals, tmp_path: Path, lab_inventory) -> None:
    need_lab_tools()
    prefix = unused_prefix()
    proc = _start(prefix, tmp_path / "out")
    try:
        _wait_built(prefix, proc, lab_inventory, capturing=True)  # mid-run: the captures are running
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert err.endswith("badsum: interrupted\n") and "Traceback" not in err
        assert time.monotonic() - t0 < 30
        assert _gone(prefix, lab_inventory) == []
        assert not (lab_state.RUN_ROOT / prefix).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        lab_cli("clean", "--prefix", prefix)


@pytest.mark.root
def test_clean_does_not_touch_a_run_in_progress(short_run_root: Path, tmp_path: Path, lab_inventory) -> None:
    need_lab_tools()
    env = {**os.environ, "BADSUM_LAB_RUN": str(short_run_root)}
    prefix = unused_prefix()
    proc = _start(prefix, tmp_path / "out", env)
    try:
        _wait_built(prefix, proc, lab_inventory)
        r = lab_cli("clean", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert envelope(r.stdout)["data"]["running"] == [prefix]
        r = lab_cli("clean", "--prefix", prefix, env=env)
        assert r.returncode == 3
        assert f"badsum: {prefix} is still running (pid {proc.pid}); stop that run first" in r.stderr
        assert {f"{prefix}-host", f"{prefix}-c1", f"{prefix}-c2"} <= set(netns_names())
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 1, err  # the run finished undisturbed: the symptom was observed
        assert out.startswith(f"{SCENARIO}: reproduced")
        assert _gone(prefix, lab_inventory) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        lab_cli("clean", "--prefix", prefix, env=env)
