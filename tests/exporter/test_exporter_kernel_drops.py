"""`badsum_drops_total` from drops the kernel placed (eBPF): the namespace and device are the
kernel's, not the counter join's. Unit tests over recorded snapshots, then the real exporter (root)
with bad checksums sent into namespaces of the test's own, its oracle `nstat` read inside them."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import pytest
from exporterkit import FIXTURES, FakeDrops, exporter_over, load, scrape, values, with_namespaces
from support import need_root, need_tool

from badsum.host.drops import Drop
from badsum.host.model import CounterSample

CLEAN = FIXTURES / "clean-host.json"
BADSUM = [sys.executable, "-m", "badsum"]


def moved_in_both():
    """Two collections' snapshots between which n000's and n001's TcpInCsumErrors both rose."""
    first = with_namespaces(load(CLEAN), 3, tcp_errors=5)

    def bump(ns):
        c = {**ns.counters.second, "TcpInCsumErrors": ns.counters.second["TcpInCsumErrors"] + 3}
        return replace(ns, counters=CounterSample(c, c, 0.2))

    second = replace(first, namespaces=tuple(bump(ns) if ns.id in ("bs0000aa-n000", "bs0000aa-n001") else ns
                                             for ns in first.namespaces))  # fmt: skip
    return first, second


def test_kernel_drops_keep_the_kernels_namespace_and_device() -> None:
    first, second = moved_in_both()
    n0, n1, n2 = (next(ns for ns in first.namespaces if ns.id == f"bs0000aa-n00{i}") for i in range(3))
    batch = [Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", n0.inode, 2, "eth0"), Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", n1.inode, 1, "eth0"),
             Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", n1.inode, 4, "veth9"),
             Drop("NO_SOCKET", 0x0800, "__udp4_lib_rcv", n2.inode, 5, "lo"),  # no counter moved for it: still placed
             Drop("NOT_SPECIFIED", 0x0800, "x", 4026599999, 1, "eth0")]  # a namespace the snapshot does not have  # fmt: skip
    ex = exporter_over([first, second], drops=FakeDrops([batch, batch]))
    ex.collect_once()
    ex.collect_once()
    m = scrape(ex)["badsum_drops"]
    assert values(m, reason="TCP_CSUM", netns=n0.id, device="eth0") == [4]
    assert values(m, reason="TCP_CSUM", netns=n1.id, device="eth0") == [2]
    assert values(m, reason="TCP_CSUM", netns=n1.id, device="veth9") == [8]
    assert values(m, reason="TCP_CSUM", netns="") == []  # the counter join would have left these unplaced
    assert values(m, reason="NO_SOCKET", netns=n2.id, device="lo") == [10]
    assert values(m, reason="NOT_SPECIFIED", netns="", device="eth0") == [2]
    assert {lb["device"] for _, lb, _ in m} == {"eth0", "veth9", "lo"}


