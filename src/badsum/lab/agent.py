"""Traffic agent, run inside a lab namespace: `python -m badsum.lab.agent COMMAND ...`.

Every loop is bounded in count and time; each command prints `READY` (servers) and then one JSON
line with what happened. Payloads are deterministic so the receiver's hash proves integrity.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import socket
import struct
import sys
import time

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
MAX_BYTES = 64 * 1024 * 1024
MAX_RAW = 100  # udp-raw: datagrams per run


def payload(n: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 128  # 4 KiB pattern
    return (block * (n // len(block) + 1))[:n]


def family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def out(doc: dict) -> None:
    print(json.dumps(doc), flush=True)


def tcp_server(a: argparse.Namespace) -> None:
    s = socket.socket(family(a.bind), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind, a.port))
    s.listen(4)
    s.settimeout(a.timeout)
    print("READY", flush=True)
    h, n, err = hashlib.sha256(), 0, None
    deadline = time.monotonic() + a.timeout
    try:
        c, peer = s.accept()
        c.settimeout(max(0.1, deadline - time.monotonic()))
        while n < MAX_BYTES:
            data = c.recv(65536)
            if not data:
                break
            h.update(data)
            n += len(data)
        c.close()
    except OSError as e:
        err = f"{type(e).__name__}: {e}"
    out({"bytes": n, "sha256": h.hexdigest(), "error": err})


def tcp_client(a: argparse.Namespace) -> None:
    data = payload(a.bytes, a.seed)
    s = socket.socket(family(a.connect), socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    t0 = time.monotonic()
    doc = {"connected": False, "connect_s": None, "sent": 0, "sha256": hashlib.sha256(data).hexdigest(), "error": None}
    try:
        s.connect((a.connect, a.port))
        doc["connected"], doc["connect_s"] = True, round(time.monotonic() - t0, 4)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(a.timeout)
        s.recv(1)  # wait for the server to close: the data was delivered (or the timeout says not)
        doc["sent"] = len(data)
    except OSError as e:
        doc["error"] = f"{type(e).__name__}: {e}"
    doc["elapsed_s"] = round(time.monotonic() - t0, 4)
    out(doc)


def udp_echo(a: argparse.Namespace) -> None:
    s = socket.socket(family(a.bind), socket.SOCK_DGRAM)
    s.bind((a.bind, a.port))
    s.settimeout(a.timeout)
    print("READY", flush=True)
    got, h = 0, hashlib.sha256()
    marker = a.stop_on.encode() if a.stop_on else None
    marker_seen = False
    deadline = time.monotonic() + a.timeout
    while got < a.count and time.monotonic() < deadline:
        try:
            data, peer = s.recvfrom(65535)
        except OSError:
            break
        got += 1
        h.update(data)
        s.sendto(data, peer)
        if marker is not None and data.startswith(marker):
            marker_seen = True  # the sender's last datagram: everything before it has been judged
            break
    doc = {"received": got, "sha256": h.hexdigest()}
    if marker is not None:
        doc.update(marker_seen=marker_seen, others=got - marker_seen)
    out(doc)


def udp_send(a: argparse.Namespace) -> None:
    s = socket.socket(family(a.connect), socket.SOCK_DGRAM)
    if a.df and family(a.connect) == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.settimeout(a.wait)
    s.connect((a.connect, a.port))
    data = payload(a.size, a.seed)
    sent = replies = 0
    errors: list[str] = []
    for _ in range(a.count):
        try:
            s.send(data)
            sent += 1
        except OSError as e:
            errors.append(errno.errorcode.get(e.errno or 0, str(e)))
            continue
        try:
            if s.recv(65535) == data:
                replies += 1
        except OSError as e:
            errors.append(errno.errorcode.get(e.errno or 0, type(e).__name__))
    out({"sent": sent, "replies": replies, "size": a.size, "errors": errors})


def udp_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    """RFC 768 checksum over the IPv4 pseudo-header and `udp` (its checksum field zero)."""
    data = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, len(udp)) + udp
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF) or 0xFFFF  # a computed 0 is sent as 0xffff (0 means "no checksum")


def ipv4_udp(src: str, dst: str, sport: int, dport: int, data: bytes, csum: int | None, ident: int) -> tuple[bytes, int]:
    """An IPv4/UDP packet with `csum` stored (None: the correct one); returns it and the correct sum.
    The kernel fills in the IPv4 total length and header checksum (raw(7), IP_HDRINCL)."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    right = udp_checksum(s, d, udp)
    udp = udp[:6] + struct.pack("!H", right if csum is None else csum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0, 64, socket.IPPROTO_UDP, 0, s, d)
    return ip + udp, right


