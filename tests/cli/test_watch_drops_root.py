"""`badsum watch` on the real kernel (root): drops placed by the kernel's own drop counter (eBPF),
each in the namespace and on the device where the kernel dropped it, and the tracefs fallback.

Two namespaces of the test's own receive frames with bad checksums (tests/badcsum.py): `tcp` gets
TCP segments only, `udp` gets UDP datagrams and some TCP segments too, in the same burst. The
counter join cannot tell the two namespaces' TCP drops apart (both TcpInCsumErrors move); the
kernel can. Oracle: `nstat` read inside each namespace by the test.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support import need_root, need_tool
from watchkit import Watch

pytestmark = pytest.mark.root

scapy = pytest.importorskip("scapy.all")

from badcsum import BadChecksums, bpf_prog_ids, loaded_prog_ids, still_loaded, tcp_syns, udp_datagrams  # noqa: E402
from netns import Topology  # noqa: E402

BADSUM = [sys.executable, "-m", "badsum"]
N_TCP, N_UDP, N_TCP_IN_UDP = 7, 5, 3
#: Seconds a watch runs: its first interval is the baseline, the frames go in the second.
DURATION = 6


@pytest.fixture(scope="module")
def bad() -> Iterator[BadChecksums]:
    need_root()
    need_tool("nstat")
    with Topology() as topo:
        yield BadChecksums(topo)


def burst(bad: BadChecksums) -> None:
    bad.send(bad.tcp, tcp_syns(bad.tcp, N_TCP))
    bad.send(bad.udp, udp_datagrams(bad.udp, N_UDP) + tcp_syns(bad.udp, N_TCP_IN_UDP, first_port=42000))


@dataclass
class Run:
    code: int
    err: str
    lines: list[dict]
    rise: dict[str, dict[str, int]]
    """Namespace -> how much its checksum counters rose during the watch (nstat)."""
    held: set[int]
    """eBPF programs the watch held while it ran (/proc fdinfo)."""

    @property
    def intervals(self) -> list[dict]:
        return [x["data"] for x in self.lines if x["data"]["kind"] == "interval"]

    def counted(self, reason: str, **match: object) -> int:
        return counted(self.lines, reason, **match)


def run_watch(bad: BadChecksums, *argv: str) -> Run:
    """A watch with a burst of bad frames in its second interval."""
    before = {r.ns: bad.nstat(r) for r in (bad.tcp, bad.udp)}
    w = Watch("--interval", "1", "--duration", str(DURATION), *argv)
    try:
        w.wait_for(lambda: len(w.intervals()) >= 1)
        held = bpf_prog_ids(w.proc.pid)
        burst(bad)
    finally:
        code, err = w.finish()
    rise = {r.ns: {k: v - before[r.ns][k] for k, v in bad.nstat(r).items()} for r in (bad.tcp, bad.udp)}
    return Run(code, err, w.lines, rise, held)


def counted(lines: list[dict], reason: str, **match: object) -> int:
    return sum(d["count"] for x in lines if x["data"]["kind"] == "interval" for d in x["data"]["drops"]
               if d["reason"] == reason and all(d.get(k) == v for k, v in match.items()))  # fmt: skip


def test_the_kernel_places_each_drop_in_its_own_namespace_on_its_device(bad: BadChecksums) -> None:
    run = run_watch(bad)
    assert run.code == 1, run.err  # checksum drops seen
    assert run.err == ""
    # The oracle: the receivers' own counters.
    assert run.rise[bad.tcp.ns] == {"TcpInCsumErrors": N_TCP, "UdpInCsumErrors": 0}
    assert run.rise[bad.udp.ns] == {"TcpInCsumErrors": N_TCP_IN_UDP, "UdpInCsumErrors": N_UDP}
    assert len(run.intervals) == DURATION and all(i["drops_method"] == "kernel" for i in run.intervals)
    assert all(x["errors"] == [] for x in run.lines)  # no note: the kernel's way needs no excuse
    for r, reason, counter in ((bad.tcp, "TCP_CSUM", "TcpInCsumErrors"), (bad.udp, "TCP_CSUM", "TcpInCsumErrors"),
                               (bad.udp, "UDP_CSUM", "UdpInCsumErrors")):  # fmt: skip
        mine = [d for i in run.intervals for d in i["drops"] if d["reason"] == reason and d["netns"] == r.inode]
        assert sum(d["count"] for d in mine) == run.rise[r.ns][counter] > 0, (r.ns, reason, mine)
        for d in mine:
            assert (d["attribution"], d["namespace"], d["device"], d["candidates"]) == ("kernel", r.ns, r.dev, [])
            assert (d["protocol"], d["protocol_name"]) == (0x0800, "IPv4")
            assert d["location"] == ("tcp_v4_rcv" if reason == "TCP_CSUM" else "__udp4_lib_rcv")
            assert d["reason_code"] is not None
    assert run.counted("UDP_CSUM", netns=bad.tcp.inode) == 0
    ours = {bad.tcp.inode, bad.udp.inode}
    # Every drop in the test's namespaces is one the kernel placed; none is left host-wide.
    assert all(d["attribution"] == "kernel" for i in run.intervals for d in i["drops"] if d["netns"] in ours)
    summary = run.lines[-1]["data"]
    assert summary["kind"] == "summary" and summary["drops_method"] == "kernel" and summary["drops_note"] is None
    totals = {(d["reason"], d["namespace"], d["device"]): d["count"] for d in summary["drops"]
              if d["netns"] in ours and d["reason"].endswith("_CSUM")}  # fmt: skip
    assert totals == {("TCP_CSUM", bad.tcp.ns, "t0"): N_TCP, ("TCP_CSUM", bad.udp.ns, "u0"): N_TCP_IN_UDP,
                      ("UDP_CSUM", bad.udp.ns, "u0"): N_UDP}  # fmt: skip
    # The program was the watch's own and went away with it (the kernel's own list of programs).
    assert run.held and still_loaded(run.held) == set()


def test_netns_shows_only_that_namespaces_drops_and_sigterm_unloads(bad: BadChecksums) -> None:
    w = Watch("--interval", "0.5", "--duration", "30", "--netns", bad.tcp.ns)
    try:
        w.wait_for(lambda: len(w.intervals()) >= 1)
        held = bpf_prog_ids(w.proc.pid)
        assert held and held <= loaded_prog_ids()
        bad.send(bad.tcp, tcp_syns(bad.tcp, 2, first_port=43000))
        bad.send(bad.udp, tcp_syns(bad.udp, 2, first_port=43000))
        w.wait_for(lambda: counted(w.lines, "TCP_CSUM", netns=bad.tcp.inode) >= 2)
        w.proc.send_signal(signal.SIGTERM)
    finally:
        code, err = w.finish()
    assert code == 1, err
    assert still_loaded(held) == set()  # gone with the process
    assert counted(w.lines, "TCP_CSUM", netns=bad.tcp.inode) == 2
    assert {d["netns"] for i in w.intervals() for d in i["drops"]} <= {bad.tcp.inode}


def test_tracefs_on_demand_joins_drops_by_counters(bad: BadChecksums) -> None:
    """`--drops tracefs`: the fallback. TCP_CSUM moved TcpInCsumErrors in both namespaces, so the
    join leaves those drops host-wide with both as candidates (or, when the burst straddles an
    interval, puts them where only one moved); UDP_CSUM only moved in `udp`: joined there."""
    run = run_watch(bad, "--drops", "tracefs", "--netns", bad.tcp.ns, "--netns", bad.udp.ns)
    assert run.code == 1, run.err
    assert run.err == ""  # asked for: no note
    assert run.held == set()  # no eBPF program
    assert run.rise[bad.udp.ns]["UdpInCsumErrors"] == N_UDP
    assert all(i["drops_method"] == "counter-join" for i in run.intervals)
    drops = [d for i in run.intervals for d in i["drops"]]
    assert all(d["device"] is None and d["attribution"] in ("counter-join", "host-wide") for d in drops)
    # Other sessions' drops are host-wide too (the tracepoint knows no namespace): at least ours.
    assert run.counted("UDP_CSUM", namespace=bad.udp.ns, attribution="counter-join") >= N_UDP
    tcp = [d for d in drops if d["reason"] == "TCP_CSUM"]
    assert sum(d["count"] for d in tcp) >= N_TCP + N_TCP_IN_UDP
    assert all(d["namespace"] in (bad.tcp.ns, bad.udp.ns) or set(d["candidates"]) <= {bad.tcp.ns, bad.udp.ns} for d in tcp)
    summary = run.lines[-1]["data"]
    assert summary["drops_method"] == "counter-join" and summary["drops_note"] is None
    assert not any(d["device"] for d in summary["drops"])


def test_auto_falls_back_to_the_counter_join_and_says_why(bad: BadChecksums, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """In process, with the loader refusing as it does on a kernel without BTF."""
    from badsum.cli.main import main
    from badsum.host import kernel_drops

    def refuse(btf: str | None) -> None:
        raise kernel_drops.NotAvailable("no kernel BTF at /sys/kernel/btf/vmlinux (a kernel built with "
                                        "CONFIG_DEBUG_INFO_BTF is needed)")  # fmt: skip

    monkeypatch.setattr(kernel_drops, "open_counter", refuse)
    code = main(["watch", "--json", "-i", "0.5", "-d", "1", "--netns", bad.udp.ns])
    out, err = capsys.readouterr()
    assert code == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    note = ("drops are host-wide, joined to namespaces by their counters: the kernel drop counter is not available "
            "(no kernel BTF at /sys/kernel/btf/vmlinux (a kernel built with CONFIG_DEBUG_INFO_BTF is needed))")  # fmt: skip
    assert all(d["errors"] == [{"code": "watch.counter_join", "message": note}] for d in docs)
    assert [d["data"]["drops_method"] for d in docs] == ["counter-join"] * 3
    assert docs[-1]["data"]["drops_note"].startswith("no kernel BTF at ")
    code = main(["watch", "-i", "0.5", "-d", "0.5", "--netns", bad.udp.ns])
    out, err = capsys.readouterr()
    assert err == f"badsum: {note}\n"
    assert out.splitlines()[-1] == "  (kernel drop counter not available: no kernel BTF at /sys/kernel/btf/vmlinux " \
                                   "(a kernel built with CONFIG_DEBUG_INFO_BTF is needed))"
