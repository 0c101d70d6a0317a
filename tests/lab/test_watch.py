"""`badsum watch --drops tracefs` on the real kernel (root): during the ovs-userspace-veth lab it must
report the TCP_CSUM drops and the TcpInCsumErrors delta in the receiving container's namespace,
agreeing with `nstat` read by this test; and whatever way it ends, nothing of it stays in tracefs.
(The kernel drop counter, watch's default: test_watch_ovs_kernel.py, tests/cli/test_watch_drops_root.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labkit import netns_names
from support import need_root, need_tool
from watchkit import Watch

from badsum.lab import state as lab_state

pytestmark = pytest.mark.root

BADSUM = [sys.executable, "-m", "badsum"]


def tracefs_of(pid: int) -> list[str]:
    """The watch's tracefs objects (instance `badsum-watch-PID` under any tracefs mount, and its
    private mount), found through /proc/self/mounts, not through badsum."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        f = line.split()
        if len(f) < 3 or f[2] != "tracefs":
            continue
        if os.path.basename(f[1]).startswith(f"badsum-watch-{pid}-"):
            found.append(f"mount {f[1]}")
        if os.path.isdir(os.path.join(f[1], "instances", f"badsum-watch-{pid}")):
            found.append(f"instance badsum-watch-{pid} under {f[1]}")
    return sorted(set(found))


def dynamic_events() -> str | None:
    """What every tracefs view lists in dynamic_events (kprobes and the like: watch must add none)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        f = line.split()
        if len(f) > 2 and f[2] == "tracefs":
            try:
                return Path(f[1], "dynamic_events").read_text()
            except OSError:
                continue
    return None


def nstat(ns: str) -> dict[str, int]:
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-a", "-s", "-z", "--json"], capture_output=True,
                         text=True, timeout=10, check=True).stdout  # fmt: skip
    return {k: int(v) for group in json.loads(out).values() for k, v in group.items()}


def unused_prefix() -> str:
    taken = {n.split("-", 1)[0] for n in netns_names()}
    while (p := lab_state.new_prefix()) in taken or (lab_state.RUN_ROOT / p).exists():
        pass
    return p


def test_watch_reports_tcp_csum_drops_in_c2_during_the_ovs_lab(tmp_path: Path) -> None:
    need_root()
    for tool in ("ovs-vswitchd", "nstat", "tcpdump", "ethtool"):
        need_tool(tool)
    events_before = dynamic_events()
    prefix = unused_prefix()
    c2 = f"{prefix}-c2"
    w = Watch("--interval", "1", "--drops", "tracefs")
    try:
        w.wait_for(lambda: len(w.intervals()) >= 1)  # the baseline is taken: the lab's namespaces will be new
        assert tracefs_of(w.proc.pid), "the watch's instance should exist while it runs"
        argv = [*BADSUM, "lab", "run", "ovs-userspace-veth", "--json", "--keep", "--prefix", prefix, "--out", str(tmp_path / "out")]
        lab = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
        try:
            assert lab.returncode == 1, lab.stderr  # the symptom was observed
            first = nstat(c2)["TcpInCsumErrors"]
            read_at = time.time()
            # Until the watch has sampled after the test's own reading, then read again: stable means
            # both readings bracket the watch's last sample.
            w.wait_for(lambda: any(i["start"] > read_at for i in w.intervals()))
            second = nstat(c2)["TcpInCsumErrors"]
        finally:
            code, err = w.finish(signal.SIGINT)
            clean = subprocess.run([*BADSUM, "lab", "clean", "--prefix", prefix], capture_output=True, text=True,
                                   timeout=60, check=False)  # fmt: skip
        assert clean.returncode == 0, clean.stderr
    finally:
        if w.proc.poll() is None:
            w.finish(signal.SIGINT)
    assert code == 1, err  # Ctrl-C ends it normally: checksum drops were seen
    assert err == ""
    assert tracefs_of(w.proc.pid) == []
    assert dynamic_events() == events_before
    assert first > 0 and first == second, (first, second)
    summary = w.lines[-1]["data"]
    assert summary["kind"] == "summary" and summary["findings"] is True and w.lines[-1]["status"] == "findings"
    # The counter: every TcpInCsumErrors of c2 (a namespace created during the watch counts from 0).
    assert summary["counters"][c2]["TcpInCsumErrors"] == first
    assert sum(ns["deltas"]["TcpInCsumErrors"] for i in w.intervals() for ns in i["namespaces"]
               if ns["id"] == c2 and ns["deltas"]) == first  # fmt: skip
    # The drops: TCP_CSUM from tcp_v4_rcv, IPv4, put in c2 by the counter join (or, when another
    # namespace's TcpInCsumErrors moved in the same interval, host-wide with c2 among the candidates).
    tcp = [d for i in w.intervals() for d in i["drops"] if d["reason"] == "TCP_CSUM"]
    in_c2 = [d for d in tcp if d["namespace"] == c2]
    assert in_c2, tcp
    for d in in_c2:
        assert (d["location"], d["protocol"], d["protocol_name"], d["attribution"]) == ("tcp_v4_rcv", 0x0800, "IPv4", "counter-join")
        assert d["netns"] == next(ns["inode"] for i in w.intervals() for ns in i["namespaces"] if ns["id"] == c2)
        assert d["reason_code"] is not None
    shared = sum(d["count"] for d in tcp if d["namespace"] is None and c2 in d["candidates"])
    attributed = sum(d["count"] for d in in_c2)
    # One drop per counted error (net/ipv4/tcp_ipv4.c: csum_error counts, then drops with TCP_CSUM).
    assert attributed <= first <= attributed + shared
    assert all(i["drops_lost"] == 0 for i in w.intervals())


def _udp_to_a_closed_port(ns: str, n: int) -> None:
    """n datagrams to a port nobody listens on, inside our own namespace (loopback): NO_SOCKET drops."""
    code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"[s.sendto(b'x',('127.0.0.1',9)) for _ in range({n})]")  # fmt: skip
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], check=True, timeout=10)


@pytest.mark.parametrize("how", ["duration", "sigterm"])
def test_watch_ends_cleanly_and_leaves_nothing_in_tracefs(how: str) -> None:
    need_root()
    need_tool("nstat")
    events_before = dynamic_events()
    ns = f"{unused_prefix()}-w"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
        w = Watch("--interval", "0.5", "--drops", "tracefs", *(["--duration", "3"] if how == "duration" else []))
        try:
            w.wait_for(lambda: len(w.intervals()) >= 1)
            assert tracefs_of(w.proc.pid)
            _udp_to_a_closed_port(ns, 5)
            w.wait_for(lambda: any(d["reason"] == "NO_SOCKET" for i in w.intervals() for d in i["drops"]))
            code, err = w.finish(signal.SIGTERM if how == "sigterm" else None)
        finally:
            if w.proc.poll() is None:
                w.finish(signal.SIGINT)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=10)
    assert code == 0, err  # nothing checksum-related moved (NO_SOCKET is no checksum drop)
    assert tracefs_of(w.proc.pid) == []
    assert dynamic_events() == events_before
    assert w.lines[-1]["data"]["kind"] == "summary"
    udp = [d for i in w.intervals() for d in i["drops"] if d["reason"] == "NO_SOCKET" and d["location"] == "__udp4_lib_rcv"]
    assert sum(d["count"] for d in udp) >= 5  # others' traffic may add some: drops are host-wide
    assert all(d["attribution"] == "host-wide" and d["protocol_name"] == "IPv4" for d in udp)
    seen = {n["id"]: n["state"] for i in w.intervals() for n in i["namespaces"]}
    assert seen.get(ns) in ("new", "ok")
