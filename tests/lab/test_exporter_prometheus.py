"""`badsum exporter` scraped by a real Prometheus while the ovs-userspace-veth lab (KB-005) is kept.

The lab runs with `--keep`, so its private ovs-vswitchd keeps forwarding checksum-offloaded TCP
unfinished. The test starts the exporter and Prometheus (loopback, free ports, scrape every 1 s),
then sends TCP SYNs from c1 to c2 itself: c2's kernel drops them as bad checksums. Prometheus's
badsum_checksum_errors_total{protocol="tcp"} for c2's namespace must rise and end equal to the
test's own `nstat` read in c2; badsum_findings{rule="KB-005"} must be above 0.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from exporterlab import BADSUM, exporter, nstat, poll, prometheus, query, scalar
from labkit import inventory, netns_names
from support import need_root, need_tool

from badsum.lab import state as lab_state

pytestmark = pytest.mark.root

C2 = "198.51.100.2"  # the scenario's receiving container
SYN_ATTEMPTS = 3


def unused_prefix() -> str:
    taken = {n.split("-", 1)[0] for n in netns_names()}
    while (p := lab_state.new_prefix()) in taken or (lab_state.RUN_ROOT / p).exists():
        pass
    return p


def send_syns(ns: str) -> None:
    """Bounded: SYN_ATTEMPTS connects of at most 2 s each; every SYN reaches c2 unfinished."""
    code = ("import socket\n"
            f"for port in range(9100, 9100 + {SYN_ATTEMPTS}):\n"
            "    s = socket.socket(); s.settimeout(2)\n"
            f"    try: s.connect(({C2!r}, port))\n"
            "    except OSError: pass\n"
            "    finally: s.close()\n")  # fmt: skip
    subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], capture_output=True, timeout=30, check=True)


def stable_nstat(ns: str, key: str) -> int:
    """c2's counter once retransmissions have stopped moving it (two reads 1 s apart agree)."""
    last: list[int] = []

    def settled() -> int | None:
        last.append(nstat(ns)[key])
        return last[-1] if len(last) >= 2 and last[-1] == last[-2] else None

    return poll(settled, f"{key} in {ns} to settle", tries=60, every=1.0)


def test_prometheus_sees_c2s_checksum_errors_rise_and_the_kb005_finding(tmp_path: Path) -> None:
    need_root()
    for tool in ("prometheus", "ovs-vswitchd", "nstat", "ethtool"):
        need_tool(tool)
    prefix = unused_prefix()
    c1, c2 = f"{prefix}-c1", f"{prefix}-c2"
    r = subprocess.run([*BADSUM, "lab", "run", "ovs-userspace-veth", "--json", "--keep", "--prefix", prefix,
                        "--out", str(tmp_path / "lab")], capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
    try:
        assert r.returncode == 1, r.stderr  # reproduced: findings
        assert json.loads(r.stdout)["data"]["reproduced"] is True
        inode = str(os.stat(f"/run/netns/{c2}").st_ino)
        series = f'badsum_checksum_errors_total{{protocol="tcp",netns="{c2}"}}'
        with exporter("--interval", "1", "--canary-file", str(tmp_path / "no-canary.json")) as (_p, base):
            work = tmp_path / "prom"
            work.mkdir()
            with prometheus(base.removeprefix("http://"), work) as prom:
                poll(lambda: scalar(prom, 'up{job="badsum"}') == 1.0, "the exporter scraped up")
                before = stable_nstat(c2, "TcpInCsumErrors")
                assert before > 0  # the lab's own run already counted some
                poll(lambda: scalar(prom, series) == before, f"Prometheus to show {series} == {before}")
                (labels,) = [x["metric"] for x in query(prom, series)]
                assert labels["netns_inode"] == inode and labels["job"] == "badsum"
                assert "pod" not in labels  # Prometheus drops empty labels: no pod names for a lab namespace

                send_syns(c1)
                after = stable_nstat(c2, "TcpInCsumErrors")
                assert after > before  # the test's own oracle: the SYNs were counted by c2's kernel
                poll(lambda: scalar(prom, series) == after, f"Prometheus to show {series} == {after}")
                # The series rose inside Prometheus: its lowest and highest samples are the two nstat reads.
                assert scalar(prom, f"min_over_time({series}[10m])") == before
                assert scalar(prom, f"max_over_time({series}[10m])") == after
                assert scalar(prom, f"increase({series}[10m])") > 0
                assert scalar(prom, f'badsum_checksum_errors_total{{protocol="tcp",netns="{c1}"}}') == nstat(c1)["TcpInCsumErrors"]

                # skb:kfree_skb saw every segment c2's counter counted (TCP_CSUM is 1:1 with TcpInCsumErrors).
                def tcp_csum_drops() -> float:
                    return sum(float(x["value"][1]) for x in query(prom, 'badsum_drops_total{reason="TCP_CSUM"}'))

                poll(lambda: tcp_csum_drops() >= after - before, "TCP_CSUM drops to reach the counter's rise")
                assert scalar(prom, 'badsum_collection_errors_total{stage="drops"}') == 0.0
                attributed = query(prom, f'badsum_drops_total{{reason="TCP_CSUM",netns="{c2}"}}')
                print(f"\nfigures: TcpInCsumErrors in c2 {before} -> {after}; TCP_CSUM drops {tcp_csum_drops():g}, "
                      f"attributed to c2: {[x['value'][1] for x in attributed]}")

                kb005 = poll(lambda: scalar(prom, 'badsum_findings{rule="KB-005",severity="fail"}'), "the KB-005 finding")
                assert kb005 > 0
                feats = query(prom, f'badsum_interface_offload_enabled{{netns="{c1}",interface="eth0",'
                                    'feature="tx-checksum-ip-generic"}')  # fmt: skip
                out = subprocess.run(["ip", "netns", "exec", c1, "ethtool", "--json", "-k", "eth0"], capture_output=True,
                                     text=True, timeout=10, check=True).stdout  # fmt: skip
                on = json.loads(out)[0]["tx-checksum-ip-generic"]["active"]
                assert on is True  # the cause of KB-005, as ethtool says
                assert [x["value"][1] for x in feats] == ["1"]
                assert scalar(prom, 'badsum_collection_errors_total{stage="snapshot"}') == 0.0
    finally:
        c = subprocess.run([*BADSUM, "lab", "clean", "--prefix", prefix], capture_output=True, text=True, timeout=120, check=False)
    assert c.returncode == 0, c.stderr
    assert inventory().of(prefix) == []
