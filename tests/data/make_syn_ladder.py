#!/usr/bin/env python3
"""Write tests/data/syn-ladder-63s.pcap and its oracle syn-ladder-63s.json: the real 63-second connect.

Needs root, ip, nft, tcpdump, nstat and tshark; takes about 65 s. Two throwaway namespaces
(bs<6 hex>-cli/-srv, tests/flows/kernelkit.py) joined by a veth pair; in the client namespace
`net.ipv4.tcp_syn_linear_timeouts=0`, so the kernel backs off exponentially from the first retry as
kernels before 6.x always did; in the server namespace an nftables rule drops incoming SYNs for the
first 40 s of the connect. The kernel's own retransmission timer then sends SYNs at 0, 1, 3, 7, 15,
31 and 63 s, and the seventh is answered: connected after ~63 s (1+2+4+8+16+32). tcpdump records the
client's veth (only the connect's port).

The oracle file is written by this script from tshark, the client and the kernel, never by badsum:
the SYN and SYN-ACK times (tshark), the connect time the client measured around connect(), the
client namespace's TcpExtTCPSynRetrans delta (nstat), the packets the nftables rule dropped, the
sysctls and the kernel release.

    sudo python3 tests/data/make_syn_ladder.py [OUT.pcap]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "flows"))

from kernelkit import SynLab, kernel_hz

OUT = HERE / "syn-ladder-63s.pcap"
DROP_FOR = 40.0
LINEAR_TIMEOUTS = 0
SYN_RETRIES = 6  # the kernel default: the seventh SYN at 63 s is the last one


def version(argv: list[str]) -> str:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    return (cp.stdout or cp.stderr).splitlines()[0].strip()


def main(out: Path) -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 3
    for tool in ("ip", "nft", "tcpdump", "nstat", "tshark"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 3
    with tempfile.TemporaryDirectory(prefix="bs-syn-ladder-") as tmp, SynLab(Path(tmp)) as lab:
        lab.sysctl("net.ipv4.tcp_syn_linear_timeouts", LINEAR_TIMEOUTS)
        lab.sysctl("net.ipv4.tcp_syn_retries", SYN_RETRIES)
        run = lab.connect(drop_for=DROP_FOR, client_timeout=150.0)
        if run.outcome != "connected":
            print(f"the client did not connect: {run}", file=sys.stderr)
            return 1
        oracle = {
            "made_by": "tests/data/make_syn_ladder.py",
            "kernel": platform.release(),
            "hz": kernel_hz(),
            "tools": {"tcpdump": version(["tcpdump", "--version"]), "tshark": version(["tshark", "--version"])},
            "sysctl": {"net.ipv4.tcp_syn_linear_timeouts": LINEAR_TIMEOUTS, "net.ipv4.tcp_syn_retries": SYN_RETRIES},
            "drop_for_s": DROP_FOR,
            "client": run.client,
            "server": run.server,
            "port": run.port,
            "client_outcome": run.outcome,
            "client_connect_s": round(run.connect_s, 6),
            "syn_times": list(run.syn_times),
            "synack_times": list(run.synack_times),
            "nstat_TcpExtTCPSynRetrans": run.syn_retrans,
            "nft_dropped": run.dropped,
        }
        tmp_pcap, tmp_json = out.with_suffix(".pcap.tmp"), out.with_suffix(".json.tmp")
        shutil.copyfile(run.pcap, tmp_pcap)
        tmp_json.write_text(json.dumps(oracle, indent=2) + "\n")
    tmp_pcap.replace(out)
    tmp_json.replace(out.with_suffix(".json"))
    gaps = [round(b - a, 3) for a, b in zip(run.syn_times, run.syn_times[1:], strict=False)]
    print(f"wrote {out} ({out.stat().st_size} bytes): SYN gaps {gaps}, connect {run.connect_s:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
