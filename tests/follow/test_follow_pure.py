"""`badsum.follow` on kernel events built from scapy packets: each case says from first principles
(the kernel's checksum contract, include/linux/skbuff.h) what the first bad hop must be."""

from __future__ import annotations

import tomllib
from pathlib import Path

from builders import pseudo6
from followkit import (
    A,
    B,
    HEAD,
    NAMES,
    NAT,
    NETNS,
    PAYLOAD,
    Kit,
    data_segment,
    good_tcp_sum,
    kinds,
    only_flow,
    syn,
    vxlan,
    wsum_le,
)
from scapy.all import ARP, IP, TCP, UDP, Ether, IPv6

from badsum.follow.causes import CAUSES
from badsum.follow.model import Hook, IpSummed
from badsum.follow.result import follow_analysis, text_lines, to_data

REPO = Path(__file__).resolve().parents[2]
PARTIAL, NONE, UNNECESSARY, COMPLETE = IpSummed.PARTIAL, IpSummed.NONE, IpSummed.UNNECESSARY, IpSummed.COMPLETE
XMIT, RECV, RX, DROP = Hook.XMIT, Hook.RECV, Hook.RX, Hook.DROP


def kb005(k: Kit, frame: bytes, a: int = 0xA000, b: int = 0xB000, t0: int | None = None) -> None:
    """The journey of ../shared/reference/kernel-tracing.md: PARTIAL up to the host side of the
    sender's veth, then re-sent by ovs-vswitchd as a new skb with the same (pseudo-only) sum."""
    k.add(XMIT, a, "c1:eth0", frame, summed=PARTIAL, at=t0)
    k.add(RX, a, "host:c1-veth", frame, summed=PARTIAL)
    k.add(RECV, a, "host:c1-veth", frame, summed=PARTIAL)
    k.add(DROP, a, "host:c1-veth", frame, summed=PARTIAL, reason="OTHERHOST")
    k.add(XMIT, b, "host:c2-veth", frame)
    k.add(RECV, b, "c2:eth0", frame)
    k.add(DROP, b, "c2:eth0", frame, summed=COMPLETE, reason="TCP_CSUM")


def test_kb005_unfinished_between_the_veths() -> None:
    k = Kit()
    frame = syn(pending=True)
    assert Ether(frame)[TCP].chksum != good_tcp_sum(frame)  # the field is not a valid checksum
    kb005(k, frame)
    data = k.data()
    f = only_flow(data)
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("host:c1-veth", "host:c2-veth", "unfinished")
    assert fb["likely_causes"][0]["id"] == "KB-005" and "KB-007" in [c["id"] for c in fb["likely_causes"]]
    assert fb["evidence"]["after"]["ip_summed"] == "PARTIAL" and fb["evidence"]["before"]["ip_summed"] == "NONE"
    assert fb["evidence"]["after"]["hook"] == "rx+recv"
    stored = f"0x{Ether(frame)[TCP].chksum:04x}"
    assert fb["evidence"]["before"]["checksum"]["stored"] == stored == fb["evidence"]["before"]["checksum"]["pseudo"]
    assert fb["evidence"]["after"]["csum_start"] == HEAD + 34 and fb["evidence"]["after"]["csum_offset"] == 16
    assert "c1:eth0" in fb["fix"] and "tx off" in fb["fix"]
    assert fb["packets"] == 1
    assert kinds(f) == [("c1:eth0", "xmit", "pending"), ("host:c1-veth", "rx+recv", "pending"),
                        ("host:c1-veth", "drop", "dropped"), ("host:c2-veth", "xmit", "unfinished"),
                        ("c2:eth0", "recv", "unfinished"), ("c2:eth0", "drop", "dropped")]  # fmt: skip
    drops = {(d["namespace"], d["device"], d["reason"]): d for d in data["drops"]}
    assert drops[("c2", "eth0", "TCP_CSUM")]["count"] == 1 and drops[("c2", "eth0", "TCP_CSUM")]["netns"] == NETNS["c2"]
    assert drops[("host", "c1-veth", "OTHERHOST")]["count"] == 1
    assert data["summary"] == {"events": 7, "journeys": 1, "flows": 1, "flows_bad": 1, "by_kind": {"unfinished": 1},
                               "hops_by_kind": {"pending": 2, "dropped": 2, "unfinished": 2}, "drops": 2}  # fmt: skip
    rows = [(r["device"], r["direction"]) for r in f["hops"]]
    assert rows == [("c1:eth0", "out"), ("host:c1-veth", "in"), ("host:c1-veth", "drop"), ("host:c2-veth", "out"),
                    ("c2:eth0", "in"), ("c2:eth0", "drop")]  # fmt: skip
    text = text_lines(data)
    assert text[0].startswith("192.0.2.1:40000 > 192.0.2.2:80 proto 6 (1 packet): first bad hop host:c1-veth -> host:c2-veth")
    assert any("host:c2-veth" in t and "NONE" in t and "unfinished" in t for t in text)


