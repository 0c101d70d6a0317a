#!/usr/bin/env python3
"""Write tests/data/veth-tx-offload.pcap: what a real kernel puts on a veth with TX checksum offload on.

Needs root, ip, ethtool and tcpdump. Two throwaway namespaces (bs-<random>-a/-b) joined by a veth
pair; on the sender's end, with tx-checksumming on (the veth default), capture one short TCP
exchange and one UDP datagram (and its reply) over IPv4. Every TCP/UDP checksum in the file holds
the pseudo-header sum alone: `badsum pcap` calls them partial, `tcpdump -vv` calls them incorrect.

    sudo python3 tests/data/make_veth_capture.py [OUT.pcap]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from netns import Topology, wait_for

OUT = HERE / "veth-tx-offload.pcap"
A, B, PORT = "192.0.2.1", "192.0.2.2", 7777
REPLY = b"badsum: reply over udp"

# In namespace B: answer one TCP connection and one UDP datagram, then exit (10 s at most).
SERVER = r"""
import socket, sys
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((sys.argv[1], int(sys.argv[2]))); t.listen(1); t.settimeout(10)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((sys.argv[1], int(sys.argv[2]))); u.settimeout(10)
print("ready", file=sys.stderr, flush=True)
c, _ = t.accept(); c.settimeout(5)
c.recv(4096); c.sendall(b"badsum: reply over tcp\n"); c.close()
d, peer = u.recvfrom(4096); u.sendto(sys.argv[3].encode(), peer)
"""

CLIENT = r"""
import socket, sys
addr = (sys.argv[1], int(sys.argv[2]))
t = socket.create_connection(addr, timeout=5); t.sendall(b"badsum: hello over tcp\n")
t.shutdown(socket.SHUT_WR); t.recv(4096); t.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(b"badsum: hello over udp", addr); u.recv(4096)
"""


def main(out: Path) -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 3
    tmp = out.with_suffix(".tmp")
    with Topology() as topo:
        a, b = topo.netns("a"), topo.netns("b")
        topo.veth(a, "veth0", b, "veth1")
        topo.addr(a, "veth0", f"{A}/24")
        topo.addr(b, "veth1", f"{B}/24")
        topo.up(a, "veth0")
        topo.up(b, "veth1")
        topo.wait_oper_up(a, "veth0")
        topo.wait_oper_up(b, "veth1")
        features = topo.features(a, "veth0")
        if not features.get("tx-checksum-ip-generic"):
            print(f"veth0 has tx-checksum-ip-generic off: {features}", file=sys.stderr)
            return 1
        # Only our exchange: no ARP, IPv6 ND or MLD chatter from the fresh link.
        dump = topo.tcpdump(a, "veth0", tmp, bpf=["tcp", "or", "udp"])
        server = topo.spawn(b, [sys.executable, "-c", SERVER, B, str(PORT), REPLY.decode()])
        server.wait_stderr("ready", timeout=10)
        topo.exec(a, [sys.executable, "-c", CLIENT, B, str(PORT)], timeout=20)
        if server.wait(timeout=15) != 0:
            print(server.stderr, file=sys.stderr)
            return 1
        wait_for(lambda: REPLY in tmp.read_bytes(), timeout=5, what="the UDP reply in the capture")
        if dump.stop() != 0 or "\n0 packets dropped by kernel" not in dump.stderr:
            print(dump.stderr, file=sys.stderr)
            return 1
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
