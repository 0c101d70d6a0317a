"""The `--html` pages in a real browser: headless Chromium (Debian `chromium`) opens a page made by
a real run, dumps the DOM after its script ran, takes a screenshot (kept under the test's tmp dir,
path printed), and its own logs say whether the page logged to the console or asked the network
for anything. Chromium is a test dependency (.ci/run installs it): missing, these tests fail.

Two independent checks that nothing is fetched: the page source references no other origin, and
Chromium's NetLog holds no request the page started (the browser's own update and account pings
carry initiator "not an origin" and are not the page's). Host names resolve to nothing meanwhile
(`--host-resolver-rules`), so even a slip would not reach the network.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import need_root, need_tool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_html_cli import KB005, badsum, nat_captures

EXTERNAL = re.compile(r"""(?:\b(?:src|href|xlink:href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//)|url\(\s*["']?\s*(?:https?:)?//|@import""", re.IGNORECASE)


@dataclass
class Opened:
    dom: str
    console: list[str]
    """Console messages of the page (Chromium logs them as `CONSOLE` lines)."""
    requests: list[str]
    """URLs the page asked for over the network (not file:)."""
    screenshot: Path


def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return exe


def _flags(profile: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-breakpad", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            f"--crash-dumps-dir={profile / 'crashes'}", "--host-resolver-rules=MAP * ~NOTFOUND",
            # The DOM and the screenshot wait until the page is idle (5 s of virtual time, fast-forwarded),
            # not for the first frame: on a loaded machine that frame could still be blank.
            "--virtual-time-budget=5000"]  # fmt: skip


def _private(where: Path, name: str) -> tuple[Path, dict[str, str]]:
    """A fresh directory for one Chromium run, and an environment whose HOME and XDG dirs are in it.

    Runs at once (pytest -n, two suites, a lab test beside the pure ones) must share nothing: not the
    profile (its SingletonLock makes a second browser hand its URL to the first and exit), nor
    ~/.pki/nssdb, ~/.config/chromium or the crash database, which Chromium keeps under HOME whatever
    the profile. No port is opened (--dump-dom, --screenshot), so none can collide."""
    run = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=where))
    env = {**os.environ, "HOME": str(run / "home"), "XDG_CONFIG_HOME": str(run / "config"),
           "XDG_CACHE_HOME": str(run / "cache"), "XDG_RUNTIME_DIR": str(run / "runtime")}  # fmt: skip
    for key in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        Path(env[key]).mkdir(mode=0o700)
    return run / "profile", env


