"""A corrupting "switch": `python -m badsum.lab.relay --tap-a A --tap-b B --log FILE ...`.

Copies Ethernet frames both ways between two TAP devices, like a cable. From A to B it flips one
payload byte of chosen TCP data segments and fixes no checksum, as a bad cable or switch does,
and logs every flip as one JSON line so that a trace can later find the very same byte in a capture:
`frame` (index among all frames read from A since start, 0-based), `offset` (absolute, in the
Ethernet frame), `old`/`new` (the byte), `seq` and `byte_seq` (TCP sequence of the segment and of
the byte), `ip_id`, the 4-tuple, the untouched stored checksums, and `ts` (wall clock).

Why TAP devices: a tap opened without TUNSETOFFLOAD has no checksum or segmentation offload, so
the kernel completes checksums and splits GSO super-frames in software before handing frames to
us: what we read is what a real wire carries. Frames we write enter the kernel with
CHECKSUM_NONE (no virtio-net header), like frames from a NIC that did not verify them.

Bounded: `--timeout` seconds and `--max-frames` frames; SIGINT/SIGTERM end it cleanly. It prints
`READY` once both taps exist, and one JSON summary line on exit. The taps vanish with it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import select
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import TextIO

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8)
IPPROTO_TCP = 6


# -- locating and flipping (pure: bytes in, bytes and a record out) --------------------------------


@dataclass(frozen=True, slots=True)
class TcpSegment:
    """Where a TCP segment's fields sit inside one Ethernet frame (offsets are absolute)."""

    l3: str
    """`ipv4` or `ipv6`."""
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ip_id: int | None
    """IPv4 identification (tells a retransmission from the original); None for IPv6."""
    ip_at: int
    tcp_at: int
    payload_at: int
    payload_len: int
    ip_checksum: int | None
    tcp_checksum: int


def tcp_segment(frame: bytes) -> TcpSegment | None:
    """The TCP segment in an Ethernet frame (one optional VLAN tag), or None: not TCP, a
    fragment, IPv6 with extension headers, or truncated. Never raises on untrusted bytes."""
    if len(frame) < 14:
        return None
    at, ethertype = 12, int.from_bytes(frame[12:14], "big")
    if ethertype in VLAN_TPIDS and len(frame) >= 18:
        at, ethertype = 16, int.from_bytes(frame[16:18], "big")
    ip_at = at + 2
    if ethertype == ETH_P_IP:
        if len(frame) < ip_at + 20 or frame[ip_at] >> 4 != 4:
            return None
        ihl = (frame[ip_at] & 0x0F) * 4
        total = int.from_bytes(frame[ip_at + 2 : ip_at + 4], "big")
        frag = int.from_bytes(frame[ip_at + 6 : ip_at + 8], "big")
        if ihl < 20 or frame[ip_at + 9] != IPPROTO_TCP or frag & 0x3FFF or total < ihl or len(frame) < ip_at + total:
            return None  # fragments (MF or an offset) carry no whole TCP header to trust
        src, dst = str(IPv4Address(frame[ip_at + 12 : ip_at + 16])), str(IPv4Address(frame[ip_at + 16 : ip_at + 20]))
        ip_id: int | None = int.from_bytes(frame[ip_at + 4 : ip_at + 6], "big")
        ip_csum: int | None = int.from_bytes(frame[ip_at + 10 : ip_at + 12], "big")
        tcp_at, ip_end = ip_at + ihl, ip_at + total
        l3 = "ipv4"
    elif ethertype == ETH_P_IPV6:
        if len(frame) < ip_at + 40 or frame[ip_at] >> 4 != 6 or frame[ip_at + 6] != IPPROTO_TCP:
            return None
        plen = int.from_bytes(frame[ip_at + 4 : ip_at + 6], "big")
        if len(frame) < ip_at + 40 + plen:
            return None
        src, dst = str(IPv6Address(frame[ip_at + 8 : ip_at + 24])), str(IPv6Address(frame[ip_at + 24 : ip_at + 40]))
        ip_id, ip_csum = None, None
        tcp_at, ip_end = ip_at + 40, ip_at + 40 + plen
        l3 = "ipv6"
    else:
        return None
    if ip_end < tcp_at + 20:
        return None
    doff = (frame[tcp_at + 12] >> 4) * 4
    if doff < 20 or tcp_at + doff > ip_end:
        return None
    return TcpSegment(
        l3=l3, src=src, dst=dst,
        sport=int.from_bytes(frame[tcp_at : tcp_at + 2], "big"),
        dport=int.from_bytes(frame[tcp_at + 2 : tcp_at + 4], "big"),
        seq=int.from_bytes(frame[tcp_at + 4 : tcp_at + 8], "big"),
        ip_id=ip_id, ip_at=ip_at, tcp_at=tcp_at,
        payload_at=tcp_at + doff, payload_len=ip_end - tcp_at - doff,
        ip_checksum=ip_csum, tcp_checksum=int.from_bytes(frame[tcp_at + 16 : tcp_at + 18], "big"),
    )  # fmt: skip