def test_clean_path_with_offload_is_pending_then_ok() -> None:
    k = Kit()
    pending, done = data_segment(pending=True), data_segment()
    assert Ether(done)[TCP].chksum == good_tcp_sum(done)
    k.add(XMIT, 0x1, "c1:eth0", pending, summed=PARTIAL)
    k.add(RX, 0x1, "host:c1-veth", pending, summed=PARTIAL)
    k.add(RECV, 0x1, "host:c1-veth", pending, summed=PARTIAL)
    k.add(XMIT, 0x1, "host:br0", pending, summed=PARTIAL)
    k.add(XMIT, 0x1, "host:eth0", done)  # skb_checksum_help() completed it: ip_summed NONE
    k.add(RECV, 0x1, "c2:eth0", done, summed=UNNECESSARY)
    f = only_flow(k.data())
    assert f["first_bad_hop"] is None
    assert {h["kind"] for h in f["journeys"][0]["hops"]} == {"pending", "ok"}
    assert [h["kind"] for h in f["journeys"][0]["hops"]] == ["pending", "pending", "pending", "ok", "ok"]


def test_payload_corrupted_between_two_hops_is_bad_after_the_earlier() -> None:
    k = Kit()
    good = data_segment()
    bad = bytearray(good)
    bad[14 + 20 + 20 + 100] ^= 0x01  # payload byte 100; checksum left as it was
    assert Ether(bytes(bad))[TCP].chksum != good_tcp_sum(bytes(bad))
    k.add(XMIT, 0x1, "c1:eth0", good)
    k.add(RECV, 0x1, "relay:eth0", good)
    k.add(XMIT, 0x2, "relay:eth1", bytes(bad))  # a userspace relay re-sent it, one bit flipped
    k.add(RECV, 0x2, "c2:eth0", bytes(bad))
    k.add(DROP, 0x2, "c2:eth0", bytes(bad), reason="TCP_CSUM")
    f = only_flow(k.data())
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("relay:eth0", "relay:eth1", "bad")
    assert "1 payload byte(s) changed since relay:eth0" in fb["why"] and "154 (payload 100)" in fb["why"]
    assert fb["evidence"]["before"]["checksum"]["computed"] == f"0x{good_tcp_sum(bytes(bad)):04x}"
    assert fb["likely_causes"] == []


def test_unnecessary_with_wrong_bytes_is_marked_verified_bad() -> None:
    k = Kit()
    pkt = Ether(data_segment())
    pkt[TCP].chksum ^= 0x1234
    bad = bytes(pkt)
    k.add(RECV, 0x1, "c1:eth0", bad, summed=UNNECESSARY, level=0)
    f = only_flow(k.data())
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == (None, "c1:eth0", "marked-verified-bad")
    assert fb["likely_causes"][0]["id"] == "KB-001" and "rx off" in fb["fix"]


def test_unnecessary_level_covers_only_the_outer_checksum() -> None:
    # VXLAN with a right outer UDP sum and a wrong inner TCP one, csum_level 0: only the outer
    # counts as verified; the stack checks the inner itself (and drops): bad, not a lie.
    inner = Ether(data_segment())
    inner[TCP].chksum ^= 0x0F0F
    outer = vxlan(bytes(inner), chksum=None)
    k = Kit()
    k.add(RECV, 0x1, "host:eth0", outer, summed=UNNECESSARY, level=0)
    k2 = Kit()
    k2.add(RECV, 0x1, "host:eth0", outer, summed=UNNECESSARY, level=1)
    assert only_flow(k.data())["first_bad_hop"]["kind"] == "bad"
    assert only_flow(k2.data())["first_bad_hop"]["kind"] == "marked-verified-bad"