def wrong_checksum(right: int) -> int:
    """A stored value that does not verify, and is not 0 (RFC 768: 0 means "no checksum")."""
    return (right + 1) & 0xFFFF or 1


def udp_raw(a: argparse.Namespace) -> None:
    """Datagrams built here with a deliberately wrong UDP checksum, sent through a raw socket so
    that no offload and no stack touches the sum; then (optionally) one valid marker datagram."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    data = b"badsum-corrupt:" + payload(max(0, a.size - 15), a.seed)
    sent, stored, right = 0, None, None
    for i in range(min(a.count, MAX_RAW)):
        _, right = ipv4_udp(a.src, a.dst, a.sport, a.dport, data, None, 0)
        stored = wrong_checksum(right) if a.csum is None else int(a.csum, 16)
        pkt, _ = ipv4_udp(a.src, a.dst, a.sport, a.dport, data, stored, (0x4200 + i) & 0xFFFF)
        s.sendto(pkt, (a.dst, 0))
        sent += 1
        time.sleep(a.interval)
    doc = {"sent": sent, "stored": f"0x{stored:04x}" if stored is not None else None,
           "correct": f"0x{right:04x}" if right is not None else None, "marker_sent": False}  # fmt: skip
    if a.marker:
        pkt, _ = ipv4_udp(a.src, a.dst, a.sport, a.dport, a.marker.encode(), None, 0x4100)
        s.sendto(pkt, (a.dst, 0))
        doc["marker_sent"] = True
    out(doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="badsum.lab.agent")
    sub = p.add_subparsers(dest="cmd", required=True)
    x = sub.add_parser("tcp-server")
    x.add_argument("--bind", required=True)
    x.add_argument("--port", type=int, required=True)
    x.add_argument("--timeout", type=float, default=10)
    x.set_defaults(fn=tcp_server)
    x = sub.add_parser("tcp-client")
    x.add_argument("--connect", required=True)
    x.add_argument("--port", type=int, required=True)
    x.add_argument("--bytes", type=int, default=200_000)
    x.add_argument("--seed", type=int, default=1)
    x.add_argument("--timeout", type=float, default=10)
    x.set_defaults(fn=tcp_client)
    x = sub.add_parser("udp-echo")
    x.add_argument("--bind", required=True)
    x.add_argument("--port", type=int, required=True)
    x.add_argument("--count", type=int, default=10)
    x.add_argument("--timeout", type=float, default=10)
    x.add_argument("--stop-on", metavar="TEXT", help="stop at the first datagram starting with TEXT (a marker)")
    x.set_defaults(fn=udp_echo)
    x = sub.add_parser("udp-send")
    x.add_argument("--connect", required=True)
    x.add_argument("--port", type=int, required=True)
    x.add_argument("--size", type=int, default=100)
    x.add_argument("--count", type=int, default=3)
    x.add_argument("--seed", type=int, default=1)
    x.add_argument("--wait", type=float, default=1.0)
    x.add_argument("--df", action="store_true")
    x.set_defaults(fn=udp_send)
    x = sub.add_parser("udp-raw", help="IPv4/UDP with a wrong checksum, via a raw socket")
    x.add_argument("--src", required=True)
    x.add_argument("--dst", required=True)
    x.add_argument("--sport", type=int, default=40000)
    x.add_argument("--dport", type=int, required=True)
    x.add_argument("--count", type=int, default=3)
    x.add_argument("--size", type=int, default=64)
    x.add_argument("--seed", type=int, default=1)
    x.add_argument("--csum", metavar="HEX", help="the checksum to store (default: the correct one + 1)")
    x.add_argument("--marker", metavar="TEXT", help="then send one valid datagram with this payload")
    x.add_argument("--interval", type=float, default=0.002)
    x.set_defaults(fn=udp_raw)
    a = p.parse_args(argv)
    a.fn(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
