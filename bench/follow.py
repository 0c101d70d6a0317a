"""What following packets with eBPF costs: start-up, events/s, CPU, lost events, memory, and the
load's own packet rate, for badsum's libbpf programs and for bpftrace doing the same on the same
load in the same run.

    sudo python3 bench/follow.py [--packets 200000] [--runs 3]

The load is bounded: N UDP datagrams from one throwaway namespace to another across a veth pair
(documentation addresses), sent as fast as one Python process can, with nobody listening, so each
datagram meets four hooks (xmit, netif_rx, netif_receive_skb, kfree_skb NO_SOCKET). Every object is
created under a fresh `bsb-` prefix and removed at the end. bpftrace (Debian) runs in a private
mount namespace with its own tracefs, so the host's mounts are not touched.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time

A_ADDR, B_ADDR = "198.51.100.1", "198.51.100.2"
SENDER = (
    "import socket, sys, time\n"
    "n = int(sys.argv[1]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "t = time.perf_counter()\n"
    "for i in range(n):\n"
    "    s.sendto(b'x' * 32, ('198.51.100.2', 9))\n"
    "print(n / (time.perf_counter() - t))\n"
)
BPFTRACE = r"""
tracepoint:net:net_dev_start_xmit, tracepoint:net:netif_rx, tracepoint:net:netif_receive_skb {
  $skb = (struct sk_buff *)args->skbaddr;
  if ($skb->protocol == 0x0008) {
    printf("%llx %s %u %d %d %d %d\n", args->skbaddr, $skb->dev->name, $skb->dev->nd_net.net->ns.inum,
           $skb->ip_summed, $skb->csum_start, $skb->csum_offset, $skb->len);
  }
}
tracepoint:skb:kfree_skb {
  $skb = (struct sk_buff *)args->skbaddr;
  if (args->protocol == 0x0800) { printf("%llx drop %d\n", args->skbaddr, args->reason); }
}
"""


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:  # noqa: ANN003
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60, **kw)


class Pair:
    def __init__(self) -> None:
        self.prefix = f"bsb-{secrets.token_hex(3)}"
        self.a, self.b = f"{self.prefix}-a", f"{self.prefix}-b"

    def __enter__(self) -> Pair:
        sh(["ip", "netns", "add", self.a])
        sh(["ip", "netns", "add", self.b])
        sh(["ip", "-n", self.a, "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", self.b])
        sh(["ip", "-n", self.a, "addr", "add", f"{A_ADDR}/24", "dev", "a0"])
        sh(["ip", "-n", self.b, "addr", "add", f"{B_ADDR}/24", "dev", "b0"])
        for ns, dev in ((self.a, "a0"), (self.b, "b0"), (self.a, "lo"), (self.b, "lo")):
            sh(["ip", "-n", ns, "link", "set", dev, "up"])
        # No ICMP port-unreachable storm back to the sender: drops stay one per datagram.
        sh(["ip", "netns", "exec", self.b, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=1000000"])
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)

    def send(self, n: int) -> float:
        out = sh(["ip", "netns", "exec", self.a, sys.executable, "-c", SENDER, str(n)])
        return float(out.stdout.strip())


def cpu_of(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_badsum(pair: Pair, n: int) -> dict:
    from badsum.kernel.filter import parse
    from badsum.kernel.session import FollowConfig, FollowSession

    t0 = time.perf_counter()
    s = FollowSession(FollowConfig(parse(f"host {B_ADDR}"), rate=0))
    start = time.perf_counter() - t0
    got = 0
    stop = threading.Event()
    c0 = time.process_time()

    raw: list[bytes] = []

    def consume() -> None:
        nonlocal got
        while not stop.is_set():
            got += len(r := s.poll_raw(20))
            raw.extend(r[: max(0, 50_000 - len(raw))])  # what `badsum follow` keeps, decoded after

    th = threading.Thread(target=consume)
    th.start()
    t1 = time.perf_counter()
    pps = pair.send(n)
    time.sleep(0.5)
    stop.set()
    th.join()
    wall = time.perf_counter() - t1
    cpu = time.process_time() - c0
    t2 = time.perf_counter()
    s.decode(raw)
    decode = time.perf_counter() - t2
    stats = s.stats()
    s.close()
    return {"start_s": start, "events": got, "events_per_s": got / wall, "cpu_s": cpu, "lost": stats["ring_full"],
            "load_pps": pps, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "decode_s": decode}


def run_bpftrace(pair: Pair, n: int) -> dict | None:
    if shutil.which("bpftrace") is None or shutil.which("unshare") is None:
        return None
    script = "mount -t tracefs nodev /sys/kernel/tracing && exec bpftrace -e \"$1\""
    t0 = time.perf_counter()
    p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", BPFTRACE],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)  # fmt: skip
    assert p.stdout is not None
    first = p.stdout.readline()
    start = time.perf_counter() - t0
    if "Attaching" not in first:
        p.kill()
        return {"error": first.strip() or "bpftrace did not start"}
    lines = 0

    def count() -> None:
        nonlocal lines
        for _ in p.stdout:  # type: ignore[union-attr]
            lines += 1

    th = threading.Thread(target=count)
    th.start()
    t1 = time.perf_counter()
    pps = pair.send(n)
    time.sleep(0.5)
    wall = time.perf_counter() - t1
    cpu = cpu_of(p.pid)
    p.send_signal(2)
    p.wait(timeout=30)
    th.join(timeout=30)
    return {"start_s": start, "events": lines, "events_per_s": lines / wall, "cpu_s": cpu, "lost": None,
            "load_pps": pps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/follow.py needs root (namespaces, eBPF)", file=sys.stderr)
        return 3
    rows: dict[str, list[dict]] = {"no tracer": [], "badsum (libbpf)": [], "bpftrace": []}
    with Pair() as pair:
        pair.send(2000)  # warm up: neighbour entries, page cache
        for _ in range(args.runs):
            rows["no tracer"].append({"load_pps": pair.send(args.packets)})
            rows["badsum (libbpf)"].append(run_badsum(pair, args.packets))
            bt = run_bpftrace(pair, args.packets)
            if bt is not None and "error" not in bt:
                rows["bpftrace"].append(bt)
            elif bt is not None:
                print(f"bpftrace: {bt['error']}", file=sys.stderr)
    print(f"{args.packets:,} UDP datagrams a0 -> b0 (4 hooks each), median of {args.runs}\n")
    print("| tracer | start-up s | load packets/s | events/s delivered | tracer CPU s | lost | decode s (50k kept) | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rs in rows.items():
        if not rs:
            print(f"| {name} | not run | | | | | | |")
            continue

        def med(k: str) -> str:
            vals = [r[k] for r in rs if r.get(k) is not None]
            return f"{statistics.median(vals):,.3g}" if vals else "-"

        print(f"| {name} | {med('start_s')} | {med('load_pps')} | {med('events_per_s')} | {med('cpu_s')} | "
              f"{med('lost')} | {med('decode_s')} | {med('rss_mib')} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