def test_complete_with_stale_csum_and_wrong_bytes_is_marked_verified_bad() -> None:
    good = data_segment()
    bad = bytearray(good)
    bad[-1] ^= 0x40
    k = Kit()
    # skb->csum summed over the good bytes (L3 on), the bytes changed afterwards (KB-008 class).
    k.add(RECV, 0x1, "c1:eth0", bytes(bad), summed=COMPLETE, csum=wsum_le(good[14:]))
    fb = only_flow(k.data())["first_bad_hop"]
    assert fb["kind"] == "marked-verified-bad" and fb["likely_causes"][0]["id"] == "KB-008"
    assert "disagrees" in fb["evidence"]["before"]["csum_compare"]
    # The same wrong bytes with a skb->csum that is their own sum: the stack will see it: bad.
    k2 = Kit()
    k2.add(RECV, 0x1, "c1:eth0", bytes(bad), summed=COMPLETE, csum=wsum_le(bytes(bad[14:])))
    fb2 = only_flow(k2.data())["first_bad_hop"]
    assert fb2["kind"] == "bad" and "agrees" in fb2["evidence"]["before"]["csum_compare"]


def test_complete_with_right_bytes_is_ok_and_says_so() -> None:
    good = data_segment()
    k = Kit()
    k.add(RECV, 0x1, "c1:eth0", good, summed=COMPLETE, csum=wsum_le(good[14:]))
    k.add(RECV, 0x2, "c2:eth0", data_segment(ip_id=10, seq=9000), summed=COMPLETE, csum=0x1234)
    data = k.data()
    assert all(f["first_bad_hop"] is None for f in data["flows"])
    assert data["summary"]["hops_by_kind"] == {"ok": 2}


def test_kb004_zero_outer_udp_sum_rewritten_by_snat() -> None:
    inner = syn()
    before = vxlan(inner, chksum=0)
    after = vxlan(inner, src=NAT, sport=50000, chksum=0xBEEF)  # the pre-5.7 "update" of a zero sum
    right = Ether(vxlan(inner, src=NAT, sport=50000, chksum=None))[UDP].chksum
    assert right != 0xBEEF
    k = Kit()
    k.add(XMIT, 0x1, "node1:eth0", before)
    k.add(RECV, 0x1, "host:node1-veth", before)
    k.add(XMIT, 0x1, "host:eth0", after)
    f = only_flow(k.data())
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("host:node1-veth", "host:eth0", "rewritten")
    assert "zero" in fb["why"] and fb["likely_causes"][0]["id"] == "KB-004"
    check = fb["evidence"]["before"]["checksum"]
    assert (check["layer"], check["depth"], check["offset"], check["status"]) == ("udp", 0, 40, "bad")
    assert (check["stored"], check["computed"]) == ("0xbeef", f"0x{right:04x}")
    assert f["text"] == "192.0.2.1:40000 > 192.0.2.2:80 proto 6"  # the inner flow


def test_nat_rewrite_leaving_tcp_sum_stale_is_rewritten() -> None:
    before = data_segment()
    pkt = Ether(before)
    pkt[IP].src, pkt[TCP].sport = NAT, 50000
    pkt[IP].chksum = None  # the IP header is fixed, the TCP sum is not
    after = bytes(Ether(bytes(pkt)))
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", before)
    k.add(XMIT, 0x1, "host:eth0", after)
    fb = only_flow(k.data())["first_bad_hop"]
    assert fb["kind"] == "rewritten" and "before NAT" in fb["why"]


