"""`badsum follow -w`: kernel events written as pcapng, read back by our reader, by tshark (the
independent oracle) and by `badsum trace`. Frames are built with scapy, not with badsum."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.all import IP, TCP, Ether, Raw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builders import pseudo4
from test_pcap_reader import read_all

from badsum.capture.follow_pcapng import (
    DropTotal,
    parse_skb_comment,
    skb_comment,
    tp_status_of,
    write_events,
)
from badsum.capture.pcapng_writer import parse_tp_status_comment, tp_status_comment
from badsum.follow.model import Hook, IpSummed, KernelEvent, Loss
from badsum.outfile import UnsafeTarget

NS_HOST, NS_C1, NS_C2 = 4026531840, 4026532001, 4026532002
NAMES = {NS_HOST: "host", NS_C1: "c1", NS_C2: "c2"}
WALL = 1_700_000_000_000_000_000
A, B = "10.0.0.1", "10.0.0.2"
PAYLOAD = b"follow-me" * 20
HEADROOM = 64  # skb->head to the MAC header


def frame(*, seq: int = 1000, ip_id: int = 7, partial: bool = True, l2: bool = True) -> bytes:
    """A TCP segment; `partial`: the checksum field holds the pseudo-header sum only (offload pending)."""
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B, id=ip_id, flags="DF") / TCP(
        sport=40000, dport=9000, seq=seq, ack=1, flags="PA") / Raw(PAYLOAD)  # fmt: skip
    pkt = Ether(bytes(pkt))
    if partial:
        pkt[TCP].chksum = pseudo4(A, B, 6, 20 + len(PAYLOAD))
    raw = bytes(pkt)
    return raw if l2 else raw[14:]


def event(hook: Hook, netns: int, ifname: str, ts: int, skb: int, data: bytes, **kw: object) -> KernelEvent:
    l2 = kw.pop("l2", True)
    base = dict(
        ts_ns=ts, hook=hook, skb=skb, netns=netns, ifindex=kw.pop("ifindex", 2), ifname=ifname,
        ip_summed=IpSummed.NONE, csum=0, csum_start=0, csum_offset=0, csum_level=0, csum_valid=False,
        encapsulation=False, gso_size=0, gso_segs=0, gso_type=0, len=len(data), data_len=0, mark=0,
        protocol=0x0800, dev_type=1, data=data, data_offset=HEADROOM, wire_len=len(data), l2=l2,
    )  # fmt: skip
    base.update(kw)
    return KernelEvent(**base)  # type: ignore[arg-type]


def partial(ev: KernelEvent) -> KernelEvent:
    """PARTIAL with csum_start at the TCP header and the field 16 bytes on, as tcp_v4_send_check sets."""
    l3 = HEADROOM + (14 if ev.l2 else 0)
    return dataclasses.replace(ev, ip_summed=IpSummed.PARTIAL, csum_start=l3 + 20, csum_offset=16)


def kb005_events(packets: int = 3, *, fixed: bool = False) -> list[KernelEvent]:
    """KB-005 as the kernel shows it (../shared/reference/kernel-tracing.md): PARTIAL up to the host
    side of the sender's veth, the same pseudo-header-only sum re-sent by ovs-vswitchd with nothing
    pending, then a TCP_CSUM drop in the receiver. `fixed`: the lab's fix, ovs-vswitchd's copy
    leaves with the sum completed, and nothing is dropped."""
    out: list[KernelEvent] = []
    for n in range(packets):
        seq, ip_id = 1000 + n * len(PAYLOAD), 7 + n
        data = frame(seq=seq, ip_id=ip_id)
        resent = frame(seq=seq, ip_id=ip_id, partial=False) if fixed else data
        t = 1_000_000 * (n + 1)
        a, b = 0xFFFF888000001000 + n * 0x100, 0xFFFF888000009000 + n * 0x100
        out += [
            partial(event(Hook.XMIT, NS_C1, "eth0", t, a, data)),
            partial(event(Hook.RX, NS_HOST, "c1-veth", t + 100, a, data, ifindex=10)),
            partial(event(Hook.RECV, NS_HOST, "c1-veth", t + 150, a, data, ifindex=10)),
            event(Hook.DROP, NS_HOST, "c1-veth", t + 200, a, data, ifindex=10, reason=13, reason_name="OTHERHOST",
                  location=0xFFFFFFFF81AB0000, location_name="ip_rcv_core"),
            event(Hook.XMIT, NS_HOST, "c2-veth", t + 5000, b, resent, ifindex=11),
            event(Hook.RX, NS_C2, "eth0", t + 5100, b, resent),
            event(Hook.RECV, NS_C2, "eth0", t + 5150, b, resent),
        ]  # fmt: skip
        if not fixed:
            out.append(event(Hook.DROP, NS_C2, "eth0", t + 5200, b, data, reason=10, reason_name="TCP_CSUM",
                             location=0xFFFFFFFF81CD0000, location_name="tcp_v4_rcv"))  # fmt: skip
    return out


def packets_of(path: Path) -> tuple[object, list[tuple[int, bytes, int, int, int, int, list[str]]]]:
    """(reader, [(interface, bytes, origlen, ts_ns, tp_status, direction, comments)])."""
    reader, batches = read_all(path)
    assert not reader.errors
    rows = [(int(b.interface[i]), b.packet(i), int(b.origlen[i]), int(b.ts_ns[i]), int(b.tp_status[i]),
             int(b.direction[i]), b.comments.get(i, [])) for b in batches for i in range(len(b))]  # fmt: skip
    return reader, rows


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".part"))


# -- the kernel's state as PACKET_AUXDATA would report it -----------------------------------------


@pytest.mark.parametrize(
    ("hook", "ip_summed", "csum_valid", "gso", "expect"),
    [
        (Hook.XMIT, IpSummed.PARTIAL, False, 0, 0x9),
        (Hook.RECV, IpSummed.PARTIAL, True, 0, 0x9),  # PARTIAL wins over csum_valid (af_packet's if/else)
        (Hook.RECV, IpSummed.UNNECESSARY, False, 0, 0x81),
        (Hook.RX, IpSummed.NONE, True, 0, 0x81),  # csum_valid: skb_csum_unnecessary()
        (Hook.RECV, IpSummed.COMPLETE, False, 0, 0x1),
        (Hook.XMIT, IpSummed.UNNECESSARY, True, 0, 0x1),  # PACKET_OUTGOING: never CSUM_VALID
        (Hook.XMIT, IpSummed.PARTIAL, False, 1 << 0, 0x109),  # SKB_GSO_TCPV4
        (Hook.RECV, IpSummed.UNNECESSARY, False, 1 << 4, 0x181),  # SKB_GSO_TCPV6
        (Hook.XMIT, IpSummed.PARTIAL, False, 1 << 1, 0x9),  # SKB_GSO_DODGY alone: not TCP
    ],
)
def test_tp_status_as_af_packet_derives_it(hook: Hook, ip_summed: IpSummed, csum_valid: bool, gso: int, expect: int) -> None:
    ev = event(hook, NS_C1, "eth0", 1, 1, frame(), ip_summed=ip_summed, csum_valid=csum_valid,
               gso_size=1448 if gso else 0, gso_segs=2 if gso else 0, gso_type=gso)  # fmt: skip
    assert tp_status_of(ev) == expect


def test_gso_type_without_gso_size_is_not_gso() -> None:
    ev = event(Hook.XMIT, NS_C1, "eth0", 1, 1, frame(), gso_type=1)  # skb_is_gso() is gso_size != 0
    assert tp_status_of(ev) == 0x1


def test_skb_comment_names_every_field() -> None:
    ev = partial(event(Hook.XMIT, NS_C1, "eth0", 1, 0xFFFF888012345600, frame(), gso_size=1448, gso_segs=3,
                       gso_type=0x11, mark=0x2A, csum_level=1, ifindex=5, len=4400, data_len=4096))  # fmt: skip
    text = skb_comment(ev)
    assert text.startswith("badsum:skb hook=xmit ip_summed=PARTIAL ")
    fields = parse_skb_comment(text)
    assert fields is not None
    assert {k: fields[k] for k in ("csum_start", "csum_offset", "csum_level", "gso_size", "gso_segs", "gso_type",
                                   "len", "data_len", "mark", "skb", "netns", "ifindex", "data_offset")} == {
        "csum_start": str(HEADROOM + 34), "csum_offset": "16", "csum_level": "1", "gso_size": "1448", "gso_segs": "3",
        "gso_type": "0x11", "len": "4400", "data_len": "4096", "mark": "0x2a", "skb": "0xffff888012345600",
        "netns": str(NS_C1), "ifindex": "5", "data_offset": str(HEADROOM),
    }  # fmt: skip
    assert parse_skb_comment("badsum:tp_status=0x00000001 TP_STATUS_USER") is None


# -- read back by badsum's own reader ---------------------------------------------------------------


def test_one_interface_per_device_status_and_direction(tmp_path: Path) -> None:
    path = tmp_path / "follow.pcapng"
    events = kb005_events(packets=2)
    summary = write_events(path, events, NAMES, wall_offset_ns=WALL, filter_text="tcp port 9000", snaplen=2048)
    assert (summary.packets, summary.interfaces, summary.merged_rx, summary.drops) == (8, 4, 4, 4)
    assert summary.drop_totals == (
        DropTotal("c2:eth0", "TCP_CSUM", "tcp_v4_rcv", 2),
        DropTotal("host:c1-veth", "OTHERHOST", "ip_rcv_core", 2),
    )
    assert summary.as_dict() == {
        "path": str(path), "packets": 8, "interfaces": 4, "merged_rx": 4, "drops": 4,
        "drop_totals": [{"device": "c2:eth0", "reason": "TCP_CSUM", "location": "tcp_v4_rcv", "count": 2},
                        {"device": "host:c1-veth", "reason": "OTHERHOST", "location": "ip_rcv_core", "count": 2}],
    }  # fmt: skip
    json.dumps(summary.as_dict())
    reader, rows = packets_of(path)
    assert [(i.name, i.linktype, i.tsresol, i.snaplen) for i in reader.interfaces] == [
        ("c1:eth0", 1, 9, 2048), ("host:c1-veth", 1, 9, 2048), ("host:c2-veth", 1, 9, 2048), ("c2:eth0", 1, 9, 2048),
    ]  # fmt: skip
    names = [reader.interfaces[r[0]].name for r in rows]
    assert names == ["c1:eth0", "host:c1-veth", "host:c2-veth", "c2:eth0"] * 2
    written = [e for e in events if e.hook in (Hook.XMIT, Hook.RECV)]
    assert [r[1] for r in rows] == [e.data for e in written]
    assert [r[2] for r in rows] == [e.wire_len for e in written]
    assert [r[3] for r in rows] == [e.ts_ns + WALL for e in written]
    assert [r[4] for r in rows] == [0x9, 0x9, 0x1, 0x1] * 2  # CSUMNOTREADY while PARTIAL; USER always
    assert [r[5] for r in rows] == [2, 1, 2, 1] * 2  # epb_flags: outbound, inbound
    for (_, _, _, _, status, _, comments), ev in zip(rows, written, strict=True):
        assert comments[0] == tp_status_comment(status) and parse_tp_status_comment(comments[0]) == status
        fields = parse_skb_comment(comments[1])
        assert fields is not None and fields["skb"] == f"0x{ev.skb:x}"
        assert fields["hook"] == ("rx+recv" if ev.hook == Hook.RECV else "xmit")
        assert fields["ip_summed"] == ev.ip_summed.name
    section = reader.sections[0]
    assert section.userappl is not None and section.userappl.startswith("badsum ")
    assert section.comments[0].startswith("badsum:follow recorded by `badsum follow`")
    assert section.comments[0].endswith("filter: tcp port 9000") and f"+ {WALL} ns" in section.comments[0]
    assert section.comments[1:] == (
        "badsum:drops total=4 groups=2 (skb:kfree_skb events, not written as packets)",
        "badsum:drop device=c2:eth0 reason=TCP_CSUM location=tcp_v4_rcv count=2",
        "badsum:drop device=host:c1-veth reason=OTHERHOST location=ip_rcv_core count=2",
    )
    assert leftovers(tmp_path) == []


def test_rx_kept_when_not_followed_by_its_recv(tmp_path: Path) -> None:
    data = frame(partial=False)
    events = [
        event(Hook.RX, NS_C1, "eth0", 10, 0xA, data),  # then dropped before netif_receive_skb
        event(Hook.DROP, NS_C1, "", 20, 0xA, data, reason=2, reason_name="NOT_SPECIFIED"),
        event(Hook.RX, NS_C2, "eth0", 30, 0xB, data),  # its RECV is at another device
        event(Hook.RECV, NS_C2, "vxlan0", 40, 0xB, data, ifindex=9),
        event(Hook.RX, NS_HOST, "lo", 60, 0xC, data, ifindex=1),  # RECV of another skb between: still one sighting
        event(Hook.RECV, NS_HOST, "lo", 70, 0xD, data, ifindex=1),
        event(Hook.RECV, NS_HOST, "lo", 80, 0xC, data, ifindex=1),
    ]
    summary = write_events(tmp_path / "f.pcapng", events, NAMES, wall_offset_ns=0)
    assert (summary.packets, summary.merged_rx, summary.drops) == (5, 1, 1)
    # skb->dev is gone at this drop: the device the skb was last seen at is named
    assert summary.drop_totals == (DropTotal("c1:eth0", "NOT_SPECIFIED", "-", 1),)
    reader, rows = packets_of(tmp_path / "f.pcapng")
    seen = [(reader.interfaces[r[0]].name, parse_skb_comment(r[6][1])["hook"]) for r in rows]  # type: ignore[index]
    assert seen == [("c1:eth0", "rx"), ("c2:eth0", "rx"), ("c2:vxlan0", "recv"), ("host:lo", "recv"),
                    ("host:lo", "rx+recv")]  # fmt: skip


def test_link_types_unnamed_namespace_time_order_and_snaplen(tmp_path: Path) -> None:
    l2, l3 = frame(partial=False), frame(partial=False, l2=False)
    events = [
        event(Hook.XMIT, NS_C1, "eth0", 300, 3, l2),
        event(Hook.XMIT, NS_C1, "vxlan0", 100, 1, l3, l2=False, dev_type=1),
        event(Hook.RECV, NS_C1, "vxlan0", 200, 2, l2),  # the same device with its MAC header this time
        event(Hook.RECV, 4026539999, "tun0", 400, 4, l3, l2=False, dev_type=0xFFFE, wire_len=len(l3) + 1000),
    ]
    path = tmp_path / "f.pcapng"
    summary = write_events(path, events, NAMES, wall_offset_ns=5, snaplen=64)
    assert (summary.packets, summary.interfaces, summary.drops, summary.drop_totals) == (4, 4, 0, ())
    reader, rows = packets_of(path)
    assert [(i.name, i.linktype, i.snaplen) for i in reader.interfaces] == [
        ("c1:vxlan0/raw", 101, 64), ("c1:vxlan0", 1, 64), ("c1:eth0", 1, 64), ("netns:4026539999:tun0", 101, 64),
    ]  # fmt: skip
    assert [r[3] for r in rows] == [105, 205, 305, 405]  # time order, wall offset added
    assert [r[1] for r in rows] == [l3[:64], l2[:64], l2[:64], l3[:64]]
    assert [r[2] for r in rows] == [len(l3), len(l2), len(l2), len(l3) + 1000]
    assert reader.sections[0].comments == ("badsum:follow recorded by `badsum follow` (eBPF); "
                                           "time = CLOCK_MONOTONIC + 5 ns; filter: none (every packet)",)  # fmt: skip


def test_loss_is_stated_in_the_section(tmp_path: Path) -> None:
    path = tmp_path / "f.pcapng"
    write_events(path, [], NAMES, wall_offset_ns=0, loss=Loss(ring_full=3, rate_limited=0, truncated=7))
    reader, rows = packets_of(path)
    assert rows == [] and reader.interfaces == []
    assert reader.sections[0].comments[-1] == "badsum:lost ring_full=3 rate_limited=0 truncated=7"


# -- failures leave nothing behind --------------------------------------------------------------------


def test_a_directory_as_target_fails_cleanly(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeTarget, match="a directory"):
        write_events(target, kb005_events(1), NAMES, wall_offset_ns=0)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and target.is_dir()


def test_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_events(tmp_path / "nowhere" / "f.pcapng", kb005_events(1), NAMES, wall_offset_ns=0)
    assert list(tmp_path.iterdir()) == []


def test_an_error_while_writing_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.pcapng"
    path.write_bytes(b"old capture")
    bad = dataclasses.replace(kb005_events(1)[0], data=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        write_events(path, [kb005_events(1)[0], bad], NAMES, wall_offset_ns=0)
    assert path.read_bytes() == b"old capture" and leftovers(tmp_path) == []


# -- tshark, the independent oracle --------------------------------------------------------------------


def tshark(path: Path, *fields: str) -> list[list[str]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not on PATH")
    args = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
            "-E", "aggregator=;"] + [a for f in fields for a in ("-e", f)]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


def test_tshark_reads_devices_comments_lengths_and_direction(tmp_path: Path) -> None:
    path = tmp_path / "follow.pcapng"
    events = kb005_events(packets=2)
    write_events(path, events, NAMES, wall_offset_ns=WALL, filter_text="tcp")
    lines = tshark(path, "frame.interface_name", "frame.comment", "frame.len", "frame.cap_len",
                   "frame.packet_flags_direction", "frame.time_epoch", "tcp.checksum")  # fmt: skip
    written = [e for e in events if e.hook in (Hook.XMIT, Hook.RECV)]
    assert [x[0] for x in lines] == ["c1:eth0", "host:c1-veth", "host:c2-veth", "c2:eth0"] * 2
    comments = [x[1].split(";") for x in lines]
    pending, nothing = "badsum:tp_status=0x00000009 TP_STATUS_USER|TP_STATUS_CSUMNOTREADY", "badsum:tp_status=0x00000001 TP_STATUS_USER"
    assert [c[0] for c in comments] == [pending, pending, nothing, nothing] * 2
    assert [c[1].split()[:3] for c in comments[:4]] == [
        ["badsum:skb", "hook=xmit", "ip_summed=PARTIAL"], ["badsum:skb", "hook=rx+recv", "ip_summed=PARTIAL"],
        ["badsum:skb", "hook=xmit", "ip_summed=NONE"], ["badsum:skb", "hook=rx+recv", "ip_summed=NONE"],
    ]  # fmt: skip
    assert [int(x[2]) for x in lines] == [e.wire_len for e in written]
    assert [int(x[3]) for x in lines] == [len(e.data) for e in written]
    assert [int(x[4], 0) for x in lines] == [2, 1, 2, 1] * 2  # pcapng epb_flags: 2 outbound, 1 inbound
    assert lines[0][5] == f"{(events[0].ts_ns + WALL) // 10**9}.{(events[0].ts_ns + WALL) % 10**9:09d}"
    sums = {int(x[6], 16) for x in lines}  # the same pseudo-header-only sum at every hop, as in KB-005
    assert sums == {pseudo4(A, B, 6, 20 + len(PAYLOAD))}


def test_capinfos_counts_interfaces_and_shows_the_section_comments(tmp_path: Path) -> None:
    if shutil.which("capinfos") is None:
        pytest.skip("capinfos not on PATH")
    path = tmp_path / "follow.pcapng"
    write_events(path, kb005_events(packets=3), NAMES, wall_offset_ns=WALL, filter_text="host 10.0.0.2")
    out = subprocess.run(["capinfos", "-c", "-k", "-I", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Number of packets:   12" in out.stdout or "Number of packets = 12" in out.stdout, out.stdout
    assert "Number of interfaces in file: 4" in out.stdout, out.stdout
    assert "filter: host 10.0.0.2" in out.stdout and "badsum:drop device=c2:eth0 reason=TCP_CSUM" in out.stdout


# -- badsum trace on the written file -------------------------------------------------------------------


def test_trace_names_the_first_bad_hop_from_the_kernel_state(tmp_path: Path) -> None:
    path = tmp_path / "follow.pcapng"
    write_events(path, kb005_events(packets=3), NAMES, wall_offset_ns=WALL)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    r = subprocess.run([sys.executable, "-m", "badsum", "trace", "--order", "time", "--json", str(path)],
                       capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert r.returncode == 1, r.stderr  # findings
    data = json.loads(r.stdout)["data"]
    assert data["path"] == ["c1:eth0", "host:c1-veth", "host:c2-veth", "c2:eth0"]
    (flow,) = [f for f in data["flows"] if f["direction"] == "forward"]
    assert flow["packets"] == 3
    fb = flow["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"], fb["packets"]) == ("host:c1-veth", "host:c2-veth", "partial", 3)
    assert all(h["seen"] == 3 and h["missing"] == 0 for h in flow["hops"])
    # one observation per packet per device: RX+RECV is one sighting, not two
    assert [h["kernel"] for h in flow["hops"]] == [{"CSUMNOTREADY": 3}] * 2 + [{"none": 3}] * 2


def test_trace_finds_no_fault_when_the_sum_is_completed(tmp_path: Path) -> None:
    """The lab's fix: ovs-vswitchd's copy leaves with a complete checksum; PARTIAL before that is pending."""
    path = tmp_path / "follow.pcapng"
    write_events(path, kb005_events(packets=2, fixed=True), NAMES, wall_offset_ns=WALL)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    r = subprocess.run([sys.executable, "-m", "badsum", "trace", "--order", "time", "--json", str(path)],
                       capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    flows = json.loads(r.stdout)["data"]["flows"]
    (flow,) = flows
    assert flow["first_bad_hop"] is None and flow["unconfirmed_partial"] == [] and flow["packets"] == 2
