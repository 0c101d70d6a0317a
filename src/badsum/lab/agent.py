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
import sys
import time

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
MAX_BYTES = 64 * 1024 * 1024


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
    deadline = time.monotonic() + a.timeout
    while got < a.count and time.monotonic() < deadline:
        try:
            data, peer = s.recvfrom(65535)
        except OSError:
            break
        got += 1
        h.update(data)
        s.sendto(data, peer)
    out({"received": got, "sha256": h.hexdigest()})


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
    a = p.parse_args(argv)
    a.fn(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
