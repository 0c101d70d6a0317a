"""A small live capture for labs that keeps the kernel's per-packet checksum status.

`python -m badsum.lab.sniff --dev DEV --out F.pcapng` reads one interface with an AF_PACKET
socket and PACKET_AUXDATA, and writes pcapng with the direction in `epb_flags` and `tp_status`
in the badsum status comment (docs/pcapng-encoding.md). tcpdump cannot record that status, and
without it a capture cannot tell "offload still pending" (the skb is CHECKSUM_PARTIAL:
TP_STATUS_CSUMNOTREADY) from "left unfinished" (the same bytes on a packet rebuilt by a
userspace forwarder, KB-005). Bounded by a packet count and a deadline; SIGINT/SIGTERM stop
it cleanly. Prints `READY` once bound, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
ARPHRD_TO_LINKTYPE = {1: 1, 772: 1, 65534: 101}  # ether, loopback (ether framing), none (raw IP)
#: struct tpacket_auxdata: tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid
_AUX = struct.Struct("=IIIHHHH")
MAX_FRAME = 256 * 1024  # GSO super-frames reach 64 KiB (more with BIG TCP)
MAX_PACKETS = 100_000


def sniff(dev: str, out: str, count: int, timeout: float) -> dict:
    from badsum.capture.pcapng_writer import (
        DIRECTION_INBOUND,
        DIRECTION_OUTBOUND,
        PcapngWriter,
    )

    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    # Protocol 0 until bound: an ETH_P_ALL socket would see every interface before bind().
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((dev, ETH_P_ALL))
    s.setblocking(False)
    hatype = s.getsockname()[3]
    packets = truncated = 0
    with PcapngWriter(out) as w:
        iface = w.add_interface(ARPHRD_TO_LINKTYPE.get(hatype, 1), name=dev)
        print("READY", flush=True)
        deadline = time.monotonic() + timeout
        while packets < count and time.monotonic() < deadline:
            last = stop  # once told to stop, one last pass takes what the socket already holds
            ready, _, _ = select.select([s], [], [], 0 if last else 0.05)
            while ready and packets < count:
                try:
                    data, anc, flags, addr = s.recvmsg(MAX_FRAME, socket.CMSG_SPACE(_AUX.size))
                except BlockingIOError:
                    break
                status, wire_len = 0xFFFFFFFF, len(data)
                for level, kind, raw in anc:
                    if level == SOL_PACKET and kind == PACKET_AUXDATA and len(raw) >= _AUX.size:
                        status, wire_len = _AUX.unpack_from(raw)[:2]
                truncated += bool(flags & socket.MSG_TRUNC)
                direction = DIRECTION_OUTBOUND if addr[2] == PACKET_OUTGOING else DIRECTION_INBOUND
                w.write_packet(iface, data, ts_ns=time.time_ns(), origlen=max(wire_len, len(data)),
                               direction=direction, tp_status=status)  # fmt: skip
                packets += 1
            if last:
                break
    s.close()
    return {"packets": packets, "truncated": truncated, "file": out, "dev": dev}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="badsum.lab.sniff")
    p.add_argument("--dev", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args(argv)
    print(json.dumps(sniff(a.dev, a.out, min(a.count, MAX_PACKETS), a.timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
