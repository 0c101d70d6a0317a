"""The HTTP endpoint, health, the canary result, and the CLI.

A scrape never waits for a collection: proved by scraping while a collection is held inside the
snapshot (an Event it waits on), not by timing anything.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporterkit import (
    FIXTURES,
    Clock,
    collected,
    exporter_over,
    load,
    parse,
    scrape,
    values,
)
from support import need_root

from badsum.cli.canary import write_state
from badsum.exporter.canary import read_state
from badsum.exporter.collector import Exporter, Options
from badsum.exporter.server import Endpoint, parse_listen
from badsum.lab.canary import CanaryReport, Outcome

BADSUM = [sys.executable, "-m", "badsum"]
#: A guard against a hung test, never a pass criterion.
HANG_GUARD_S = 60


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HANG_GUARD_S) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def endpoint_of() -> Iterator:
    started: list[Endpoint] = []

    def start(ex: Exporter) -> str:
        ep = Endpoint(ex, "127.0.0.1", 0)
        ep.start()
        started.append(ep)
        host, port = ep.address
        return f"http://{host}:{port}"

    yield start
    for ep in started:
        ep.stop()


def test_a_scrape_during_a_slow_collection_returns_the_previous_set(endpoint_of) -> None:
    clean = load(FIXTURES / "clean-host.json")
    inside, release = threading.Event(), threading.Event()
    calls = []

    def snap(_now: float):
        calls.append(1)
        if len(calls) == 2:
            inside.set()
            release.wait(HANG_GUARD_S)
        return clean

    ex = Exporter(Options(interval=1), snapshot=snap)
    ex.collect_once()
    base = endpoint_of(ex)
    code, first = get(f"{base}/metrics")
    assert code == 200
    worker = threading.Thread(target=ex.collect_once)
    worker.start()
    try:
        assert inside.wait(HANG_GUARD_S)
        for _ in range(5):
            code, text = get(f"{base}/metrics")  # returns while the collection is still held
            assert code == 200 and not release.is_set()
            assert parse(text)["badsum_checksum_errors"] == parse(first)["badsum_checksum_errors"]
        code, body = get(f"{base}/healthz")
        assert code == 200 and body.startswith("ok")
    finally:
        release.set()
        worker.join(HANG_GUARD_S)
    assert len(calls) == 2 and not worker.is_alive()


def test_healthz_before_fresh_and_stale(endpoint_of) -> None:
    clock = Clock()
    ex = exporter_over([load(FIXTURES / "clean-host.json")], interval=30, clock=clock)
    base = endpoint_of(ex)
    code, body = get(f"{base}/healthz")
    assert code == 503 and "no collection" in body
    ex.collect_once()
    assert get(f"{base}/healthz")[0] == 200
    clock.now += 3 * 30 + 3 * (ex.latest.duration_s or 0) + 1
    code, body = get(f"{base}/healthz")
    assert code == 503 and body.startswith("stale")
    ex.dead = "collector stopped: RuntimeError: x"
    assert get(f"{base}/healthz") == (503, "collector stopped: RuntimeError: x\n")


def test_metrics_path_index_and_404(endpoint_of) -> None:
    ex = collected([load(FIXTURES / "clean-host.json")])
    base = endpoint_of(ex)
    code, text = get(f"{base}/metrics")
    assert code == 200 and parse(text) == scrape(ex)
    assert get(f"{base}/")[0] == 200
    assert get(f"{base}/nope")[0] == 404


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9847") == ("127.0.0.1", 9847)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9847", ":80", "host:x", "host:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# -- the canary result -------------------------------------------------------------------------


def report(statuses: dict[str, str]) -> CanaryReport:
    return CanaryReport([Outcome(d, s, "why", s != "ABSENT", []) for d, s in statuses.items()], prefix="bs123456")


def test_canary_families_from_the_state_file_canary_writes(tmp_path: Path) -> None:
    state = tmp_path / "run" / "canary.json"
    assert write_state(str(state), report({"veth": "PASS", "ovs-netdev": "FAIL", "vxlan": "ABSENT", "bridge": "UNKNOWN"}))
    assert not list(state.parent.glob("*.part"))
    got = read_state(str(state))
    assert got is not None and got.statuses["ovs-netdev"] == "FAIL" and got.finished_at
    m = scrape(collected([load(FIXTURES / "clean-host.json")], canary_file=str(state)))
    assert sorted((lb["datapath"], v) for _, lb, v in m["badsum_canary_ok"]) == [("ovs-netdev", 0.0), ("veth", 1.0)]
    assert values(m["badsum_canary_last_run_timestamp_seconds"]) == [got.finished_at]
    assert values(m["badsum_collection_errors"], stage="canary") == [0]


def test_no_canary_file_no_canary_series_and_a_bad_one_is_an_error(tmp_path: Path) -> None:
    m = scrape(collected([load(FIXTURES / "clean-host.json")], canary_file=str(tmp_path / "none.json")))
    assert "badsum_canary_ok" not in m and values(m["badsum_collection_errors"], stage="canary") == [0]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    m = scrape(collected([load(FIXTURES / "clean-host.json")], canary_file=str(bad)))
    assert "badsum_canary_ok" not in m and values(m["badsum_collection_errors"], stage="canary") == [1]


def test_canary_state_file_write_failure_is_exit_3_material(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert write_state(str(blocker / "canary.json"), report({"veth": "PASS"})) is False


# -- the CLI -----------------------------------------------------------------------------------


def badsum(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*BADSUM, *args], capture_output=True, text=True, timeout=HANG_GUARD_S * 3, check=False, **kw)


def test_cli_usage_errors_exit_2() -> None:
    for args in (["--listen", "nowhere"], ["--interval", "0"], ["--max-namespaces", "0"], ["--canary-every", "5"]):
        r = badsum("exporter", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip().splitlines()[-1].startswith(("badsum", "usage")) and "Traceback" not in r.stderr


def test_cli_address_in_use_exits_3() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = badsum("exporter", "--listen", f"127.0.0.1:{port}", "--no-drops")
    assert r.returncode == 3
    assert r.stderr.splitlines()[-1].startswith(f"badsum: cannot listen on 127.0.0.1:{port}:")
    assert "Traceback" not in r.stderr


def test_cli_once_prints_a_parseable_exposition() -> None:
    r = badsum("exporter", "--once", "--canary-file", "/nonexistent/canary.json")
    assert r.returncode == 0, r.stderr
    m = parse(r.stdout)
    assert values(m["badsum_build_info"]) == [1.0]
    assert values(m["badsum_namespaces"])[0] >= 1
    assert "badsum_collection_duration_seconds" in m


def test_cli_sigterm_stops_cleanly_and_removes_its_tracefs_instance() -> None:
    need_root()
    p = subprocess.Popen([*BADSUM, "exporter", "--listen", "127.0.0.1:0", "--interval", "1",
                          "--canary-file", "/nonexistent/canary.json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = ""
        while "serving http://" not in line:
            line = p.stderr.readline()  # type: ignore[union-attr]
            assert line, "the exporter exited before serving"
        url = line.split("serving ", 1)[1].split(",", 1)[0]
        status = 0
        for _ in range(HANG_GUARD_S * 10):
            status, _body = get(url.replace("/metrics", "/healthz"))
            if status == 200:
                break
            threading.Event().wait(0.1)
        assert status == 200
        code, text = get(url)
        assert code == 200 and values(parse(text)["badsum_build_info"]) == [1.0]
        instance = f"badsum-exporter-{p.pid}"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=HANG_GUARD_S * 2)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert err.strip().splitlines()[-1] == "badsum: exporter: stopped"
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        assert not os.path.exists(os.path.join(root, "instances", instance))
    mounts = Path("/proc/self/mounts").read_text()
    assert f"badsum-exporter-{p.pid}" not in mounts


# -- --canary-every: the runner, with a stand-in for `badsum canary` -----------------------------

FAKE_CANARY = """
import json, sys, time
args = sys.argv[1:]
path = args[args.index("--state-file") + 1]
if "{mode}" == "hang":
    open(path + ".started", "w").close()
    time.sleep(600)
