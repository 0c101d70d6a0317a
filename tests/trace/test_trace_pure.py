"""`badsum.trace` on frames built with scapy: each case says from first principles what the
first bad hop must be."""

from __future__ import annotations

from scapy.all import IP, TCP, UDP, VXLAN, Ether, Raw
from tracekit import MAC2, only_flow, run, tcp_frame, udp_frame

from badsum.checksum.verdict import TP_STATUS_CSUMNOTREADY
from badsum.host.model import (
    HostSnapshot,
    KernelInfo,
    Link,
    Namespace,
    OVSBridge,
    OVSInfo,
    OVSPort,
)

A, B, NAT = "192.0.2.1", "198.51.100.2", "203.0.113.1"
DATA = bytes(range(256)) * 2


def test_nat_rewrite_with_stale_checksum_is_nat_stale() -> None:
    before = tcp_frame(A, B, 40000, 80, DATA)
    good = Ether(before)[TCP].chksum
    # SNAT to 203.0.113.1:50000 that rewrote the header and left the TCP checksum as it was.
    after = tcp_frame(NAT, B, 50000, 80, DATA, ttl=63, mac=MAC2, chksum=good)
    f = only_flow(run([("c1:eth0", [before]), ("host:eth0", [after])]))
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("c1:eth0", "host:eth0", "nat-stale")
    changed = {(c["layer"], c["field"]): (c["old"], c["new"]) for c in f["hops"][1]["changes"]}
    assert changed[("ip", "src")] == (A, NAT) and changed[("tcp", "sport")] == ("40000", "50000")
    assert changed[("ip", "ttl")] == ("64", "63") and ("link", "src") in changed


def test_nat_rewrite_with_updated_checksum_is_fine() -> None:
    before = tcp_frame(A, B, 40000, 80, DATA)
    after = tcp_frame(NAT, B, 50000, 80, DATA, ttl=63)  # scapy computes the right sum
    f = only_flow(run([("c1:eth0", [before]), ("host:eth0", [after])]))
    assert f["first_bad_hop"] is None and f["hops"][1]["seen"] == 1


def test_zero_udp_checksum_updated_by_nat_is_nat_stale() -> None:
    before = udp_frame(A, B, 40000, 4789 + 1, b"x" * 40, chksum=0)
    # A buggy NAT "updates" the 0 for the port change (RFC 1624 on a zero sum): ~(~0 + ~old + new).
    upd = ~((0xFFFF + (~40000 & 0xFFFF) + 50000) % 0xFFFF) & 0xFFFF
    after = udp_frame(A, B, 50000, 4789 + 1, b"x" * 40, chksum=upd)
    f = only_flow(run([("node1:nflog", [before]), ("node1:eth0", [after])]))
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("node1:nflog", "node1:eth0", "nat-stale")
    assert "zero" in fb["why"]


def test_flipped_byte_is_corruption_at_its_offset() -> None:
    frames = [tcp_frame(A, B, 40000, 80, DATA, seq=1000 + i * len(DATA), ip_id=10 + i) for i in range(3)]
    bad = bytearray(frames[1])
    bad[14 + 20 + 20 + 100] ^= 0x01  # payload byte 100, checksum not fixed (a bad cable)
    f = only_flow(run([("h1:eth0", frames), ("sw:tapA", frames), ("sw:p2", [frames[0], bytes(bad), frames[2]])]))
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("sw:tapA", "sw:p2", "corruption")
    assert fb["packets"] == 1
    assert fb["offsets"] == [{"frame": 154, "payload": 100, "old": DATA[100], "new": DATA[100] ^ 1, "seq": 1000 + 512 + 100}]
    assert f["hops"][2]["payload_changed"] == 1


def test_vxlan_encapsulation_added_and_removed_matches() -> None:
    inner = tcp_frame("203.0.113.129", "203.0.113.66", 40000, 9000, DATA, ip_id=33)
    outer = Ether(**MAC2) / IP(src="198.51.100.1", dst=B, id=5) / UDP(sport=41000, dport=8472, chksum=0) / VXLAN(vni=1) / Raw(inner)
    f = only_flow(run([("node1:flannel.1", [inner]), ("node1:eth0", [bytes(outer)]), ("pod:eth0", [inner])]))
    assert f["first_bad_hop"] is None
    assert [h["seen"] for h in f["hops"]] == [1, 1, 1]
    added = [c for c in f["hops"][1]["changes"] if c["layer"] == "encap"]
    assert added and added[0]["field"] == "added" and "8472" in added[0]["new"] and "vxlan vni 1" in added[0]["new"]
    assert any(c["layer"] == "encap" and c["field"] == "removed" for c in f["hops"][2]["changes"])


def _superframe(payload: bytes, seq: int, ip_id: int) -> bytes:
    """A TSO super-frame as a sender's capture shows it: one IP packet, pending sum."""
    return tcp_frame(A, B, 40000, 80, payload, seq=seq, ip_id=ip_id, partial=True)


