"""`badsum follow` as a user runs it, on the real kernel.

- A clean overlay path (veth, Linux bridge, VXLAN, underlay veth, and back) with the default
  offloads: only `pending` and `ok` hops, no finding, exit 0; the receiver's TcpInCsumErrors
  (nstat) stays 0 and the application's hash matches. Run twice at once (two sessions).
- `-w`: the recorded pcapng is read by tshark and by `badsum trace`.
- Ctrl-C: the analysis of what arrived is printed, and the programs are unloaded.
- Not root, no BTF, a filter outside the subset, a bad -w target: one line, the documented exit
  code, nothing loaded, nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from netns import Topology, wait_for
from support import need_root, need_tool

from badsum.kernel import libbpf

pytestmark = pytest.mark.root

BADSUM = [sys.executable, "-m", "badsum"]
AGENT = [sys.executable, "-m", "badsum.lab.agent"]
C1, C2 = "203.0.113.11", "203.0.113.12"
U1, U2 = "198.51.100.1", "198.51.100.2"
PROGRAMS = {"on_xmit", "on_receive", "on_rx", "on_drop", "on_drop_sk"}


def programs() -> set[int]:
    return {pid for pid, _, name in libbpf.loaded_programs() if name in PROGRAMS}


def nstat(topo: Topology, ns: str) -> dict[str, int]:
    out = topo.exec(ns, ["nstat", "-a", "-s", "-z", "--json"]).stdout
    return {k: int(v) for group in json.loads(out).values() for k, v in group.items()}


@pytest.fixture(scope="module")
def overlay():  # noqa: ANN201
    """c1 =veth= h1[br0: vethc1, vxlan0] =underlay= h2[br0: vxlan0, vethc2] =veth= c2."""
    need_root()
    for tool in ("ip", "nstat", "tshark"):
        need_tool(tool)
    with Topology() as topo:
        c1, h1, h2, c2 = (topo.netns(n) for n in ("c1", "h1", "h2", "c2"))
        topo.veth(c1, "eth0", h1, "vethc1")
        topo.veth(c2, "eth0", h2, "vethc2")
        topo.veth(h1, "eth0", h2, "eth0")
        topo.addr(h1, "eth0", f"{U1}/24")
        topo.addr(h2, "eth0", f"{U2}/24")
        for h, local, remote, port in ((h1, U1, U2, "vethc1"), (h2, U2, U1, "vethc2")):
            topo.up(h, "eth0")
            topo.ip(h, "link", "add", "vxlan0", "type", "vxlan", "id", "42", "local", local, "remote", remote,
                    "dstport", "4789")
            topo.ip(h, "link", "add", "br0", "type", "bridge")
            for dev in ("vxlan0", port):
                topo.ip(h, "link", "set", dev, "master", "br0", "mtu", "1400")
                topo.up(h, dev)
            topo.ip(h, "link", "set", "br0", "mtu", "1400")
            topo.up(h, "br0")
        for c, addr in ((c1, C1), (c2, C2)):
            topo.ip(c, "link", "set", "eth0", "mtu", "1400")
            topo.addr(c, "eth0", f"{addr}/24")
            topo.up(c, "eth0")
        topo.wait_oper_up(c1, "eth0")
        topo.wait_oper_up(c2, "eth0")
        assert topo.features(c1, "eth0").get("tx-checksum-ip-generic"), "veth TX checksum offload is on by default"
        yield topo, c1, h1, h2, c2


def serve(topo: Topology, ns: str, port: int):  # noqa: ANN201
    srv = topo.spawn(ns, [*AGENT, "tcp-server", "--bind", C2, "--port", str(port), "--timeout", "10"])
    wait_for(lambda: f":{port} " in topo.exec(ns, ["ss", "-Hltn"]).stdout, timeout=10, what="TCP server")
    return srv


def client(ns: str, port: int) -> list[str]:
    return ["ip", "netns", "exec", ns, *AGENT, "tcp-client", "--connect", C2, "--port", str(port),
            "--bytes", "200000", "--timeout", "10"]  # fmt: skip


def test_clean_overlay_path_only_pending_and_ok(overlay, tmp_path: Path) -> None:  # noqa: ANN001
    topo, c1, h1, h2, c2 = overlay
    before = nstat(topo, c2)["TcpInCsumErrors"]
    serve(topo, c2, 9000)
    # A second session at the same time, on the same traffic: two runs at once work.
    other = subprocess.Popen([*BADSUM, "follow", "--json", "-f", f"host {C2}", "--duration", "8"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: len(programs()) >= 4, timeout=10, what="the second session's programs")
        pcap = tmp_path / "journey.pcapng"
        r = subprocess.run([*BADSUM, "follow", "--json", "-f", f"host {C2} and tcp port 9000", "-w", str(pcap), "--",
                            *client(c1, 9000)], capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        other.send_signal(signal.SIGINT)
        out2, err2 = other.communicate(timeout=30)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    data = doc["data"]
    assert doc["status"] == "ok" and data["recording"]["command_exit"] == 0
    sent = json.loads(r.stderr.strip().splitlines()[-1])  # the client's own result (stdout sent to stderr)
    assert sent.get("error") is None, sent
    kinds = set(data["summary"]["hops_by_kind"])
    assert data["summary"]["flows_bad"] == 0 and kinds <= {"pending", "ok"}, data["summary"]
    assert "pending" in kinds  # offload on: the sender's sums were still pending, legitimately
    devices = {h["device"].split(":", 1)[1] if ":" in h["device"] else h["device"]
               for f in data["flows"] for h in f["hops"]}  # fmt: skip
    assert {"eth0", "vethc1", "vxlan0", "vethc2"} <= devices, devices
    assert nstat(topo, c2)["TcpInCsumErrors"] == before
    # The concurrent session saw the same flows and nothing bad.
    assert other.returncode == 0, err2[-2000:]
    d2 = json.loads(out2)["data"]
    assert d2["summary"]["flows_bad"] == 0 and d2["recording"]["stopped_by"] in ("interrupted", "duration")
    assert any(f["flow"]["dport"] == 9000 for f in d2["flows"])
    # -w: tshark reads it, one interface per device, the kernel state in the comments.
    t = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.interface_name", "-e", "frame.comment"],
                       capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    lines = [ln.split("\t") for ln in t.stdout.splitlines() if ln]
    assert len(lines) == data["written"]["packets"] > 0
    assert all("badsum:tp_status=" in ln[1] and "badsum:skb" in ln[1] for ln in lines)
    assert any(ln[0].endswith(":vxlan0") for ln in lines)
    tr = subprocess.run([*BADSUM, "trace", "--order", "time", "--json", str(pcap)], capture_output=True, text=True,
                        timeout=120)  # fmt: skip
    assert tr.returncode == 0, tr.stdout[-2000:] + tr.stderr[-2000:]
    assert json.loads(tr.stdout)["data"]["summary"]["flows_bad"] == 0


def test_ctrl_c_prints_what_arrived_and_unloads(overlay) -> None:  # noqa: ANN001
    topo, c1, h1, h2, c2 = overlay
    before = programs()
    p = subprocess.Popen([*BADSUM, "follow", "--json", "-f", f"icmp and host {C2}"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: len(programs() - before) >= 4, timeout=10, what="follow's programs")
        mine = programs() - before
        topo.exec(c1, ["ping", "-c", "2", "-i", "0.2", "-W", "1", C2])
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    data = json.loads(out)["data"]
    assert data["recording"]["stopped_by"] == "interrupted"
    assert any(f["flow"]["proto"] == 1 for f in data["flows"]), data["summary"]
    wait_for(lambda: not (mine & programs()), timeout=10, what="the programs to be unloaded")


def _nothing_left(before: set[int]) -> None:
    assert not (programs() - before)


def test_filter_outside_the_subset_exit_2(tmp_path: Path) -> None:
    need_root()
    before = programs()
    r = subprocess.run([*BADSUM, "follow", "-f", "tcp or udp", "--duration", "1"], capture_output=True, text=True,
                       timeout=30)  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "'or' is not in the subset" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*BADSUM, "follow", "--json", "-f", "port http"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert doc["status"] == "error" and doc["errors"][0]["code"] == "follow.filter"
    _nothing_left(before)


def test_missing_btf_exit_3_pointing_to_capture_and_trace(tmp_path: Path) -> None:
    need_root()
    before = programs()
    r = subprocess.run([*BADSUM, "follow", "--btf", str(tmp_path / "no-such-btf"), "--duration", "1"],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "no kernel BTF" in r.stderr and "badsum capture" in r.stderr and r.stderr.count("\n") == 1
    _nothing_left(before)


def test_bad_write_target_exit_2_before_loading(tmp_path: Path) -> None:
    need_root()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path, tmp_path / "missing" / "x.pcapng"):
        r = subprocess.run([*BADSUM, "follow", "-w", str(target), "--duration", "1"], capture_output=True, text=True,
                           timeout=30)  # fmt: skip
        assert r.returncode == 2, (target, r.stderr)
        assert "Traceback" not in r.stderr and str(target) in r.stderr
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_not_root_exit_3() -> None:
    need_root()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed; .ci/run installs util-linux")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                        sys.executable, "-m", "badsum", "follow", "--duration", "1"],
                       capture_output=True, text=True, timeout=30, env=env, cwd="/")  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "needs root" in r.stderr and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


#: Datagrams until stopped, at most argv[1] of them and for at most 20 s (bounded in count and time).
SENDER = ("import socket, sys, time\n"
          "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
          "end = time.monotonic() + 20\n"
          "for i in range(int(sys.argv[1])):\n"
          "    s.sendto(b'x' * 32, (sys.argv[2], 9))\n"
          "    if i % 1000 == 0 and time.monotonic() > end:\n"
          "        break\n")  # fmt: skip


def test_bounded_load_every_event_accounted_for_and_memory_bounded(overlay) -> None:  # noqa: ANN001
    """Datagrams through the overlay (about 8 hooks each) until follow stops the sender, with
    --count 1000 and a rate bound of 400 events/s:
    the recording stops at the count, and every event the filter matched was either sent to user
    space, held back by the rate bound or lost to a full ring, as the kernel-side counters say."""
    topo, c1, h1, h2, c2 = overlay
    r = subprocess.run([*BADSUM, "follow", "--json", "-f", f"udp and dst port 9 and host {C2}", "--rate", "400",
                        "--count", "1000", "--", "ip", "netns", "exec", c1, sys.executable, "-c", SENDER, "5000000", C2],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode in (0, 1), r.stderr[-2000:]
    rec = json.loads(r.stdout)["data"]["recording"]
    k = rec["kernel_counters"]
    assert rec["events"] == 1000 and rec["stopped_by"] == "count", rec
    assert k["matched"] == k["sent"] + k["rate_limited"] + k["ring_full"], k
    assert k["sent"] >= 1000 and k["matched"] > k["sent"], k  # the bound held some back, and said so
    assert rec["lost"]["rate_limited"] == k["rate_limited"]
