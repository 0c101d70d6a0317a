"""`badsum watch` with the kernel drop counter (root), during the ovs-userspace-veth lab (KB-005)
while other namespaces' checksum counters rise too: the TCP_CSUM drops are placed in c2, on its
eth0, by the kernel, not by the counter join (which could not choose: another namespace's
TcpInCsumErrors moves in the same intervals). Oracle: `nstat` read by the test in every namespace.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from labkit import netns_names
from support import need_root, need_tool
from watchkit import Watch

from badsum.lab import state as lab_state

pytestmark = pytest.mark.root

BADSUM = [sys.executable, "-m", "badsum"]
#: Bursts of bad frames into the other namespaces while the lab runs: at most this many, 0.5 s apart.
MAX_BURSTS = 600


def nstat(ns: str) -> dict[str, int]:
    """The namespace's TCP and UDP checksum error counters, by nstat inside it."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-a", "-s", "-z", "--json"], capture_output=True,
                         text=True, timeout=10, check=True).stdout  # fmt: skip
    flat = {k: int(v) for group in json.loads(out).values() for k, v in group.items()}
    return {k: flat.get(k, 0) for k in ("TcpInCsumErrors", "UdpInCsumErrors")}


def unused_prefix() -> str:
    taken = {n.split("-", 1)[0] for n in netns_names()}
    while (p := lab_state.new_prefix()) in taken or (lab_state.RUN_ROOT / p).exists():
        pass
    return p


class Bursts(threading.Thread):
    """Bad UDP datagrams into `udp` and bad TCP segments into `tcp`, every 0.5 s until stopped."""

    def __init__(self, bad) -> None:  # noqa: ANN001
        super().__init__(daemon=True)
        from badcsum import tcp_syns, udp_datagrams

        self.bad, self.stop = bad, threading.Event()
        self.udp, self.tcp = udp_datagrams(bad.udp, 2), tcp_syns(bad.tcp, 1)
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(MAX_BURSTS):
                if self.stop.wait(0.5):
                    return
                self.bad.send(self.bad.udp, self.udp)
                self.bad.send(self.bad.tcp, self.tcp)
                self.sent += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_watch_places_the_labs_tcp_drops_in_c2_by_the_kernel(tmp_path: Path) -> None:
    need_root()
    for tool in ("ovs-vswitchd", "nstat", "tcpdump", "ethtool"):
        need_tool(tool)
    pytest.importorskip("scapy.all")
    from badcsum import BadChecksums, bpf_prog_ids, still_loaded
    from netns import Topology

    prefix = unused_prefix()
    c2 = f"{prefix}-c2"
    with Topology() as topo:
        bad = BadChecksums(topo)
        others = (bad.tcp, bad.udp)
        base = {r.ns: nstat(r.ns) for r in others}
        w = Watch("--interval", "1")
        bursts = Bursts(bad)
        try:
            w.wait_for(lambda: len(w.intervals()) >= 1)  # the baseline is taken: the lab's namespaces will be new
            held = bpf_prog_ids(w.proc.pid)
            assert held, "the watch should hold its drop counter while it runs"
            bursts.start()
            argv = [*BADSUM, "lab", "run", "ovs-userspace-veth", "--json", "--keep", "--prefix", prefix,
                    "--out", str(tmp_path / "out")]  # fmt: skip
            try:
                lab = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
                bursts.stop.set()
                bursts.join(15)
                assert bursts.error is None, bursts.error
                assert lab.returncode == 1, lab.stderr  # the symptom was observed
                first = {ns: nstat(ns) for ns in (c2, bad.tcp.ns, bad.udp.ns)}
                c2_inode = next(n["inode"] for i in w.intervals() for n in i["namespaces"] if n["id"] == c2)
                read_at = time.time()
                # Until the watch has sampled after the test's own reading, then read again: stable
                # means both readings bracket the watch's last sample.
                w.wait_for(lambda: any(i["start"] > read_at for i in w.intervals()))
                second = {ns: nstat(ns) for ns in first}
            finally:
                bursts.stop.set()
                code, err = w.finish(signal.SIGINT)
                clean = subprocess.run([*BADSUM, "lab", "clean", "--prefix", prefix], capture_output=True, text=True,
                                       timeout=60, check=False)  # fmt: skip
            assert clean.returncode == 0, clean.stderr
        finally:
            bursts.stop.set()
            if w.proc.poll() is None:
                w.finish(signal.SIGINT)
    assert code == 1, err
    assert err == ""  # the kernel's way: no note
    assert still_loaded(held) == set()  # the program went with the watch
    assert first == second, (first, second)
    assert bursts.sent >= 2
    rises = {
        c2: first[c2]["TcpInCsumErrors"],  # created during the watch: its counters started at 0
        bad.tcp.ns: first[bad.tcp.ns]["TcpInCsumErrors"] - base[bad.tcp.ns]["TcpInCsumErrors"],
        bad.udp.ns: first[bad.udp.ns]["UdpInCsumErrors"] - base[bad.udp.ns]["UdpInCsumErrors"],
    }
    assert rises[c2] > 0 and rises[bad.tcp.ns] >= bursts.sent and rises[bad.udp.ns] >= 2 * bursts.sent
    intervals = w.intervals()
    print(f"\nfigures: nstat rises {rises}; {bursts.sent} bursts; {len(intervals)} intervals")
    assert all(i["drops_method"] == "kernel" for i in intervals)
    tcp = [d for i in intervals for d in i["drops"] if d["reason"] == "TCP_CSUM"]
    in_c2 = [d for d in tcp if d["netns"] == c2_inode]
    # Every segment c2's kernel counted is a drop the kernel placed in c2, on eth0 (tcp_v4_rcv).
    assert sum(d["count"] for d in in_c2) == rises[c2]
    for d in in_c2:
        assert (d["namespace"], d["device"], d["attribution"], d["candidates"]) == (c2, "eth0", "kernel", [])
        assert (d["location"], d["protocol_name"]) == ("tcp_v4_rcv", "IPv4")
    # The counter join could not have placed them: in the intervals with c2's drops, the other
    # namespace's TcpInCsumErrors moved too.
    both = [i for i in intervals if any(d["netns"] == c2_inode and d["reason"] == "TCP_CSUM" for d in i["drops"])
            and any(n["id"] == bad.tcp.ns and (n["deltas"] or {}).get("TcpInCsumErrors") for n in i["namespaces"])]  # fmt: skip
    assert both, "no interval had both namespaces' TcpInCsumErrors moving: the check would prove nothing"
    # The other namespaces' drops are theirs, on their devices, and agree with their counters.
    assert sum(d["count"] for d in tcp if d["netns"] == bad.tcp.inode and d["device"] == "t0") == rises[bad.tcp.ns]
    udp = [d for i in intervals for d in i["drops"] if d["reason"] == "UDP_CSUM"]
    assert sum(d["count"] for d in udp if d["netns"] == bad.udp.inode and d["device"] == "u0") == rises[bad.udp.ns]
    assert not [d for d in tcp + udp if d["attribution"] != "kernel" and d["netns"] in (c2_inode, bad.tcp.inode, bad.udp.inode)]
    summary = w.lines[-1]["data"]
    assert summary["kind"] == "summary" and summary["drops_method"] == "kernel"
    assert sum(d["count"] for d in summary["drops"] if d["reason"] == "TCP_CSUM" and d["namespace"] == c2
               and d["device"] == "eth0") == rises[c2]  # fmt: skip