def flip_frame(frame: bytes, payload_offset: int, xor: int = 0x01) -> tuple[bytes, dict] | None:
    """XOR one TCP payload byte with `xor`, fixing no checksum; the new frame and a record of
    exactly what changed, or None when the frame holds no TCP payload byte at that offset."""
    if not 0 < xor <= 0xFF:
        raise ValueError("xor must be 1..255 (0 would change nothing)")
    seg = tcp_segment(frame)
    if seg is None or not 0 <= payload_offset < seg.payload_len:
        return None
    at = seg.payload_at + payload_offset
    out = bytearray(frame)
    out[at] ^= xor
    entry = {
        "frame_len": len(frame),
        "offset": at,
        "payload_offset": payload_offset,
        "old": frame[at],
        "new": out[at],
        "l3": seg.l3, "src": seg.src, "dst": seg.dst, "sport": seg.sport, "dport": seg.dport,
        "seq": seg.seq,
        "byte_seq": (seg.seq + payload_offset) & 0xFFFFFFFF,
        "payload_len": seg.payload_len,
        "ip_id": seg.ip_id,
        "ip_checksum": seg.ip_checksum,
        "tcp_checksum": seg.tcp_checksum,
    }  # fmt: skip
    return bytes(out), entry


@dataclass(slots=True)
class FlipRule:
    """Which A->B segments get a flipped byte."""

    every: int = 10
    """Every `every`-th TCP segment carrying payload, counted per connection (retransmissions
    included: a wire does not know them)."""
    offset: int = 100
    """Payload offset of the flipped byte; shorter segments pass untouched."""
    xor: int = 0x01
    """One flipped bit by default, as a bad cable does."""
    max_flips: int = 8
    """Per connection, so the transfer still completes."""
    ports: frozenset[int] = frozenset()
    """TCP destination ports eligible; empty means every port."""


@dataclass(slots=True)
class Corrupter:
    """Applies a FlipRule to the frames read on side A, one at a time."""

    rule: FlipRule
    segments: dict[tuple, int] = field(default_factory=dict)
    flips: dict[tuple, int] = field(default_factory=dict)
    total: int = 0

    def process(self, frame: bytes, index: int) -> tuple[bytes, dict | None]:
        seg = tcp_segment(frame)
        if seg is None or seg.payload_len == 0 or (self.rule.ports and seg.dport not in self.rule.ports):
            return frame, None
        flow = (seg.src, seg.dst, seg.sport, seg.dport)
        n = self.segments[flow] = self.segments.get(flow, 0) + 1
        if n % self.rule.every or self.flips.get(flow, 0) >= self.rule.max_flips:
            return frame, None
        flipped = flip_frame(frame, self.rule.offset, self.rule.xor)
        if flipped is None:
            return frame, None
        self.flips[flow] = self.flips.get(flow, 0) + 1
        self.total += 1
        new, entry = flipped
        return new, {"n": self.total, "side": "a", "direction": "a->b", "frame": index,
                     "segment": n, "flow_flip": self.flips[flow], "xor": self.rule.xor, **entry}  # fmt: skip


# -- the relay process (the edge: taps, poll, signals, the log file) -------------------------------

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
BURST = 64  # frames read from one tap before looking at the other (fairness)