def test_tracefs_drops_have_an_empty_device() -> None:
    first, _ = moved_in_both()
    ex = exporter_over([first], drops=FakeDrops([[Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", None, 3)]]))
    ex.collect_once()
    [(_, labels, value)] = scrape(ex)["badsum_drops"]
    assert labels == {"reason": "TCP_CSUM", "protocol": "IPv4", "location": "tcp_v4_rcv", "netns": "", "device": ""}
    assert value == 3


def test_devices_count_against_max_series_and_go_with_their_namespace() -> None:
    first, _ = moved_in_both()
    n0 = next(ns for ns in first.namespaces if ns.id == "bs0000aa-n000")
    batch = [Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", n0.inode, 1, f"veth{i}") for i in range(5)]
    ex = exporter_over([first, replace(first, namespaces=tuple(ns for ns in first.namespaces if ns.id != n0.id))],
                       drops=FakeDrops([batch, []]), max_series=3)  # fmt: skip
    ex.collect_once()
    m = scrape(ex)
    assert len(m["badsum_drops"]) == 3
    assert values(m["badsum_collection_errors"], stage="limit")[0] >= 1  # 2 drops over the bound (and other families)
    ex.collect_once()
    assert scrape(ex)["badsum_drops"] == []  # the namespace vanished: its devices' series too


def test_the_cli_says_which_drops_it_uses(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from badsum.exporter import service
    from badsum.exporter.collector import Exporter, Options
    from badsum.host import kernel_drops
    from badsum.host.kernel_drops import DropSource

    class Reader:
        def read(self) -> list[Drop]:
            return []

    said: list[str] = []
    cases = [(DropSource(Reader(), "kernel", None, None), "drops: counted by the kernel (eBPF), with the namespace and "
              "device of each dropped packet"),
             (DropSource(Reader(), "counter-join", "no kernel BTF at /x", None), "drops: host-wide from tracefs, joined "
              "to namespaces by their counters: the kernel drop counter is not available (no kernel BTF at /x)"),
             (DropSource(Reader(), "counter-join", None, None), "drops: host-wide from tracefs, joined to namespaces by "
              "their counters")]  # fmt: skip
    for source, line in cases:
        asked: list[str] = []
        monkeypatch.setattr(kernel_drops, "open_drops", lambda choice, name, s=source: asked.append(choice) or s)
        ex = Exporter(Options())
        assert service.start_drops(ex, "auto", said.append) is source.reader and ex.drops is source.reader
        assert said[-1] == line and asked == ["auto"]
    monkeypatch.setattr(kernel_drops, "open_drops", lambda choice, name: DropSource(None, None, "a", "a; and b"))
    ex = Exporter(Options())
    assert service.start_drops(ex, "auto", said.append) is None and ex.drops is None
    assert ex._state.errors["drops"] == 1


# -- the real exporter (root) ----------------------------------------------------------------------


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def _drops(text: str, reason: str, netns: str) -> dict[str, float]:
    """device -> value of badsum_drops_total{reason, netns} in the exposition text."""
    from exporterkit import parse

    return {lb["device"]: v for _, lb, v in parse(text).get("badsum_drops", [])
            if lb["reason"] == reason and lb["netns"] == netns}  # fmt: skip


@pytest.mark.root
@pytest.mark.parametrize("method", ["kernel", "tracefs"])
def test_the_exporter_places_drops_where_the_kernel_dropped_them(method: str) -> None:
    need_root()
    need_tool("nstat")
    pytest.importorskip("scapy.all")
    from badcsum import BadChecksums, bpf_prog_ids, still_loaded, tcp_syns, udp_datagrams
    from netns import Topology

    with Topology() as topo:
        bad = BadChecksums(topo)
        before = {r.ns: bad.nstat(r) for r in (bad.tcp, bad.udp)}
        p = subprocess.Popen([*BADSUM, "exporter", "--listen", "127.0.0.1:0", "--interval", "1", "--drops", method,
                              "--canary-file", "/nonexistent/canary.json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            lines = []
            while not lines or "serving http://" not in lines[-1]:
                lines.append(p.stderr.readline())  # type: ignore[union-attr]
                assert lines[-1], f"the exporter exited before serving: {lines}"
            url = re.search(r"serving (\S+/metrics)", lines[-1]).group(1)  # type: ignore[union-attr]
            said = "".join(lines)
            if method == "kernel":
                assert "badsum: exporter: drops: counted by the kernel (eBPF)" in said
            else:
                assert "badsum: exporter: drops: host-wide from tracefs, joined to namespaces by their counters\n" in said
            held = bpf_prog_ids(p.pid)
            assert bool(held) == (method == "kernel")
            deadline = time.monotonic() + 30
            while "badsum_last_collection_timestamp_seconds" not in _metrics(url):
                assert time.monotonic() < deadline, "no collection finished"
                time.sleep(0.2)
            bad.send(bad.tcp, tcp_syns(bad.tcp, 6))
            bad.send(bad.udp, udp_datagrams(bad.udp, 4) + tcp_syns(bad.udp, 2, first_port=42000))
            rise = {r.ns: {k: v - before[r.ns][k] for k, v in bad.nstat(r).items()} for r in (bad.tcp, bad.udp)}
            assert rise == {bad.tcp.ns: {"TcpInCsumErrors": 6, "UdpInCsumErrors": 0},
                            bad.udp.ns: {"TcpInCsumErrors": 2, "UdpInCsumErrors": 4}}  # fmt: skip
            if method == "kernel":
                want = {(bad.tcp.ns, "TCP_CSUM"): {"t0": 6.0}, (bad.udp.ns, "TCP_CSUM"): {"u0": 2.0},
                        (bad.udp.ns, "UDP_CSUM"): {"u0": 4.0}}  # fmt: skip
                got = {}
                while got != want:
                    assert time.monotonic() < deadline + 30, f"drops never reached the counters' rises: {got}"
                    time.sleep(0.3)
                    text = _metrics(url)
                    got = {k: _drops(text, k[1], k[0]) for k in want}
                assert _drops(text, "UDP_CSUM", bad.tcp.ns) == {}
            else:
                # Host-wide, joined by counters: UDP_CSUM moved only `udp`'s counter, so it lands there.
                while _drops(_metrics(url), "UDP_CSUM", bad.udp.ns).get("", 0) < 4:
                    assert time.monotonic() < deadline + 30, "UDP_CSUM drops were never joined to the udp namespace"
                    time.sleep(0.3)
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 0, err
        assert still_loaded(held) == set()  # the program went with the exporter