def test_tso_superframe_matches_its_segments_by_sequence_range() -> None:
    big = bytes((i * 7) & 0xFF for i in range(3000))
    sf = _superframe(big, 5000, 100)
    segs = [tcp_frame(A, B, 40000, 80, big[i * 1000 : (i + 1) * 1000], seq=5000 + i * 1000, ip_id=100 + i) for i in range(3)]
    flipped = bytearray(segs[1])
    flipped[54 + 5] ^= 0x80
    data = run([("h1:eth0", [sf]), ("sw:tapA", segs), ("sw:p2", [segs[0], bytes(flipped), segs[2]])])
    f = only_flow(data)
    assert f["packets"] == 1  # one super-frame and its three segments are one packet
    assert [h["seen"] for h in f["hops"]] == [1, 1, 1]
    assert f["hops"][1]["segmentation_changed"] == 1
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("sw:tapA", "sw:p2", "corruption")
    assert fb["offsets"][0]["frame"] == 59 and fb["offsets"][0]["payload"] == 5 and fb["offsets"][0]["seq"] == 6005


def test_retransmission_is_a_packet_of_its_own() -> None:
    first = tcp_frame(A, B, 40000, 80, DATA, ip_id=20)
    again = tcp_frame(A, B, 40000, 80, DATA, ip_id=21)
    f = only_flow(run([("a:eth0", [first, again]), ("b:eth0", [first, again])]))
    assert f["packets"] == 2 and f["first_bad_hop"] is None


def test_packet_missing_at_later_points_is_dropped() -> None:
    frames = [tcp_frame(A, B, 40000, 80, DATA, seq=1000 + i * 512, ip_id=40 + i) for i in range(3)]
    f = only_flow(run([("a:eth0", frames), ("b:eth0", frames), ("c:eth0", [frames[0], frames[2]])]))
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("b:eth0", "c:eth0", "dropped")
    assert f["hops"][2]["missing"] == 1


def test_partial_judged_by_the_kernel_status() -> None:
    p = tcp_frame(A, B, 40000, 80, DATA, partial=True)
    # Sender: checksum pending (CSUMNOTREADY). Further on: the same bytes with nothing pending.
    f = only_flow(run([("c1:eth0", [(p, TP_STATUS_CSUMNOTREADY)]), ("c2:eth0", [(p, 0)])]))
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("c1:eth0", "c2:eth0", "partial")
    ok = only_flow(run([("c1:eth0", [(p, TP_STATUS_CSUMNOTREADY)]), ("c2:eth0", [(p, TP_STATUS_CSUMNOTREADY)])]))
    assert ok["first_bad_hop"] is None and ok["hops"][1]["kernel"] == {"CSUMNOTREADY": 1}


def _ovs_snapshot() -> HostSnapshot:
    def veth(ns: str, name: str, idx: int, peer_ns: str, peer: str, peer_idx: int, master: str | None = None) -> Link:
        return Link(idx, name, "veth", 1500, "UP", master=master, peer_ifindex=peer_idx, peer_ns=peer_ns, peer_name=peer)

    host = Namespace("bs000001-host", 1, "/run/netns/bs000001-host", links=(
        veth("bs000001-host", "c1-veth", 5, "bs000001-c1", "eth0", 2, "ovs-system"),
        veth("bs000001-host", "c2-veth", 6, "bs000001-c2", "eth0", 2, "ovs-system")))  # fmt: skip
    c1 = Namespace("bs000001-c1", 2, "/run/netns/bs000001-c1", links=(veth("", "eth0", 2, "bs000001-host", "c1-veth", 5),))
    c2 = Namespace("bs000001-c2", 3, "/run/netns/bs000001-c2", links=(veth("", "eth0", 2, "bs000001-host", "c2-veth", 6),))
    root = Namespace("host", 4, None, links=(Link(2, "eth0", "device", 1500, "UP"),))
    ovs = OVSInfo(True, bridges=(OVSBridge("br0", "netdev", (OVSPort("c1-veth", "br0", "system"),
                                                              OVSPort("c2-veth", "br0", "system"))),),
                  namespace="bs000001-host")  # fmt: skip
    return HostSnapshot(0.0, "lab", KernelInfo("6.18.0", (6, 18, 0)), True, (root, host, c1, c2), (ovs,))


def test_partial_through_ovs_netdev_is_the_fault_of_that_hop_with_a_snapshot() -> None:
    p = tcp_frame("198.51.100.1", B, 40000, 9000, DATA, partial=True)
    path = [("c1:eth0", [p]), ("host:c1-veth", [p]), ("host:c2-veth", [p]), ("c2:eth0", [p])]
    f = only_flow(run(path, snapshot=_ovs_snapshot()))
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("host:c1-veth", "host:c2-veth", "partial")
    assert "netdev" in fb["why"]
    assert f["hops"][1]["hop"]["kind"] == "same-buffer"
    # Without the snapshot (and without kernel status) the pending sums are only reported.
    g = only_flow(run(path))
    assert g["first_bad_hop"] is None and g["unconfirmed_partial"] == ["host:c1-veth", "host:c2-veth", "c2:eth0"]


def test_order_from_timestamps() -> None:
    frames = [tcp_frame(A, B, 40000, 80, DATA, seq=1000 + i * 512, ip_id=50 + i) for i in range(3)]
    # Given out of order; the packets reach b, then c, then a (1, 2, 0 ms after their first sighting... a last).
    data = run([("a:eth0", frames), ("b:eth0", frames), ("c:eth0", frames)], order="time", delays=[5, 0, 2])
    assert data["path"] == ["b:eth0", "c:eth0", "a:eth0"]
    assert only_flow(data)["hops"][0]["point"] == "b:eth0"