def test_vxlan_inner_followed_into_the_underlay_is_one_journey() -> None:
    inner_done = data_segment(ip_id=77)
    inner = data_segment(ip_id=77, pending=True)
    # LCO: the outer UDP sum is computed as if the inner TCP sum were filled in (scapy over the
    # completed inner), then the inner field goes back to the pseudo-header sum, as on the wire.
    lco = Ether(vxlan(inner_done, chksum=None))
    outer_sum = lco[UDP].chksum
    encap = bytearray(bytes(lco))
    at = 14 + 20 + 8 + 8 + 14 + 20 + 16
    encap[at : at + 2] = Ether(inner)[TCP].chksum.to_bytes(2, "big")
    assert Ether(bytes(encap))[UDP].chksum == outer_sum
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", inner, summed=PARTIAL)
    k.add(RX, 0x1, "host:c1-veth", inner, summed=PARTIAL)
    k.add(RECV, 0x1, "host:c1-veth", inner, summed=PARTIAL)
    k.add(XMIT, 0x1, "host:vxlan0", inner, summed=PARTIAL)
    k.add(XMIT, 0x2, "host:eth0", bytes(encap), summed=PARTIAL, l4=14 + 20 + 8 + 8 + 14 + 20)
    data = k.data()
    assert data["summary"]["journeys"] == 1
    f = only_flow(data)
    assert f["text"] == "192.0.2.1:40000 > 192.0.2.2:80 proto 6"
    assert f["first_bad_hop"] is None
    assert [h["device"] for h in f["journeys"][0]["hops"]] == ["c1:eth0", "host:c1-veth", "host:vxlan0", "host:eth0"]
    assert {h["kind"] for h in f["journeys"][0]["hops"]} == {"pending"}
    # The outer sum computed over the unfinished inner instead: wrong once the inner is completed.
    wrong = bytearray(encap)
    wrong[40:42] = b"\x12\x34"
    k.add(XMIT, 0x3, "host:eth1", bytes(wrong), summed=PARTIAL, l4=14 + 20 + 8 + 8 + 14 + 20)
    fb = only_flow(k.data())["first_bad_hop"]
    assert (fb["before"], fb["kind"]) == ("host:eth1", "bad") and "udp checksum wrong" in fb["why"]


def test_retransmitted_identical_syns_are_separate_journeys() -> None:
    k = Kit()
    frame = syn(pending=True)
    kb005(k, frame)
    kb005(k, frame, t0=2_000_000_000)  # the same bytes a second later, in the same skb addresses
    data = k.data()
    assert data["summary"]["journeys"] == 2
    f = only_flow(data)
    assert f["packets"] == 2 and f["first_bad_hop"]["packets"] == 2
    assert [len(j["hops"]) for j in f["journeys"]] == [6, 6]
    assert {d["reason"]: d["count"] for d in data["drops"]} == {"TCP_CSUM": 2, "OTHERHOST": 2}


def test_a_copy_lost_early_does_not_take_the_next_copys_hops() -> None:
    k = Kit()
    frame = syn(ip_id=0)
    k.add(XMIT, 0xA, "c1:eth0", frame)
    k.add(RECV, 0xA, "host:c1-veth", frame)
    k.add(DROP, 0xA, "host:c1-veth", frame, reason="NETFILTER_DROP")
    k.add(XMIT, 0xC, "c1:eth0", frame, at=2_000_000_000)
    k.add(RECV, 0xC, "host:c1-veth", frame)
    k.add(XMIT, 0xD, "host:c2-veth", frame)
    k.add(RECV, 0xD, "c2:eth0", frame)
    f = only_flow(k.data())
    assert [[h["device"] for h in j["hops"]] for j in f["journeys"]] == [
        ["c1:eth0", "host:c1-veth", "host:c1-veth"],
        ["c1:eth0", "host:c1-veth", "host:c2-veth", "c2:eth0"],
    ]
    assert f["first_bad_hop"] is None  # NETFILTER_DROP is no checksum reason


def test_syns_with_different_ip_ids_are_separate_journeys() -> None:
    k = Kit()
    for i, t in ((1, 1_000_000_000), (2, 1_000_500_000)):
        k.add(XMIT, 0xA, "c1:eth0", syn(ip_id=i), at=t)
        k.add(RECV, 0xA, "c2:eth0", syn(ip_id=i))
    data = k.data()
    assert data["summary"]["journeys"] == 2 and only_flow(data)["packets"] == 2


