"""Live capture at one point, keeping the kernel's per-packet checksum status.

Run as its own process inside the point's namespace (`nsenter --net=PATH -- python -m
badsum.capture.live --dev DEV --out F.pcapng`), so that no process ever setns()es itself: it reads
one interface with an AF_PACKET socket and PACKET_AUXDATA, and writes pcapng with the direction in
`epb_flags` and `tp_status` in the badsum status comment (docs/pcapng-encoding.md). tcpdump cannot
record that status, and without it a capture cannot tell "offload still pending" (the skb is
CHECKSUM_PARTIAL: TP_STATUS_CSUMNOTREADY) from "left unfinished" (the same bytes on a packet
rebuilt by a userspace forwarder, KB-005).

Protocol on stdout: `READY` once bound (filter attached), then with `--progress` one
`{"progress": ...}` line per interval, and one JSON result line at the end; a failure before
READY is one `{"error": CODE, "message": ...}` line and exit 2 (unknown interface, bad filter) or
3. With `--wait-go` nothing is written before `go` arrives on stdin, and end of stdin (the parent
went away) stops the capture. Bounded by a deadline, a packet count and a byte count;
SIGINT/SIGTERM stop it and the file is committed atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time

from badsum.capture.pathorder import shb_comment

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS: the kernel's receive time, struct timespec
SO_RCVBUFFORCE = 33
PACKET_STATISTICS = 6  # struct tpacket_stats {tp_packets, tp_drops}; reading it resets it
RCVBUF = 64 << 20  # bursts from a veth arrive faster than Python drains them: queue, do not drop
ARPHRD_TO_LINKTYPE = {1: 1, 772: 1, 65534: 101}  # ether, loopback (ether framing), none (raw IP)
#: struct tpacket_auxdata: tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid
_AUX = struct.Struct("=IIIHHHH")
_TIMESPEC = struct.Struct("=qq")
MAX_FRAME = 256 * 1024  # GSO super-frames reach 64 KiB (more with BIG TCP)
DEFAULT_SNAPLEN = 262144


class Stop:
    """Set by SIGINT/SIGTERM: finish the pass in hand and commit."""

    def __init__(self) -> None:
        self.flag = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._set)

    def _set(self, signum: int, frame: object) -> None:
        self.flag = True


def open_socket(dev: str, filter_expr: str | None, snaplen: int) -> tuple[socket.socket, int]:
    """A bound AF_PACKET socket with PACKET_AUXDATA and the filter attached; and its pcap link type.
    Raises OSError (unknown interface: ENODEV) or bpf.FilterError."""
    from badsum.capture import bpf

    # Protocol 0 until bound and filtered: an ETH_P_ALL socket would see every interface at once.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)  # past rmem_max: needs CAP_NET_ADMIN
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        s.bind((dev, 0))
        linktype = ARPHRD_TO_LINKTYPE.get(s.getsockname()[3], 1)
        if filter_expr:
            bpf.attach(s, bpf.compile_filter(filter_expr, linktype=linktype, snaplen=snaplen))
        s.bind((dev, ETH_P_ALL))
    except BaseException:
        s.close()
        raise
    return s, linktype


def capture(s: socket.socket, linktype: int, *, out: str, label: str, snaplen: int, timeout: float | None,
            count: int | None, max_bytes: int | None, stop: Stop, progress: float | None = None,
            watch_stdin: bool = False, comments: list[str] | None = None) -> dict:  # fmt: skip
    """Read `s` into `out` until a limit, a signal or (watch_stdin) the end of stdin. `comments` go
    into the section header (the session's path order: capture/pathorder.py)."""
    comments = comments or []
    from badsum.capture.pcapng_writer import (
        DIRECTION_INBOUND,
        DIRECTION_OUTBOUND,
        PcapngWriter,
    )

    packets = nbytes = wire_bytes = truncated = 0
    reason = "signal"
    started = time.monotonic()
    deadline = started + timeout if timeout else None
    next_progress = started + progress if progress else None
    s.setblocking(False)
    watch = [s, sys.stdin] if watch_stdin else [s]
    with PcapngWriter(out, comments=comments) as w:
        iface = w.add_interface(linktype, snaplen=snaplen, name=label)
        while True:
            now = time.monotonic()
            if count and packets >= count:
                reason = "count"
                break
            if max_bytes and nbytes >= max_bytes:
                reason = "bytes"
                break
            if deadline and now >= deadline:
                reason = "duration"
                break
            last = stop.flag  # once told to stop, one last pass takes what the socket already holds
            if progress and next_progress and now >= next_progress:
                print(json.dumps({"progress": {"packets": packets, "bytes": nbytes}}), flush=True)
                next_progress = now + progress
            ready, _, _ = select.select(watch, [], [], 0 if last else 0.05)
            if watch_stdin and sys.stdin in ready and not os.read(sys.stdin.fileno(), 64):
                last, reason = True, "parent"  # our parent is gone: stop rather than run on unattended
                watch = [s]
            while s in ready and not (count and packets >= count) and not (max_bytes and nbytes >= max_bytes):
                try:
                    data, anc, flags, addr = s.recvmsg(MAX_FRAME, 128)
                except BlockingIOError:
                    break
                status, wire_len, ts_ns = 0xFFFFFFFF, len(data), None
                for level, kind, raw in anc:
                    if level == SOL_PACKET and kind == PACKET_AUXDATA and len(raw) >= _AUX.size:
                        status, wire_len = _AUX.unpack_from(raw)[:2]
                    elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
                        sec, nsec = _TIMESPEC.unpack_from(raw)
                        ts_ns = sec * 1_000_000_000 + nsec
                truncated += bool(flags & socket.MSG_TRUNC)
                if len(data) > snaplen:
                    data = data[:snaplen]
                direction = DIRECTION_OUTBOUND if addr[2] == PACKET_OUTGOING else DIRECTION_INBOUND
                w.write_packet(iface, data, ts_ns=ts_ns if ts_ns is not None else time.time_ns(),
                               origlen=max(wire_len, len(data)), direction=direction, tp_status=status)  # fmt: skip
                packets += 1
                nbytes += len(data)
                wire_bytes += max(wire_len, len(data))
            if last:
                break
    dropped = _drops(s)
    s.close()
    return {"label": label, "file": out, "packets": packets, "bytes": nbytes, "wire_bytes": wire_bytes,
            "truncated": truncated, "dropped": dropped, "stopped": reason, "seconds": round(time.monotonic() - started, 3)}  # fmt: skip


def _drops(s: socket.socket) -> int | None:
    """Packets the kernel dropped because the socket's queue was full (since the socket was opened)."""
    try:
        return struct.unpack("=II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]
    except OSError:
        return None


def _say(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="badsum.capture.live")
    p.add_argument("--dev", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--label", help="interface name in the pcapng (default: DEV)")
    p.add_argument("--filter", default=None)
    p.add_argument("--snaplen", type=int, default=DEFAULT_SNAPLEN)
    p.add_argument("--timeout", type=float, default=None, help="seconds")
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--bytes", type=int, default=None)
    p.add_argument("--progress", type=float, default=None, help="seconds between progress lines")
    p.add_argument("--wait-go", action="store_true")
    p.add_argument("--path-label", action="append", default=[],
                   help="the session's points in path order (repeated), recorded in the section header")
    a = p.parse_args(argv)
    from badsum.capture.bpf import FilterError

    stop = Stop()
    try:
        s, linktype = open_socket(a.dev, a.filter, a.snaplen)
    except FilterError as e:
        _say({"error": "filter", "message": str(e)})
        return 2
    except OSError as e:
        if e.errno == 19:  # ENODEV
            _say({"error": "no_such_interface", "message": f"no interface {a.dev!r} in this namespace"})
            return 2
        _say({"error": "socket", "message": f"cannot capture on {a.dev}: {e.strerror or e}"})
        return 3
    print("READY", flush=True)
    if a.wait_go:
        line = sys.stdin.readline()
        if line.strip() != "go" or stop.flag:
            s.close()
            return 0  # told not to start: no file
    result = capture(s, linktype, out=a.out, label=a.label or a.dev, snaplen=a.snaplen, timeout=a.timeout,
                     count=a.count, max_bytes=a.bytes, stop=stop, progress=a.progress, watch_stdin=a.wait_go,
                     comments=[shb_comment(a.path_label)] if a.path_label else [])  # fmt: skip
    result["dev"] = a.dev
    _say(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
