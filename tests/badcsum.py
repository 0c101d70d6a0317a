"""Packets with bad TCP and UDP checksums delivered into namespaces of a test's own (root tests of
drop attribution: `watch`, `exporter`).

A sender namespace has one veth to each receiver. Frames are built by scapy (an independent packet
builder), with a correct IPv4 header checksum and a wrong transport checksum, and written to the
veth with an AF_PACKET socket from the sender's side. Each is small (under the kernel's 76-byte
CHECKSUM_BREAK), so the receiving stack verifies it at once and drops it with TCP_CSUM or UDP_CSUM,
counting TcpInCsumErrors or UdpInCsumErrors in the receiver's namespace: `nstat` read there is the
oracle. Addresses are documentation ones; teardown is the Topology's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from netns import Topology

SENDER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
    "s.bind((sys.argv[1], 0))\n"
    "for line in sys.stdin:\n"
    "    s.send(bytes.fromhex(line.strip()))\n"
)
CSUM = ("TcpInCsumErrors", "UdpInCsumErrors")


@dataclass(frozen=True)
class Receiver:
    ns: str
    dev: str
    """The receiver's veth end (where the kernel drops the frames)."""
    peer: str
    """The sender's end."""
    src: str
    dst: str
    mac: str
    peer_mac: str
    inode: int
    """The namespace's inode, read with stat(2) on its /run/netns file when it was made."""


def wrong(good: int) -> int:
    """A checksum that is not `good` nor equivalent to it (0 and 0xffff are one value) nor 0 (no UDP
    checksum at all)."""
    bad = good ^ 0x00FF
    return bad if bad not in (0, 0xFFFF) else good ^ 0x0F00


def tcp_syns(r: Receiver, n: int, first_port: int = 40000) -> list[bytes]:
    from scapy.all import IP, TCP, Ether, raw

    out = []
    for i in range(n):
        p = Ether(src=r.peer_mac, dst=r.mac) / IP(src=r.src, dst=r.dst) / TCP(sport=first_port + i, dport=80, flags="S", seq=1000 + i)
        good = IP(raw(p[IP]))[TCP].chksum
        p[TCP].chksum = wrong(good)
        out.append(raw(p))
    return out


def udp_datagrams(r: Receiver, n: int, first_port: int = 41000) -> list[bytes]:
    from scapy.all import IP, UDP, Ether, Raw, raw

    out = []
    for i in range(n):
        p = Ether(src=r.peer_mac, dst=r.mac) / IP(src=r.src, dst=r.dst) / UDP(sport=first_port + i, dport=9) / Raw(b"badsum")
        good = IP(raw(p[IP]))[UDP].chksum
        p[UDP].chksum = wrong(good)
        out.append(raw(p))
    return out


class BadChecksums:
    """`sender` -> `tcp` (192.0.2.0/24) and `sender` -> `udp` (198.51.100.0/24), all up."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.sender = topo.netns("snd")
        self.tcp = self._receiver("tcp", "t0", "s-t", "192.0.2.1", "192.0.2.2")
        self.udp = self._receiver("udp", "u0", "s-u", "198.51.100.1", "198.51.100.2")

    def _receiver(self, suffix: str, dev: str, peer: str, src: str, dst: str) -> Receiver:
        topo = self.topo
        ns = topo.netns(suffix)
        topo.veth(self.sender, peer, ns, dev)
        topo.addr(self.sender, peer, f"{src}/24")
        topo.addr(ns, dev, f"{dst}/24")
        topo.up(self.sender, peer)
        topo.up(ns, dev)
        topo.wait_oper_up(ns, dev)
        topo.wait_addrs_ready(ns, dev)
        mac = topo.ip_json(ns, "link", "show", "dev", dev)[0]["address"]
        peer_mac = topo.ip_json(self.sender, "link", "show", "dev", peer)[0]["address"]
        return Receiver(ns, dev, peer, src, dst, mac, peer_mac, os.stat(f"/run/netns/{ns}").st_ino)

    def send(self, r: Receiver, frames: list[bytes]) -> None:
        self.topo.exec(self.sender, [sys.executable, "-c", SENDER, r.peer], input="\n".join(f.hex() for f in frames) + "\n")

    def nstat(self, r: Receiver) -> dict[str, int]:
        """The receiver's checksum error counters, read with nstat inside it (absolute values)."""
        out = subprocess.run(["ip", "netns", "exec", r.ns, "nstat", "-a", "-s", "-z", "--json"], capture_output=True,
                             text=True, timeout=10, check=True).stdout  # fmt: skip
        flat = {k: int(v) for group in json.loads(out).values() for k, v in group.items()}
        return {k: flat.get(k, 0) for k in CSUM}


def bpf_prog_ids(pid: int) -> set[int]:
    """Program ids behind the process's file descriptors, from the kernel's own /proc fdinfo."""
    ids = set()
    try:
        names = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return ids
    for fd in names:
        try:
            text = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


#: bpf(2) by number (glibc has no wrapper); BPF_PROG_GET_NEXT_ID is command 11 (include/uapi/linux/bpf.h).
SYS_BPF = {"x86_64": 321, "aarch64": 280}
BPF_PROG_GET_NEXT_ID = 11


def loaded_prog_ids() -> set[int]:
    """Every eBPF program the kernel holds now, asked of the kernel itself (BPF_PROG_GET_NEXT_ID),
    not through badsum's loader."""
    import ctypes
    import platform

    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise RuntimeError(f"bpf(2) syscall number unknown on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 3)()  # start_id, next_id, open_flags
    ids: set[int] = set()
    for _ in range(1 << 20):
        attr[1] = 0
        if libc.syscall(nr, BPF_PROG_GET_NEXT_ID, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
            break  # ENOENT: no more
        ids.add(attr[1])
        attr[0] = attr[1]
    return ids


def still_loaded(ids: set[int], timeout: float = 5.0) -> set[int]:
    """Which of `ids` the kernel still holds after up to `timeout` s: it frees a closed program
    asynchronously (after an RCU grace period), so a program closed a moment ago may linger."""
    import time

    deadline = time.monotonic() + timeout
    while (left := ids & loaded_prog_ids()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