def test_drop_only_with_a_checksum_reason_names_the_drop() -> None:
    # Bytes never complete (over the capture bound): no hop can be called bad, the kernel still drops.
    frame = data_segment()
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", frame[:80], wire_len=len(frame))
    k.add(RECV, 0x1, "c2:eth0", frame[:80], wire_len=len(frame))
    k.add(DROP, 0x1, "c2:eth0", frame[:80], wire_len=len(frame), reason="TCP_CSUM")
    fb = only_flow(k.data())["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("c1:eth0", "c2:eth0", "dropped")
    assert fb["evidence"]["before"]["reason"] == "TCP_CSUM"


def test_truncated_bytes_with_the_pseudo_sum_are_still_unfinished() -> None:
    # The pseudo-header sum depends on the headers alone, so a packet cut at the capture bound
    # still shows a re-created unfinished sum.
    frame = data_segment(pending=True)
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", frame[:96], summed=PARTIAL, wire_len=len(frame), data_len=len(frame) - 96)
    k.add(XMIT, 0x2, "host:c2-veth", frame[:96], wire_len=len(frame))
    data = k.data()
    fb = only_flow(data)["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("c1:eth0", "host:c2-veth", "unfinished")
    assert "page fragments" in only_flow(data)["journeys"][0]["hops"][0]["why"]


def test_arp_and_truncated_events_are_unverifiable() -> None:
    arp = bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.1", pdst="192.0.2.2"))
    frame = data_segment()
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", arp)
    k.add(RECV, 0x1, "host:c1-veth", arp)
    k.add(DROP, 0x1, "host:c1-veth", arp, reason="NOT_SPECIFIED")
    k.add(XMIT, 0x2, "c1:eth0", frame[:70], wire_len=len(frame), data_len=len(frame) - 70)
    k.add(XMIT, 0x3, "c1:eth0", b"\x00" * 5)
    data = k.data()
    assert data["summary"]["journeys"] == 3
    assert [d["reason"] for d in data["drops"]] == ["NOT_SPECIFIED"]
    f = only_flow(data)
    hop = f["journeys"][0]["hops"][0]
    assert hop["kind"] == "unverifiable" and "70 of" in hop["why"] and f["first_bad_hop"] is None
    assert data["summary"]["hops_by_kind"]["unverifiable"] == 4
    text_lines(data)


def test_gso_super_frame_not_pending_is_unverifiable() -> None:
    big = data_segment(PAYLOAD * 6)
    pkt = Ether(big)
    pkt[TCP].chksum = 0x1111  # GRO'd: the merged header's sum belongs to the first segment
    k = Kit()
    k.add(RECV, 0x1, "c1:eth0", bytes(pkt), summed=UNNECESSARY, gso_size=1448)
    f = only_flow(k.data())
    assert f["journeys"][0]["hops"][0]["kind"] == "unverifiable" and f["first_bad_hop"] is None


def test_partial_seeded_with_a_wrong_value_is_bad() -> None:
    pkt = Ether(data_segment())
    pkt[TCP].chksum = 0x4242
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", bytes(pkt), summed=PARTIAL)
    fb = only_flow(k.data())["first_bad_hop"]
    assert fb["kind"] == "bad" and "seeded with a wrong value" in fb["why"]


def test_unknown_namespaces_are_named_by_inode() -> None:
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", syn())
    data = to_data(follow_analysis(k.events, {}))
    assert data["flows"][0]["hops"][0]["device"] == f"netns:{NETNS['c1']}:eth0"
    assert NAMES[NETNS["c1"]] == "c1"


def test_reply_flow_is_reverse() -> None:
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", syn())
    reply = bytes(Ether() / IP(src=B, dst=A, id=3) / TCP(sport=80, dport=40000, flags="SA", seq=1, ack=1001))
    k.add(XMIT, 0x2, "c2:eth0", reply)
    data = k.data()
    assert [f["direction"] for f in data["flows"]] == ["forward", "reverse"]


def test_every_cause_is_in_the_catalogue() -> None:
    ids = {r["id"] for r in tomllib.loads((REPO / "src/badsum/rules/catalogue.toml").read_text())["rule"]}
    assert {c.id for c in CAUSES} <= ids


def test_kb004_as_the_kernel_shows_it_outer_wrong_where_first_seen() -> None:
    # The SNAT and its "update" happen in POSTROUTING, before any hook sees the outer header: the
    # first hop with the encapsulation already carries the wrong sum while the inner one is pending
    # (a NIC with TX offload). A VXLAN device writes 0 or a complete sum, so the field was rewritten
    # on the way; a vmxnet3 NIC (KB-006) writes after this hook, so it cannot be it.
    inner = syn(pending=True)
    outer = vxlan(inner, src=NAT, sport=50000, chksum=0xBEEF)
    right = Ether(vxlan(syn(), src=NAT, sport=50000, chksum=None))[UDP].chksum  # over the completed inner
    assert right != 0xBEEF
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", inner, summed=PARTIAL)
    k.add(XMIT, 0x1, "host:flannel.1", inner, summed=PARTIAL)
    k.add(XMIT, 0x1, "host:eth0", outer, summed=PARTIAL, l4=14 + 20 + 8 + 8 + 14 + 20)
    fb = only_flow(k.data())["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("host:flannel.1", "host:eth0", "rewritten")
    # Nothing shows the sum at encapsulation: both things a VXLAN device writes are named.
    assert fb["why"].startswith("outer UDP checksum 0 (none) or complete at encapsulation"), fb["why"]
    assert f"0xbeef on host:eth0 (bad, should be 0x{right:04x}" in fb["why"]
    assert "between host:flannel.1 and host:eth0" in fb["why"] and "skb->mark" not in fb["why"]
    assert [c["id"] for c in fb["likely_causes"]] == ["KB-004"]
    before = fb["evidence"]["before"]
    assert before["checksum"]["computed"] == f"0x{right:04x}"
    assert before["ip_summed"] == "PARTIAL" and before["encapsulated_after"] == "host:flannel.1"
    assert before["field"] == 14 + 20 + 8 + 8 + 14 + 20 + 16
    assert before["outer"] == {"src": NAT, "dst": "198.51.100.2", "sport": 50000, "dport": 4789, "ip_id": 5,
                               "udp_checksum": "0xbeef", "tunnel": "vxlan"}  # fmt: skip


def flannel_kb004(k: Kit, *, siblings: int, sport: int = 64062, mark: int = 0x4000) -> int:
    """vxlan-double-snat as follow sees it on a kernel without ea64d8d6c675: the inner SYN at
    node1:flannel.1 (PARTIAL, already SNATed to the tunnel address), the outer packet at node1:eth0
    (TX offload off: skb_checksum_help() finished the inner sum, ip_summed NONE) with the pre-5.7
    value for a port-only SNAT (0xffff) and kube-proxy's mark, received and dropped by node2's UDP;
    then `siblings` later packets of the connection through the same tunnel, unmarked, outer sum 0.
    Returns the right outer checksum of the SNATed packet."""
    inner = syn(pending=True)
    bad = vxlan(syn(), sport=sport, chksum=0xFFFF, dport=8472, ip_id=11)
    k.add(XMIT, 0x1, "node1:flannel.1", inner, summed=PARTIAL, mark=mark)
    k.add(XMIT, 0x1, "node1:eth0", bad, mark=mark)
    k.add(RECV, 0x2, "node2:eth0", bad)
    k.add(DROP, 0x2, "node2:eth0", bad, summed=COMPLETE, reason="UDP_CSUM")
    for i in range(siblings):
        t = 2_000_000_000 + i * 10_000_000
        again = syn(pending=True, seq=1000 + i) if i else inner  # the retried SYN, then the same flow's next packets
        done = syn(seq=1000 + i)
        k.add(XMIT, 0x10 + i, "node1:flannel.1", again, summed=PARTIAL, at=t)
        k.add(XMIT, 0x10 + i, "node1:eth0", vxlan(done, sport=41000, chksum=0, dport=8472, ip_id=20 + i))
        k.add(RECV, 0x20 + i, "node2:eth0", vxlan(done, sport=41000, chksum=0, dport=8472, ip_id=20 + i))
    right = Ether(vxlan(syn(), sport=sport, chksum=None, dport=8472))[UDP].chksum
    assert right not in (0, 0xFFFF)
    return right


def test_kb004_flannel_zero_at_encapsulation_wrong_after_node1s_nat() -> None:
    k = Kit()
    right = flannel_kb004(k, siblings=3)
    data = k.data()
    fb = only_flow(data)["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("node1:flannel.1", "node1:eth0", "rewritten")
    assert fb["packets"] == 1
    why = fb["why"]
    # Zero at encapsulation (what the same tunnel sent otherwise), the wrong value after, the SNAT.
    assert why.startswith("outer UDP checksum 0 at encapsulation (3 other packets of this VXLAN tunnel left "
                          "node1:eth0 with 0"), why
    assert f"0xffff on node1:eth0 (bad, should be 0x{right:04x}, or 0 for none)" in why
    assert "source port rewritten (SNAT)" in why and "skb->mark 0x4000" in why
    assert "port changed" in why and "ea64d8d6c675" in why
    assert [c["id"] for c in fb["likely_causes"]] == ["KB-004"] and "unmark" in fb["fix"]
    before = fb["evidence"]["before"]
    assert (before["hook"], before["ip_summed"], before["mark"]) == ("xmit", "NONE", "0x4000")
    assert (before["checksum"]["layer"], before["checksum"]["depth"], before["checksum"]["stored"]) == ("udp", 0, "0xffff")
    assert before["outer"]["sport"] == 64062 and before["outer"]["dport"] == 8472 and before["outer"]["ip_id"] == 11
    assert fb["evidence"]["after"]["kind"] == "pending"
    # node2's UDP dropped the one packet (its UdpInCsumErrors would count 1).
    assert [(d["label"], d["reason"], d["count"]) for d in data["drops"]] == [("node2:eth0", "UDP_CSUM", 1)]


def test_kb004_without_the_kube_proxy_mark_still_names_the_rewrite_but_not_the_snat() -> None:
    k = Kit()
    flannel_kb004(k, siblings=0, mark=0)
    fb = only_flow(k.data())["first_bad_hop"]
    assert (fb["before"], fb["kind"]) == ("node1:eth0", "rewritten")
    assert fb["why"].startswith("outer UDP checksum 0 (none) or complete at encapsulation")
    assert "skb->mark" not in fb["why"] and "SNAT" not in fb["why"]
    assert [c["id"] for c in fb["likely_causes"]] == ["KB-004"]


def test_a_right_outer_sum_after_encapsulation_is_no_fault() -> None:
    # After the fix (or with the unmark rules) the outer packet leaves with 0 and nothing is bad.
    k = Kit()
    inner = syn(pending=True)
    k.add(XMIT, 0x1, "node1:flannel.1", inner, summed=PARTIAL, mark=0x4000)
    k.add(XMIT, 0x1, "node1:eth0", vxlan(syn(), sport=64062, chksum=0, dport=8472), mark=0x4000)
    k.add(RECV, 0x2, "node2:eth0", vxlan(syn(), sport=64062, chksum=0, dport=8472))
    data = k.data()
    assert only_flow(data)["first_bad_hop"] is None and data["drops"] == []


def test_a_wrong_outer_sum_first_seen_at_receive_can_be_the_nic_kb006() -> None:
    # Right (non-zero) on the sender's transmit, wrong where received: written after the transmit
    # hook, by the NIC (vmxnet3's tunnel offload) or the wire; no NAT in between.
    done = syn()
    good = vxlan(done, chksum=None, dport=8472)
    wrong = bytearray(good)
    wrong[40:42] = b"\x12\x34"
    assert Ether(good)[UDP].chksum != 0x1234
    k = Kit()
    k.add(XMIT, 0x1, "node1:eth0", good)
    k.add(RECV, 0x2, "node2:eth0", bytes(wrong))
    fb = only_flow(k.data())["first_bad_hop"]
    assert (fb["before"], fb["kind"]) == ("node2:eth0", "bad")
    assert "KB-006" in [c["id"] for c in fb["likely_causes"]]


def test_kb004_partial_inner_zero_outer_then_rewritten() -> None:
    inner = syn(pending=True)
    l4 = 14 + 20 + 8 + 8 + 14 + 20
    k = Kit()
    k.add(XMIT, 0x1, "node1:eth0", vxlan(inner, chksum=0), summed=PARTIAL, l4=l4)
    k.add(RECV, 0x1, "host:node1-veth", vxlan(inner, chksum=0), summed=PARTIAL, l4=l4)
    k.add(XMIT, 0x1, "host:eth0", vxlan(inner, src=NAT, sport=50000, chksum=0xBEEF), summed=PARTIAL, l4=l4)
    f = only_flow(k.data())
    assert [h["kind"] for h in f["journeys"][0]["hops"]] == ["pending", "pending", "rewritten"]
    fb = f["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("host:node1-veth", "host:eth0", "rewritten")
    assert fb["likely_causes"][0]["id"] == "KB-004" and "unmark" in fb["fix"]


def test_drop_of_an_unknown_skb_joins_by_packet_key() -> None:
    frame = syn()
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", frame)
    k.add(RECV, 0x1, "c2:eth0", frame)
    k.add(DROP, 0x9, "c2:eth0", frame, reason="TCP_CSUM")  # its earlier events were lost (ring full)
    data = k.data()
    assert data["summary"]["journeys"] == 1
    assert [h["hook"] for h in only_flow(data)["journeys"][0]["hops"]] == ["xmit", "recv", "drop"]


def test_event_order_does_not_matter() -> None:
    k = Kit()
    kb005(k, syn(pending=True))
    k.events.reverse()
    fb = only_flow(k.data())["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("host:c1-veth", "host:c2-veth", "unfinished")


def test_ipv6_unfinished_sum() -> None:
    a6, b6 = "2001:db8::1", "2001:db8::2"
    pkt = Ether(bytes(Ether() / IPv6(src=a6, dst=b6) / TCP(sport=40000, dport=80, flags="S")))
    pkt[TCP].chksum = pseudo6(a6, b6, 6, len(pkt[TCP]))
    frame = bytes(pkt)
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", frame, summed=PARTIAL, l4=14 + 40)
    k.add(XMIT, 0x2, "host:c2-veth", frame)
    fb = only_flow(k.data())["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("c1:eth0", "host:c2-veth", "unfinished")
    assert only_flow(k.data())["text"] == "[2001:db8::1]:40000 > [2001:db8::2]:80 proto 6"


def test_drop_without_a_device_is_placed_at_the_skbs_last_device() -> None:
    frame = syn()
    k = Kit()
    k.add(XMIT, 0x1, "c1:eth0", frame)
    k.add(RECV, 0x1, "c2:eth0", frame)
    k.add(DROP, 0x1, "c2:", frame, reason="TCP_CSUM")  # skb->dev already cleared where it was freed
    data = k.data()
    assert [(d["label"], d["reason"], d["count"]) for d in data["drops"]] == [("c2:eth0", "TCP_CSUM", 1)]
    fb = only_flow(data)["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("c1:eth0", "c2:eth0", "dropped")


def test_segments_of_a_super_frame_are_branches_the_bad_one_names_its_own_hop_before() -> None:
    """A super-frame cut in two at relay:tapA (each segment a new skb), both sent on to c2; the
    second is corrupted by the relay. Its hop before the fault is relay:tapA (its own branch), not
    c2:eth0, where the first segment arrived earlier in time."""
    seg1 = data_segment(PAYLOAD[:256], ip_id=20, seq=5000)
    seg2 = data_segment(PAYLOAD[256:], ip_id=21, seq=5256)
    superframe = data_segment(PAYLOAD, ip_id=20, seq=5000)
    bad2 = bytearray(seg2)
    bad2[-1] ^= 0xFF
    k = Kit()
    k.add(Hook.XMIT, 0xA0, "c1:eth0", superframe, gso_size=256)
    k.add(Hook.XMIT, 0xB1, "relay:tapA", seg1)
    k.add(Hook.XMIT, 0xB2, "relay:tapA", seg2)
    k.add(Hook.RECV, 0xC1, "relay:tapB", seg1)
    k.add(Hook.RECV, 0xC1, "c2:eth0", seg1)
    k.add(Hook.RECV, 0xC2, "relay:tapB", bytes(bad2))
    k.add(Hook.RECV, 0xC2, "c2:eth0", bytes(bad2))
    fb = only_flow(k.data())["first_bad_hop"]
    assert fb is not None and (fb["after"], fb["before"], fb["kind"]) == ("relay:tapA", "relay:tapB", "bad"), fb