def page_requests(netlog: Path) -> list[str]:
    """Network requests a page started: URL_REQUEST_START_JOB events not started by the browser itself."""
    d = json.loads(netlog.read_text())
    start = d["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    out = []
    for e in d["events"]:
        p = e.get("params") or {}
        if e["type"] == start and "url" in p and not p["url"].startswith("file:") and p.get("initiator") != "not an origin":
            out.append(p["url"])
    return out


def open_page(page: Path, where: Path, name: str) -> Opened:
    exe = chromium()
    url = page.resolve().as_uri()
    netlog = where / f"{name}.netlog.json"
    profile, env = _private(where, name)
    r = subprocess.run([exe, *_flags(profile), "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}",
                        "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "</html>" in r.stdout, f"no whole DOM from {page.name}: {r.stderr[-2000:]}"
    shot = where / f"{name}.png"
    profile, env = _private(where, f"{name}-shot")
    s = subprocess.run([exe, *_flags(profile), f"--screenshot={shot}", "--window-size=1400,1000", url],
                       capture_output=True, text=True, timeout=180, check=False, env=env)  # fmt: skip
    assert s.returncode == 0 and shot.stat().st_size > 5000, s.stderr[-2000:]
    print(f"\nscreenshot of {page.name}: {shot}")
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    return Opened(r.stdout, console, page_requests(netlog), shot)


def assert_clean(page: Path, opened: Opened) -> None:
    source = page.read_text()
    assert not EXTERNAL.search(source), EXTERNAL.search(source)
    assert opened.console == [], opened.console
    assert opened.requests == [], opened.requests


def test_the_checks_catch_an_error_and_a_request(tmp_path: Path) -> None:
    # The detectors themselves: a page that throws and fetches is caught by both.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><p>x</p><script>undefinedFn();</script><img src="http://example.invalid/x.png">')
    opened = open_page(bad, tmp_path, "bad")
    assert any("Uncaught ReferenceError" in line for line in opened.console)
    assert opened.requests == ["http://example.invalid/x.png"] and EXTERNAL.search(bad.read_text())


def test_trace_page_in_chromium_shows_the_first_bad_hop(tmp_path: Path) -> None:
    page = tmp_path / "trace.html"
    r = badsum("trace", "--html", page, *nat_captures(tmp_path))
    assert r.returncode == 1, r.stderr
    opened = open_page(page, tmp_path, "trace")
    assert_clean(page, opened)
    boxes = re.findall(r'<div class="(hop[^"]*)" data-point="([^"]*)"', opened.dom)
    assert boxes == [("hop", "c1:eth0"), ("hop bad first-bad", "host:eth0"), ("hop bad", "host:eth1")]
    assert "first bad hop" in opened.dom and "nat-stale" in opened.dom


def test_follow_page_in_chromium(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "follow"))
    from followkit import Kit, syn
    from test_follow_pure import kb005

    from badsum.report.html_follow import follow_page

    k = Kit()
    kb005(k, syn(pending=True))
    page = tmp_path / "follow.html"
    page.write_text(follow_page(k.data()))
    opened = open_page(page, tmp_path, "follow")
    assert_clean(page, opened)
    assert re.findall(r'<div class="hop[^"]*first-bad" data-point="([^"]*)"', opened.dom) == ["host:c2-veth"]


def test_pcap_page_of_the_63_second_recording_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "pcap.html"
    r = badsum("pcap", "--html", page, Path(__file__).resolve().parents[1] / "data" / "syn-ladder-63s.pcap")
    assert r.returncode == 1, r.stderr
    opened = open_page(page, tmp_path, "pcap")
    assert_clean(page, opened)
    sends = [float(t) for t in re.findall(r'<circle class="send" data-t="([\d.]+)"', opened.dom)]
    assert len(sends) == 7 and 60 < sends[-1] < 66
    assert re.search(r'<rect class="end" data-t="64\.\d+"', opened.dom)
    # The 16 partial TCP sums over time: one bar at each send (1 s bins), the connect's packets at 64 s.
    bars = {int(i): int(n) for i, n in re.findall(r'<rect class="partial" data-bin="(\d+)" data-n="(\d+)"', opened.dom)}
    assert sum(bars.values()) == 16 and {0, 1, 3, 7, 15, 31} <= set(bars)


def doctor_dom_checks(opened: Opened, objects: list[dict]) -> None:
    assert 'data-ready="1"' in opened.dom  # the page's script ran to its end
    for o in objects:
        key = f"{o['namespace']}:{o['name']}"
        node = re.search(r'<g id="(n\d+)" class="node flagged">\s*<title>' + re.escape(key) + "</title>", opened.dom)
        assert node, f"{key} is not a flagged node on the map"
        finding = re.search(r'<div class="finding is-fail" id="finding-\d+" data-nodes="([^"]*)"', opened.dom)
        assert finding and node[1] in finding[1].split()


def test_doctor_page_from_a_snapshot_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "doctor.html"
    r = badsum("doctor", "--from", KB005, "--html", page, "--json")
    assert r.returncode == 1, r.stderr
    (finding,) = json.loads(r.stdout)["data"]["findings"]
    opened = open_page(page, tmp_path, "doctor-fixture")
    assert_clean(page, opened)
    doctor_dom_checks(opened, finding["objects"])
    assert "OVS bridge, datapath netdev" in opened.dom


@pytest.mark.root
def test_doctor_page_of_a_real_ovs_userspace_veth_lab_in_chromium(tmp_path: Path) -> None:
    need_root()
    need_tool("ovs-vswitchd")
    chromium()
    from badsum.lab.scenarios.ovs_userspace_veth import SCENARIO

    prefix = "bs" + secrets.token_hex(3)
    page = tmp_path / "lab.html"
    try:
        result = SCENARIO.run(tmp_path / "lab", keep=True, prefix=prefix)
        r = badsum("doctor", "--json", "--html", page, "--interval", "0.1",
                   *(x for ns in ("host", "c1", "c2") for x in ("-n", f"{prefix}-{ns}")))  # fmt: skip
    finally:
        subprocess.run([*[sys.executable, "-m", "badsum"], "lab", "clean", "--prefix", prefix], capture_output=True,
                       timeout=120, check=False)  # fmt: skip
    assert result.reproduced, "the lab did not reproduce KB-005: nothing to draw"
    doc = json.loads(r.stdout)
    assert r.returncode in (1, 3) and doc["data"]["html"] == str(page), r.stderr
    kb005 = [f for f in doc["data"]["findings"] if f["rule"] == "KB-005"]
    assert kb005, [f["rule"] for f in doc["data"]["findings"]]
    opened = open_page(page, tmp_path, "doctor-lab")
    assert_clean(page, opened)
    doctor_dom_checks(opened, kb005[0]["objects"])
    assert f"{prefix}-c1" in opened.dom and "datapath netdev" in opened.dom
    # follow --html's page from the lab's own eBPF recording of the same run (lab.follow).
    from badsum.report.html_follow import follow_page

    recorded = [d for d in result.follow.values() if "not_run" not in d and d["summary"]["flows_bad"]]
    assert recorded, f"badsum follow saw no bad flow in the lab: {list(result.follow.values())[:1]}"
    fpage = tmp_path / "follow.html"
    fpage.write_text(follow_page(recorded[0]))
    fopened = open_page(fpage, tmp_path, "follow-lab")
    assert_clean(fpage, fopened)
    first = re.findall(r'<div class="hop[^"]*first-bad" data-point="([^"]*)"', fopened.dom)
    bad = [f["first_bad_hop"] for f in recorded[0]["flows"] if f["first_bad_hop"]]
    assert first and set(first) <= {b["before"] for b in bad}
    assert "unfinished" in fopened.dom


def lab_clean(prefix: str) -> None:
    subprocess.run([sys.executable, "-m", "badsum", "lab", "clean", "--prefix", prefix], capture_output=True, timeout=120,
                   check=False)  # fmt: skip


def flagged_nodes(dom: str) -> dict[str, str]:
    """`ns:name` -> SVG id of every node drawn as flagged."""
    return {key: nid for nid, key in re.findall(r'<g id="(n\d+)" class="node flagged">\s*<title>([^<]*)</title>', dom)}


@pytest.mark.root
def test_vxlan_mtu_df_lab_pages_in_chromium(tmp_path: Path) -> None:
    """KB-003 for real: doctor's map outlines the tunnel and its underlay with their MTUs, and the
    pcap page of the bridge's capture shows the frag-needed MTUs tcpdump read, and its partial sums
    over time."""
    need_root()
    chromium()
    from badsum.lab.scenarios.vxlan_mtu_df import SCENARIO

    prefix = "bs" + secrets.token_hex(3)
    page = tmp_path / "doctor.html"
    try:
        result = SCENARIO.run(tmp_path / "lab", keep=True, prefix=prefix)
        r = badsum("doctor", "--json", "--html", page, "--interval", "0.1",
                   *(x for ns in ("h1", "h2", "c1", "c2") for x in ("-n", f"{prefix}-{ns}")))  # fmt: skip
        mtus = {ns: {d["ifname"]: d["mtu"] for d in json.loads(subprocess.run(
            ["ip", "-n", f"{prefix}-{ns}", "-j", "link", "show"], capture_output=True, text=True, timeout=30, check=True).stdout)}
            for ns in ("h1", "h2")}  # fmt: skip
    finally:
        lab_clean(prefix)
    assert result.reproduced, result.verdict
    doc = json.loads(r.stdout)
    assert r.returncode in (1, 3) and doc["data"]["html"] == str(page), r.stderr
    kb003 = [f for f in doc["data"]["findings"] if f["rule"] == "KB-003"]
    assert {o["namespace"] for f in kb003 for o in f["objects"]} == {f"{prefix}-h1", f"{prefix}-h2"}
    opened = open_page(page, tmp_path, "doctor-vxlan")
    assert_clean(page, opened)
    assert 'data-ready="1"' in opened.dom
    flagged = flagged_nodes(opened.dom)
    finding_nodes = [set(ids.split()) for ids in re.findall(r'<div class="finding is-fail" id="finding-\d+" data-nodes="([^"]*)"', opened.dom)]
    for f in kb003:
        keys = {f"{o['namespace']}:{o['name']}" for o in f["objects"]}
        assert keys <= set(flagged), (keys, flagged)
        assert {flagged[k] for k in keys} in finding_nodes
    # The mismatch itself, as drawn: each tunnel's MTU and its underlay's, read back against ip -j link.
    svg_text = re.sub(r"<[^>]+>", " ", opened.dom)
    for ns in ("h1", "h2"):
        assert re.search(rf"{prefix}-{ns}:vxlan0\s+vxlan0\s+vxlan mtu {mtus[ns]['vxlan0']}\s+vni 42 port 4789", svg_text)
        assert re.search(rf"{prefix}-{ns}:eth0\s+eth0\s+veth mtu {mtus[ns]['eth0']}\b", svg_text)
        assert mtus[ns]["vxlan0"] + 50 > mtus[ns]["eth0"]
    # pcap --html of the first phase's bridge capture: the PMTU events with the MTUs tcpdump read.
    label = next(k.split()[0] for k in result.captures if k.endswith(" h1:br0"))
    capture = Path(result.captures[f"{label} h1:br0"])
    ppage = tmp_path / "pcap.html"
    p = badsum("pcap", "--html", ppage, capture)
    assert p.returncode in (0, 1) and ppage.exists(), p.stderr
    popened = open_page(ppage, tmp_path, "pcap-vxlan")
    assert_clean(ppage, popened)
    tcpdump_mtus = {m for v in result.traffic[label]["frag_needed_tcpdump"].values() for m in v}
    (n_pmtu,) = re.findall(r"<h2>PMTU events \((\d+)\)</h2>", popened.dom)
    shown = {int(m) for m in re.findall(r"ICMP frag-needed from [\d.]+: MTU (\d+) for", popened.dom)}
    assert int(n_pmtu) >= 1 and tcpdump_mtus and shown == tcpdump_mtus, (shown, tcpdump_mtus)
    assert '<svg class="timeline"' in popened.dom and re.search(r'<rect class="partial" data-bin="\d+" data-n="\d+"', popened.dom)
    # One dashed mark per frag-needed in the capture, counted by tcpdump (to the heartbeat's host and to c1).
    from badsum.lab.scenarios.vxlan_mtu_df import C1, H1, tcpdump_frag_needed

    marks = re.findall(r'<line class="pmtu" data-t="([\d.]+)"', popened.dom)
    assert len(marks) == len(tcpdump_frag_needed(capture, H1)) + len(tcpdump_frag_needed(capture, C1)) > 0


@pytest.mark.root
def test_live_follow_html_page_in_chromium(tmp_path: Path) -> None:
    """`badsum follow --html` itself, live on the ovs-userspace-veth lab: a TCP connect across the
    netdev bridge, the page opened, its first bad hop the one follow's JSON names."""
    need_root()
    need_tool("ovs-vswitchd")
    chromium()
    from badsum.lab.scenarios.ovs_userspace_veth import C2, SCENARIO

    prefix = "bs" + secrets.token_hex(3)
    # eBPF sees every namespace: a lab of another run at once has the same addresses, not this port.
    port = str(20000 + secrets.randbelow(20000))
    page = tmp_path / "follow.html"
    agent = [sys.executable, "-m", "badsum.lab.agent"]
    server = None
    try:
        SCENARIO.run(tmp_path / "lab", keep=True, prefix=prefix)
        server = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-c2", *agent, "tcp-server", "--bind", C2, "--port", port,
                                   "--timeout", "20"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        for _ in range(100):
            ss = subprocess.run(["ip", "netns", "exec", f"{prefix}-c2", "ss", "-Hltn"], capture_output=True, text=True, timeout=10,
                                check=False)
            if f":{port} " in ss.stdout:
                break
            time.sleep(0.1)
        r = badsum("follow", "--json", "--html", page, "-f", f"host {C2} and tcp port {port}", "--",
                   "ip", "netns", "exec", f"{prefix}-c1", *agent, "tcp-client", "--connect", C2, "--port", port,
                   "--bytes", "20000", "--timeout", "3")  # fmt: skip
    finally:
        if server is not None:
            server.kill()  # ours, by its pid
            server.wait(timeout=10)
        lab_clean(prefix)
    assert r.returncode == 1, r.stderr[-2000:]
    data = json.loads(r.stdout)["data"]
    assert data["html"] == str(page) and data["summary"]["flows_bad"] >= 1
    opened = open_page(page, tmp_path, "follow-live")
    assert_clean(page, opened)
    first = re.findall(r'<div class="hop[^"]*first-bad" data-point="([^"]*)"', opened.dom)
    named = {f["first_bad_hop"]["before"] for f in data["flows"] if f["first_bad_hop"]}
    assert first and set(first) <= named, (first, named)
    assert all(p.startswith(f"{prefix}-host:") for p in first) and "KB-005" in opened.dom
