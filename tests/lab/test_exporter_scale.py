"""`badsum exporter` on a host with 500 network namespaces (created here, bounded, removed in finally).

The exporter's first collection is timed (badsum_collection_duration_seconds) and its peak RSS
over the whole run read from the kernel (VmHWM) before it is stopped; it serves while
half of the namespaces are deleted, and every scrape in the meantime must
answer 200 with a parseable exposition; once a collection has run after the deletions, the
deleted namespaces' series are gone and the others' are there. Oracle for what exists: `ip -j
netns list` and the inodes of /run/netns/*.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from exporterlab import exporter, get, poll
from labkit import netns_names
from prometheus_client.parser import text_string_to_metric_families
from support import need_root

from badsum.lab import state as lab_state

pytestmark = pytest.mark.root

N = 500
DELETE = 250
#: Generous bounds: a regression (a leak, a per-namespace blow-up), not a benchmark.
MAX_SECONDS = 300
MAX_RSS_KB = 512 * 1024


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set of a live process (/proc/PID/status VmHWM, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def unused_prefix() -> str:
    taken = {n.split("-", 1)[0] for n in netns_names()}
    while (p := lab_state.new_prefix()) in taken or (lab_state.RUN_ROOT / p).exists():
        pass
    return p


def ip_batch(lines: list[str]) -> None:
    subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True,
                   timeout=300, check=False)  # fmt: skip


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def csum_netns(text: str) -> set[str]:
    return {s.labels["netns"] for s in families(text).get("badsum_checksum_errors", [])}


def test_500_namespaces_then_scrapes_while_half_are_deleted(tmp_path: Path) -> None:
    need_root()
    prefix = unused_prefix()
    names = [f"{prefix}-n{i:03d}" for i in range(N)]
    try:
        ip_batch([f"netns add {n}" for n in names])
        # A veth pair between neighbours: each namespace has a container-facing link, none in the root namespace.
        ip_batch([f"link add eth0 netns {a} type veth peer name eth0 netns {b}" for a, b in zip(names[::2], names[1::2])])
        assert set(names) <= set(netns_names())

        doomed, kept = names[:DELETE], names[DELETE:]
        inodes = {n: str(os.stat(f"/run/netns/{n}").st_ino) for n in kept}
        usage: dict = {}
        with exporter("--interval", "1", "--no-drops", "--canary-file", str(tmp_path / "none.json"), usage=usage) as (proc, base):
            poll(lambda: get(f"{base}/healthz")[0] == 200, "the first collection", tries=MAX_SECONDS * 5)
            first = get(f"{base}/metrics")[1]
            took = families(first)["badsum_collection_duration_seconds"][0].value
            assert set(names) <= csum_netns(first)
            mtu = {s.labels["netns"] for s in families(first)["badsum_interface_mtu_bytes"] if s.labels["role"] == "container"}
            assert set(names) <= mtu
            assert took < MAX_SECONDS

            def delete() -> None:
                for i in range(0, len(doomed), 10):  # in small batches, so deletions span collections
                    ip_batch([f"netns del {n}" for n in doomed[i : i + 10]])
                    threading.Event().wait(0.2)

            deleter = threading.Thread(target=delete)
            deleter.start()
            scrapes: list[float] = []
            try:
                while deleter.is_alive() or len(scrapes) < 10:
                    t0 = time.monotonic()
                    code, text = get(f"{base}/metrics")
                    assert code == 200
                    assert families(text)["badsum_build_info"]
                    scrapes.append(time.monotonic() - t0)
            finally:
                deleter.join(MAX_SECONDS)
            deleted_at = time.time()
            assert not set(doomed) & set(netns_names())

            def after_deletion() -> str | None:
                code, text = get(f"{base}/metrics")
                assert code == 200
                stamp = families(text)["badsum_last_collection_timestamp_seconds"][0].value
                # A collection that started after the last deletion has finished (it took at most its duration).
                took = families(text)["badsum_collection_duration_seconds"][0].value
                return text if stamp - took > deleted_at else None

            text = poll(after_deletion, "a collection after the deletions", tries=MAX_SECONDS * 5)
            seen = csum_netns(text)
            assert not set(doomed) & seen and set(kept) <= seen
            got_inodes = {s.labels["netns"]: s.labels["netns_inode"] for s in families(text)["badsum_checksum_errors"]}
            assert {n: got_inodes[n] for n in kept} == inodes
            errors = {s.labels["stage"]: s.value for s in families(text)["badsum_collection_errors"]}
            assert errors["counters"] == 0 and errors["snapshot"] == 0  # vanishing namespaces are not errors
            # The exporter's own peak, from the kernel's high-water mark of its address space. Not
            # wait4's ru_maxrss: that keeps the peak of the process before exec, and a child that
            # pytest forks (vfork) starts with pytest's, hundreds of MB late in a full suite.
            rss_kb = vm_hwm_kb(proc.pid)
        assert usage["code"] == 0 and rss_kb < MAX_RSS_KB
        print(f"\nfigures: {N} namespaces (+{int(families(first)['badsum_namespaces'][0].value) - N} others): first collection "
              f"{took:.1f} s, {sum(len(v) for v in families(first).values())} series; exporter peak RSS {rss_kb / 1024:.1f} MiB "
              f"(VmHWM); {len(scrapes)} scrapes while {DELETE} namespaces were deleted, all 200 and parsed, "
              f"slowest {max(scrapes) * 1000:.0f} ms")
    finally:
        ip_batch([f"netns del {n}" for n in names if n in set(netns_names())])
    assert not [n for n in netns_names() if n.startswith(prefix)]