def open_tap(name: str) -> int:
    """Create (and own) tap `name` in this process's network namespace; non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd


NETNS_DIR = "/run/netns"
LAB_NETNS = re.compile(r"^bs[0-9a-f]{6}-")


def lab_netns() -> str | None:
    """The name of the lab namespace this process runs in, or None. Fails closed: the relay
    creates interfaces, and outside a lab namespace (`ip netns exec bsXXXXXX-...`) it must not."""
    try:
        mine = os.stat("/proc/self/ns/net").st_ino
        names = os.listdir(NETNS_DIR)
    except OSError:
        return None
    for name in names:
        try:
            if LAB_NETNS.match(name) and os.stat(os.path.join(NETNS_DIR, name)).st_ino == mine:
                return name
        except OSError:
            continue
    return None


class _Stop:
    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.signal = signum


def relay(a_fd: int, b_fd: int, corrupter: Corrupter, log: TextIO, *, timeout: float, max_frames: int, stop: _Stop) -> dict:
    """Copy frames until a signal, the deadline or the frame bound; the summary."""
    frames = {"a": 0, "b": 0}
    write_errors: dict[str, int] = {}
    other = {a_fd: (b_fd, "a"), b_fd: (a_fd, "b")}
    poller = select.poll()
    poller.register(a_fd, select.POLLIN)
    poller.register(b_fd, select.POLLIN)
    t0 = time.monotonic()
    deadline, why = t0 + timeout, "timeout"
    while True:
        if stop.signal is not None:
            why = signal.Signals(stop.signal).name
            break
        if frames["a"] + frames["b"] >= max_frames:
            why = "max-frames"
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(min(left, 0.2) * 1000):
            out_fd, side = other[fd]
            for _ in range(BURST):
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if side == "a":
                    frame, entry = corrupter.process(frame, frames["a"])
                    if entry is not None:
                        entry["ts"] = round(time.time(), 6)  # wall clock, as in the captures
                        log.write(json.dumps(entry) + "\n")
                        log.flush()
                frames[side] += 1
                try:
                    os.write(out_fd, frame)
                except OSError as e:  # the far tap down: the frame is lost, as on a cut wire
                    write_errors[e.strerror or str(e.errno)] = write_errors.get(e.strerror or str(e.errno), 0) + 1
    return {"frames": frames, "flips": corrupter.total, "stopped_by": why, "write_errors": write_errors,
            "elapsed_s": round(time.monotonic() - t0, 3)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="badsum.lab.relay", description=__doc__.split("\n\n")[0])
    p.add_argument("--tap-a", required=True, help="the tap frames come from (corrupted towards B)")
    p.add_argument("--tap-b", required=True)
    p.add_argument("--log", required=True, help="JSON-lines file, one line per flipped byte")
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--offset", type=int, default=100)
    p.add_argument("--xor", type=lambda s: int(s, 0), default=0x01)
    p.add_argument("--max-flips", type=int, default=8, help="per TCP connection")
    p.add_argument("--ports", default="", help="comma-separated TCP destination ports (default: all)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--max-frames", type=int, default=1_000_000)
    a = p.parse_args(argv)
    if a.every < 1 or a.max_flips < 0 or a.offset < 0 or not 0 < a.xor <= 0xFF:
        p.error("--every >= 1, --max-flips >= 0, --offset >= 0, --xor 1..255")
    if lab_netns() is None:
        print("refusing to run outside a lab namespace (ip netns exec bsXXXXXX-NAME ...): it creates taps",
              file=sys.stderr)  # fmt: skip
        return 2
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    ports = frozenset(int(x) for x in a.ports.split(",") if x.strip())
    corrupter = Corrupter(FlipRule(a.every, a.offset, a.xor, a.max_flips, ports))
    a_fd = open_tap(a.tap_a)
    try:
        b_fd = open_tap(a.tap_b)
        try:
            with open(a.log, "a") as log:
                print("READY", flush=True)
                summary = relay(a_fd, b_fd, corrupter, log, timeout=a.timeout, max_frames=a.max_frames, stop=stop)
        finally:
            os.close(b_fd)
    finally:
        os.close(a_fd)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
