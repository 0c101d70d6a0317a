"""The follow programs on the real kernel: the in-kernel filter against tcpdump, the skb fields
against iproute2, and the programs' lifetime.

Frames are written by scapy, sent from one namespace through a veth with an AF_PACKET socket, and
seen by the eBPF program where the peer receives them (net:netif_receive_skb). Which frames a
filter keeps is compared with what tcpdump keeps of the same frames (`tcpdump -r F -w OUT EXPR`):
for the outer headers directly, for encapsulated frames on their inner frame, and for VLAN-tagged
frames as `vlan and (EXPR)`, which is how the kernel filter treats tags (skipped).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from badcsum import SENDER
from netns import Topology, run, wait_for
from support import need_root, need_tool

from badsum.follow.model import Hook, IpSummed
from badsum.kernel import libbpf
from badsum.kernel.filter import parse
from badsum.kernel.session import FollowConfig, FollowSession, Unavailable

pytestmark = pytest.mark.root

scapy = pytest.importorskip("scapy.all")
from scapy.all import (  # noqa: E402
    GRE,
    ICMP,
    IP,
    UDP,
    VXLAN,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    IPv6,
    PcapReader,
    Raw,
    TCP,
    raw,
    wrpcap,
)
from scapy.contrib.geneve import GENEVE  # noqa: E402

MAC_A, MAC_B = "02:00:00:00:0a:01", "02:00:00:00:0b:01"
PORTS = {4789: 1, 8472: 1, 6081: 2}


def _eth(payload, ethertype: int | None = None):  # noqa: ANN001, ANN202
    e = Ether(src=MAC_A, dst=MAC_B)
    if ethertype is not None:
        e.type = ethertype
    return e / payload


def frames() -> list[tuple[bytes, bytes | None, bool]]:
    """(frame, inner frame or None, vlan-tagged), every frame distinct."""
    inner_tcp = Ether(src="02:00:00:00:0c:01", dst="02:00:00:00:0c:02") / IP(src="192.0.2.1", dst="203.0.113.7") / TCP(sport=1234, dport=443, flags="S", seq=7)
    inner_udp = Ether(src="02:00:00:00:0c:01", dst="02:00:00:00:0c:02") / IP(src="192.0.2.5", dst="192.0.2.6") / UDP(sport=999, dport=53) / Raw(b"q")
    inner_v6 = Ether(src="02:00:00:00:0c:01", dst="02:00:00:00:0c:02") / IPv6(src="2001:db8::a", dst="2001:db8::b") / TCP(sport=5, dport=443, flags="S")
    gre_ip = IP(src="192.0.2.9", dst="203.0.113.7") / TCP(sport=2222, dport=443, flags="S")
    out: list[tuple[bytes, bytes | None, bool]] = [
        (raw(_eth(IP(src="192.0.2.1", dst="203.0.113.7") / TCP(sport=1234, dport=443, flags="S"))), None, False),
        (raw(_eth(IP(src="192.0.2.1", dst="203.0.113.8") / TCP(sport=1234, dport=80, flags="S"))), None, False),
        (raw(_eth(IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=5000, dport=53) / Raw(b"x"))), None, False),
        (raw(_eth(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=40000, dport=443, flags="S"))), None, False),
        (raw(_eth(IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(id=1, seq=1))), None, False),
        (raw(_eth(IPv6(src="2001:db8::1", dst="2001:db8::3") / ICMPv6EchoRequest(id=2))), None, False),
        (raw(_eth(IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=40001, dport=4789) / VXLAN(vni=42) / inner_tcp)),
         raw(inner_tcp), False),
        (raw(_eth(IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=40002, dport=6081) / GENEVE(vni=7, proto=0x6558) / inner_udp)),
         raw(inner_udp), False),
        (raw(_eth(IP(src="198.51.100.3", dst="198.51.100.4") / GRE(proto=0x0800) / gre_ip)), raw(Ether(src=MAC_A, dst=MAC_B) / gre_ip), False),
        (raw(_eth(IP(src="198.51.100.3", dst="198.51.100.4") / GRE(proto=0x6558) / inner_udp)), raw(inner_udp), False),
        (raw(_eth(IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=40003, dport=8472) / VXLAN(vni=1) / inner_v6)),
         raw(inner_v6), False),
        (raw(_eth(IP(src="198.51.100.5", dst="198.51.100.6", proto=4) / IP(src="192.0.2.7", dst="203.0.113.7") / TCP(sport=3, dport=443, flags="S"))),
         raw(Ether(src=MAC_A, dst=MAC_B) / IP(src="192.0.2.7", dst="203.0.113.7") / TCP(sport=3, dport=443, flags="S")), False),
        (raw(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=100) / IP(src="198.51.100.7", dst="198.51.100.2") / UDP(sport=6, dport=53) / Raw(b"v")),
         None, True),
        (raw(_eth(IP(src="192.0.2.1", dst="198.51.100.2", frag=100, proto=17) / Raw(b"\0" * 16))), None, False),
        (raw(Ether(src=MAC_A, dst=MAC_B) / Raw(b"\x08\x06" + bytes(28))), None, False),  # ARP-ish: no IP
    ]
    return out


FILTERS = [
    "tcp port 443",
    "host 203.0.113.7",
    "udp and dst port 53",
    "ip6",
    "icmp",
    "src net 192.0.2.0/24 and tcp",
    "dst host 198.51.100.2",
    "port 53 and src host 198.51.100.7",
    "",
]


def tcpdump_keeps(tmp: Path, items: list[bytes], expr: str) -> set[bytes]:
    src, out = tmp / "in.pcap", tmp / "out.pcap"
    wrpcap(str(src), [Ether(f) for f in items])
    run(["tcpdump", "-r", str(src), "-w", str(out), *([expr] if expr else [])])
    with PcapReader(str(out)) as r:
        return {raw(p) for p in r}


def expected(tmp: Path, expr: str) -> set[bytes]:
    all_frames = frames()
    plain = [f for f, _, vlan in all_frames if not vlan]
    keep = tcpdump_keeps(tmp, plain, expr)
    tagged = [f for f, _, vlan in all_frames if vlan]
    keep |= tcpdump_keeps(tmp, tagged, f"vlan and ({expr})" if expr else "vlan")
    inner: dict[bytes, list[bytes]] = {}
    for f, i, _ in all_frames:
        if i is not None:
            inner.setdefault(i, []).append(f)
    for i in tcpdump_keeps(tmp, list(inner), expr):
        keep.update(inner[i])
    return keep


@pytest.fixture(scope="module")
def pair():  # noqa: ANN201
    need_root()
    need_tool("tcpdump")
    with Topology() as topo:
        a, b = topo.netns("fa"), topo.netns("fb")
        topo.veth(a, "a0", b, "b0")
        for ns, dev in ((a, "a0"), (b, "b0")):
            topo.up(ns, dev)
        topo.wait_oper_up(a, "a0")
        yield topo, a, b




def send(topo: Topology, ns: str, dev: str, items: list[bytes]) -> None:
    topo.exec(ns, [sys.executable, "-c", SENDER, dev], input="\n".join(f.hex() for f in items) + "\n")


def netns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def collect(session: FollowSession, want, timeout: float = 3.0):  # noqa: ANN001, ANN201
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += session.poll(50)
        if want(got):
            break
    return got


@pytest.mark.parametrize("expr", FILTERS)
def test_kernel_filter_keeps_what_tcpdump_keeps(pair, tmp_path: Path, expr: str) -> None:  # noqa: ANN001
    topo, a, b = pair
    inode = netns_inode(b)
    sent = [f for f, _, _ in frames()]
    want = expected(tmp_path, expr)
    with FollowSession(FollowConfig(filter=parse(expr), ports=PORTS, rate=0)) as s:
        send(topo, a, "a0", sent)
        marker = sent[0]  # sent last again: once it is seen, everything before it was delivered
        if marker not in want:
            marker = next(iter(want), None)
        got = collect(s, lambda evs: marker is not None and sum(
            1 for e in evs if e.hook == Hook.RECV and e.netns == inode and e.data == marker) >= 1)
        seen = {e.data for e in got if e.hook == Hook.RECV and e.netns == inode and e.ifname == "b0"}
    seen &= set(sent)  # the peer's own IPv6 traffic (router solicitations ...) is not ours
    assert seen == want, f"{expr!r}: kernel kept {len(seen)}, tcpdump {len(want)}"


def test_event_fields_against_iproute2(pair) -> None:  # noqa: ANN001
    topo, a, b = pair
    frame = frames()[0][0]
    link_b = topo.ip_json(b, "link", "show", "dev", "b0")[0]
    link_a = topo.ip_json(a, "link", "show", "dev", "a0")[0]
    with FollowSession(FollowConfig(filter=parse("host 203.0.113.7 and tcp port 443"), rate=0)) as s:
        send(topo, a, "a0", [frame])
        got = collect(s, lambda evs: any(e.hook == Hook.RECV for e in evs))
    xmit = [e for e in got if e.hook == Hook.XMIT and e.data == frame]
    recv = [e for e in got if e.hook == Hook.RECV and e.data == frame]
    assert xmit and recv
    x, r = xmit[0], recv[0]
    assert (x.ifname, x.ifindex, x.netns) == ("a0", link_a["ifindex"], netns_inode(a))
    assert (r.ifname, r.ifindex, r.netns) == ("b0", link_b["ifindex"], netns_inode(b))
    assert x.l2 and r.l2 and x.wire_len == r.wire_len == len(frame) and x.complete
    # AF_PACKET sends the bytes as they are: nothing pending; the veth hands the same skb over.
    assert x.ip_summed == IpSummed.NONE and x.protocol == 0x0800
    assert r.skb == x.skb and r.ts_ns >= x.ts_ns


def test_snaplen_cuts_and_says_so(pair) -> None:  # noqa: ANN001
    topo, a, b = pair
    big = raw(_eth(IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=7, dport=9) / Raw(b"z" * 1200)))
    with FollowSession(FollowConfig(filter=parse("host 203.0.113.9"), snaplen=128, rate=0)) as s:
        send(topo, a, "a0", [big])
        got = collect(s, lambda evs: any(e.hook == Hook.RECV for e in evs))
        stats = s.stats()
    r = next(e for e in got if e.hook == Hook.RECV)
    assert len(r.data) == 128 and r.wire_len == len(big) and not r.complete and r.data == big[:128]
    assert stats["cut"] >= 1


def test_rate_bound_counts_what_it_held_back(pair) -> None:  # noqa: ANN001
    topo, a, b = pair
    burst = [raw(_eth(IP(src="192.0.2.1", dst="203.0.113.10", id=i) / UDP(sport=7, dport=9))) for i in range(200)]
    with FollowSession(FollowConfig(filter=parse("host 203.0.113.10"), rate=20)) as s:
        send(topo, a, "a0", burst)
        got = collect(s, lambda evs: False, timeout=0.5)
        stats = s.stats()
    # 200 frames x (xmit, rx, recv) hook hits; at most 20 per second were sent (one more per CPU
    # where two pass the check at once).
    assert stats["matched"] >= 400
    assert stats["sent"] == len(got) <= 20 + os.cpu_count()
    assert stats["rate_limited"] == stats["matched"] - stats["sent"]


def test_btf_missing_is_unavailable(tmp_path: Path) -> None:
    need_root()
    with pytest.raises(Unavailable, match="no kernel BTF"):
        FollowSession(FollowConfig(btf_path=str(tmp_path / "missing")))


def test_programs_go_away_with_a_killed_process(tmp_path: Path) -> None:
    """SIGKILL: the kernel closes the descriptors, and the programs they held are unloaded."""
    need_root()
    code = ("import sys, time\n"
            "from badsum.kernel.session import FollowSession, FollowConfig\n"
            "s = FollowSession(FollowConfig())\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")  # fmt: skip
    before = _our_programs()
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        child = _our_programs() - before
        assert len(child) >= 5
    finally:
        p.kill()
        p.wait(timeout=10)
    wait_for(lambda: not (child & _our_programs()), timeout=10, what="the killed process's programs to be unloaded")


def _our_programs() -> set[int]:
    """Ids of loaded programs named like ours, from the kernel's own list (BPF_PROG_GET_NEXT_ID)."""
    names = {"on_xmit", "on_receive", "on_rx", "on_drop", "on_drop_sk"}
    return {pid for pid, _, name in libbpf.loaded_programs() if name in names}