doc = {{"schema_version": 1, "command": "canary", "status": "findings", "errors": [],
       "data": {{"finished_at": 1767225600.5, "outcomes": [{{"datapath": "veth", "status": "FAIL"}}]}}}}
open(path, "w").write(json.dumps(doc))
sys.exit(1)
"""


def test_canary_runner_runs_the_canary_and_the_exporter_reads_its_result(tmp_path: Path) -> None:
    from badsum.exporter.canary import CanaryRunner

    state, errors, logs = tmp_path / "canary.json", [], []
    script = tmp_path / "fake.py"
    script.write_text(FAKE_CANARY.format(mode="ok"))
    runner = CanaryRunner(str(state), 3600, log=logs.append, on_error=errors.append, badsum=(sys.executable, str(script)))
    runner.run_once()
    assert errors == [] and "exit 1" in logs[-1]  # a failing datapath is a result, not an error
    m = scrape(collected([load(FIXTURES / "clean-host.json")], canary_file=str(state)))
    assert values(m["badsum_canary_ok"], datapath="veth") == [0.0]
    assert values(m["badsum_canary_last_run_timestamp_seconds"]) == [1767225600.5]


def test_canary_runner_stop_terminates_a_running_canary(tmp_path: Path) -> None:
    from badsum.exporter.canary import CanaryRunner

    state, errors = tmp_path / "canary.json", []
    script = tmp_path / "fake.py"
    script.write_text(FAKE_CANARY.format(mode="hang"))
    runner = CanaryRunner(str(state), 3600, log=lambda _m: None, on_error=errors.append, badsum=(sys.executable, str(script)))
    runner.start()
    started = Path(str(state) + ".started")
    for _ in range(HANG_GUARD_S * 10):
        if started.exists() and runner._proc is not None:
            break
        threading.Event().wait(0.1)
    proc = runner._proc
    assert proc is not None and proc.poll() is None
    runner.stop()
    assert proc.poll() == -signal.SIGTERM and not runner._thread.is_alive()
    assert errors == [] and not state.exists()
