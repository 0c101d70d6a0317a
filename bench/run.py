#!/usr/bin/env python3
"""Time badsum, tshark and tcpdump on one capture and score them against the ground truth.

    python bench/gen.py --out /tmp/bench.pcap
    python bench/run.py /tmp/bench.pcap [--jobs N] [--limit-packets N] [--skip-tshark] [--skip-tcpdump]

Each tool runs as one whole process on a warm page cache (the capture is read once to /dev/null
before each run). Wall time is time.perf_counter() around the child, peak RSS is ru_maxrss of that
child from os.wait4() (not RUSAGE_CHILDREN, which accumulates over every child). A sampler also
records the peak summed RSS of the child's whole process tree ("tree RSS"), which is what counts
if badsum runs worker processes (--jobs).

Accuracy is scored against FILE.truth.csv written by gen.py:
  badsum   its --jsonl records (frame, layer, depth, status) against the truth, zero-allowed
           ignored on both sides (a status mismatch counts as one FN and one FP);
  tshark   per frame, layer and depth, checksum status 0 ("bad") against truth bad and partial
           (tshark cannot tell a partial sum from a bad one; how many partials it calls bad is
           reported separately: those are offload artefacts it misreports);
  tcpdump  -vv's per-packet markers ("incorrect ->", "bad cksum", "bad udp cksum",
           "wrong icmp cksum") against truth bad and partial, like tshark.

The table goes to stdout and, as JSON, to bench/out/results.json (see --results).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import re
import shlex
import shutil
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "out")

TSHARK_FIELDS = [
    "frame.number",
    "ip.checksum.status",
    "tcp.checksum.status",
    "udp.checksum.status",
    "icmp.checksum.status",
    "vxlan.vni",
]


# ---------------------------------------------------------------------------------------------
# Running one tool


def _status_kb(pid: int | str, *keys: bytes) -> dict[bytes, int]:
    """Selected fields (kB) of /proc/PID/status; empty if the process is gone."""
    out: dict[bytes, int] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                k = line.split(b":", 1)[0]
                if k in keys:
                    out[k] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _tree_rss_kb(root: int) -> int:
    """Summed VmRSS (kB) of root and all its descendants, 0 if it is gone."""
    total = 0
    stack = [root]
    seen = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _status_kb(pid, b"VmRSS").get(b"VmRSS", 0)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        stack.extend(int(x) for x in f.read().split())
                except OSError:
                    pass
        except OSError:
            continue
    return total


def _cmdline(pid: int | str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def warm(path: str) -> None:
    """Read the file once so that every tool starts on a warm page cache (cat FILE > /dev/null)."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        while f.readinto(buf):
            pass


def run_tool(name: str, argv: list[str], stdout_path: str, stderr_path: str, ok_codes=(0,)) -> dict:
    """Run argv to completion; return wall seconds and peak RSS.

    ru_maxrss (os.wait4) is the child's own figure, with one Linux caveat: a child starts with the
    high-water RSS of the process that forked it (the parent's pages are counted until exec), so
    ru_maxrss is never below this runner's own VmHWM. When it is not above it, the figure is
    taken from the child's own VmHWM instead, sampled every 20 ms from /proc after the exec.
    """
    my_cmdline = _cmdline("self")
    floor_kb = _status_kb("self", b"VmHWM").get(b"VmHWM", 0)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        peak_tree = [0]
        own_hwm = [0]
        stop = threading.Event()

        def sample() -> None:
            execed = False
            while not stop.is_set():
                if not execed:
                    cl = _cmdline(proc.pid)
                    execed = bool(cl) and cl != my_cmdline
                if execed:
                    hwm = _status_kb(proc.pid, b"VmHWM").get(b"VmHWM", 0)
                    own_hwm[0] = max(own_hwm[0], hwm)
                    peak_tree[0] = max(peak_tree[0], _tree_rss_kb(proc.pid))
                stop.wait(0.02)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, ru = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - t0
        stop.set()
        th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    rc = proc.returncode
    if ru.ru_maxrss > floor_kb * 1.02 or not own_hwm[0]:
        peak_kb, source = ru.ru_maxrss, "ru_maxrss"
    else:
        peak_kb, source = own_hwm[0], "VmHWM sampled"
    res = {
        "tool": name,
        "argv": argv,
        "seconds": secs,
        "peak_rss_mb": peak_kb / 1024.0,
        "peak_rss_source": source,
        "ru_maxrss_mb": ru.ru_maxrss / 1024.0,  # Linux: kilobytes
        "runner_hwm_mb": floor_kb / 1024.0,
        "tree_rss_mb": max(peak_tree[0], peak_kb) / 1024.0,
        "user_seconds": ru.ru_utime,
        "sys_seconds": ru.ru_stime,
        "returncode": rc,
        "failed": rc not in ok_codes,
        "stdout": stdout_path,
    }
    if res["failed"]:
        with open(stderr_path, "rb") as f:
            res["stderr_tail"] = f.read()[-2000:].decode("utf-8", "replace")
    return res


# ---------------------------------------------------------------------------------------------
# Capture helpers


def pcap_prefix(path: str, limit: int | None, dest: str | None) -> tuple[int, int]:
    """Count (packets, bytes incl. headers) of the first `limit` records; copy them to dest."""
    with open(path, "rb") as f:
        ghdr = f.read(24)
        magic = struct.unpack_from("<I", ghdr, 0)[0] if len(ghdr) == 24 else 0
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            hdr = struct.Struct("<IIII")
        elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
            hdr = struct.Struct(">IIII")
        else:
            raise SystemExit(f"{path}: not a classic pcap file")
        size = os.fstat(f.fileno()).st_size
        pos, n = 24, 0
        while limit is None or n < limit:
            rh = f.read(16)
            if len(rh) < 16:
                break
            incl = hdr.unpack(rh)[2]
            pos = min(pos + 16 + incl, size)
            f.seek(incl, 1)
            n += 1
        if dest is not None:
            f.seek(0)
            left = pos
            with open(dest, "wb") as d:
                while left:
                    chunk = f.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    d.write(chunk)
                    left -= len(chunk)
        return n, pos


# ---------------------------------------------------------------------------------------------
# Ground truth and parsers. Keys are (frame, layer, depth[, status]).


def load_truth(path: str, limit: int | None):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            fr = int(r["frame"])
            if limit is not None and fr > limit:
                continue
            rows.append((fr, r["layer"], int(r["depth"]), r["status"]))
    return rows


def parse_badsum_jsonl(path: str) -> tuple[set, int, int]:
    """Non-ok records (zero-allowed excluded), zero-allowed count, unparsable lines."""
    got, zero, junk = set(), 0, 0
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                junk += 1
                continue
            if not isinstance(rec, dict) or "frame" not in rec or "status" not in rec:
                continue  # e.g. a summary record
            if rec["status"] == "zero-allowed":
                zero += 1
                continue
            if rec["status"] == "ok":
                continue
            got.add((int(rec["frame"]), str(rec["layer"]), int(rec.get("depth", 0)), str(rec["status"])))
    return got, zero, junk


def parse_tshark(path: str) -> tuple[set, int]:
    """(frame, layer, depth) whose checksum status is 0 (bad); frames seen.

    Depth: the k-th ip/udp occurrence is at depth k (VXLAN: outer IPv4/UDP first); tcp/icmp is the
    innermost protocol in these captures, at depth = number of VXLAN headers.
    """
    flagged, frames = set(), 0
    with open(path, "r", errors="replace") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if not p[0]:
                continue
            frames += 1
            if "0" not in line[len(p[0]) :]:
                continue
            p += [""] * (len(TSHARK_FIELDS) - len(p))
            fr = int(p[0])
            nvx = len(p[5].split(",")) if p[5] else 0
            for layer, val in (("ipv4", p[1]), ("tcp", p[2]), ("udp", p[3]), ("icmp", p[4])):
                if not val:
                    continue
                vals = val.split(",")
                for k, s in enumerate(vals):
                    if s != "0":
                        continue
                    depth = k if layer in ("ipv4", "udp") else nvx - (len(vals) - 1 - k)
                    flagged.add((fr, layer, depth))
    return flagged, frames


TCPDUMP_START = re.compile(r"^\s*(\d+)  \d\d:\d\d:\d\d\.\d+ ")
TCPDUMP_MARK = re.compile(r"(\(incorrect -> )|(bad cksum )|(bad udp cksum )|(wrong icmp cksum )|(VXLAN, flags)")
TCPDUMP_LAYER = {1: "tcp", 2: "ipv4", 3: "udp", 4: "icmp"}


def parse_tcpdump(path: str) -> tuple[set, int]:
    """(frame, layer, depth) flagged by tcpdump -# -vv; packets seen.

    A packet's text starts on a line with its number (-#) and may continue over several lines
    (-vv; VXLAN inner packets); depth is the number of "VXLAN, flags" seen before the marker.
    """
    flagged, frame, depth, frames = set(), 0, 0, 0
    with open(path, "r", errors="replace") as f:
        for line in f:
            m = TCPDUMP_START.match(line)
            if m:
                frame, depth = int(m.group(1)), 0
                frames += 1
            if "cksum" not in line and "VXLAN" not in line:
                continue
            for mk in TCPDUMP_MARK.finditer(line):
                if mk.lastindex == 5:
                    depth += 1
                else:
                    flagged.add((frame, TCPDUMP_LAYER[mk.lastindex], depth))
    return flagged, frames


def score_flagger(flagged: set, truth_rows: list) -> dict:
    """Tools that only say good/bad: compare with truth bad and partial."""
    want = {(f, l, d) for f, l, d, s in truth_rows if s in ("bad", "partial", "zero-invalid")}
    partial = {(f, l, d) for f, l, d, s in truth_rows if s == "partial"}
    fn, fp = want - flagged, flagged - want
    return {
        "false_negatives": len(fn),
        "false_positives": len(fp),
        "flagged": len(flagged),
        "expected": len(want),
        "partial_called_bad": len(partial & flagged),
        "partial_total": len(partial),
        "fn_examples": sorted(fn)[:10],
        "fp_examples": sorted(fp)[:10],
    }


def parse_badsum_summary(path: str) -> dict[tuple[str, int, str], int]:
    """(layer, depth, status) -> count of non-ok checksums from the --json envelope."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return {(c["layer"], c["depth"], c["status"]): c["count"] for c in doc["data"]["checksums"]
            if c["status"] not in ("ok", "zero-allowed")}  # fmt: skip


def score_counts(counts: dict, truth_rows: list) -> dict:
    """Scored by counts per (layer, depth, status): the summary carries no per-frame records."""
    want: dict[tuple[str, int, str], int] = {}
    for _frame, layer, depth, status in truth_rows:
        if status != "zero-allowed":
            want[(layer, depth, status)] = want.get((layer, depth, status), 0) + 1
    keys = set(want) | set(counts)
    fn = sum(max(0, want.get(k, 0) - counts.get(k, 0)) for k in keys)
    fp = sum(max(0, counts.get(k, 0) - want.get(k, 0)) for k in keys)
    return {"false_negatives": fn, "false_positives": fp, "flagged": sum(counts.values()), "expected": sum(want.values()),
            "scored_by": "counts per layer, depth and status"}  # fmt: skip


def score_badsum(got: set, zero: int, truth_rows: list) -> dict:
    want = {r for r in truth_rows if r[3] != "zero-allowed"}
    fn, fp = want - got, got - want
    by_status: dict[str, dict[str, int]] = {}
    for tag, s in (("fn", fn), ("fp", fp)):
        for r in s:
            d = by_status.setdefault(r[3], {"fn": 0, "fp": 0})
            d[tag] += 1
    return {
        "false_negatives": len(fn),
        "false_positives": len(fp),
        "flagged": len(got),
        "expected": len(want),
        "by_status": by_status,
        "zero_allowed_reported": zero,
        "zero_allowed_truth": sum(1 for r in truth_rows if r[3] == "zero-allowed"),
        "fn_examples": sorted(fn)[:10],
        "fp_examples": sorted(fp)[:10],
    }


# ---------------------------------------------------------------------------------------------
# badsum's modes and the issue-16 targets


@dataclass(frozen=True)
class Mode:
    """One way of running `badsum pcap`, a row of the table."""

    key: str
    name: str
    argv: list[str]
    input: str
    score: str  # "counts" (the --json summary), "records" (--jsonl) or "" (text report: timed only)
    skip: str = ""


ALL_MODES = ("report", "json", "no-symptoms", "jsonl", "jobs", "gzip")


def badsum_modes(args, badsum_input: str, pcap: str, prefix_path: str | None) -> list[Mode]:
    """The rows for badsum, in table order, limited to --modes."""
    want = set(ALL_MODES) if args.modes == "all" else {m.strip() for m in args.modes.split(",")}
    unknown = want - set(ALL_MODES)
    if unknown:
        raise SystemExit(f"unknown --modes {sorted(unknown)}; choose from {', '.join(ALL_MODES)}")
    gz, gz_skip = gzip_input(args, pcap, prefix_path)
    j = str(args.jobs)
    modes = [
        Mode("report", "badsum (report)", ["pcap", badsum_input], badsum_input, ""),
        Mode("json", "badsum --json", ["pcap", "--json", badsum_input], badsum_input, "counts"),
        Mode("no-symptoms", "badsum --no-symptoms", ["pcap", "--json", "--no-symptoms", badsum_input], badsum_input,
             "counts"),
        Mode("jsonl", "badsum --jsonl", ["pcap", "--jsonl", badsum_input], badsum_input, "records"),
        Mode("jobs", f"badsum --json --jobs {j}", ["pcap", "--json", "--jobs", j, badsum_input], badsum_input, "counts"),
        Mode("gzip", "badsum --json, gzip input", ["pcap", "--json", gz or "-"], gz or badsum_input, "counts", gz_skip),
    ]
    return [m for m in modes if m.key in want]


def gzip_input(args, pcap: str, prefix_path: str | None) -> tuple[str | None, str]:
    """The gzip copy of the capture for the gzip row: --gzip, else PCAP.gz, else (with
    --limit-packets) a gzip -1 of the prefix written here. Returns (path, reason it is missing)."""
    if args.gzip:
        return (args.gzip, "") if os.path.exists(args.gzip) else (None, f"no file {args.gzip}")
    if prefix_path:
        dest = prefix_path + ".gz"
        with open(prefix_path, "rb") as src, gzip.open(dest, "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return dest, ""
    if os.path.exists(pcap + ".gz"):
        return pcap + ".gz", ""
    return None, f"no {pcap}.gz; write it with: gzip -1 -k {pcap}"


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time; peak RSS is the highest of all runs, and every time is kept."""
    ok = [r for r in runs if not r["failed"]] or runs
    ordered = sorted(ok, key=lambda r: r["seconds"])
    res = dict(ordered[len(ordered) // 2])
    res["runs_seconds"] = [round(r["seconds"], 3) for r in runs]
    res["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    res["tree_rss_mb"] = max(r["tree_rss_mb"] for r in runs)
    res["failed"] = any(r["failed"] for r in runs)
    return res


#: Issue 16's targets: (label, row key, test on the rows by key, what the test reads).
TARGET_PPS_REPORT = 3_000_000
TARGET_PPS_JSONL = 2_000_000
TARGET_JOBS_SPEEDUP = 1.6
TARGET_GZIP_MB_S = 500.0
TARGET_RSS_MB = 150.0


def check_targets(rows: list[dict], jobs: int) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each target whose rows ran."""
    by = {r.get("mode"): r for r in rows if r.get("mode") and not r["failed"]}
    out: list[tuple[str, str, bool]] = []
    if "report" in by:
        v = by["report"]["packets_per_s"]
        out.append((f"report >= {TARGET_PPS_REPORT / 1e6:g} M packets/s", f"{v / 1e6:.2f} M", v >= TARGET_PPS_REPORT))
    if "jsonl" in by:
        v = by["jsonl"]["packets_per_s"]
        out.append((f"--jsonl >= {TARGET_PPS_JSONL / 1e6:g} M packets/s", f"{v / 1e6:.2f} M", v >= TARGET_PPS_JSONL))
    if "jobs" in by and "json" in by:
        v = by["json"]["seconds"] / by["jobs"]["seconds"]
        out.append((f"--jobs {jobs} >= {TARGET_JOBS_SPEEDUP}x one job (--json)", f"{v:.2f}x", v >= TARGET_JOBS_SPEEDUP))
    if "gzip" in by:
        v = by["gzip"]["mb_per_s"]
        out.append((f"gzip input >= {TARGET_GZIP_MB_S:g} MB/s of capture data", f"{v:,.0f} MB/s", v >= TARGET_GZIP_MB_S))
    rss = [(r["tree_rss_mb"], r["tool"]) for r in rows if r.get("mode")]
    if rss:
        worst, tool = max(rss)
        out.append((f"peak RSS <= {TARGET_RSS_MB:g} MB in every mode (process tree)", f"{worst:.0f} MB ({tool})",
                    worst <= TARGET_RSS_MB))
    return out


# ---------------------------------------------------------------------------------------------


def find_badsum(override: str | None) -> list[str] | None:
    if override:
        return shlex.split(override)
    exe = shutil.which("badsum")
    if exe:
        return [exe]
    try:
        r = subprocess.run([sys.executable, "-m", "badsum", "--help"], check=False, capture_output=True, timeout=60)
        if r.returncode == 0:
            return [sys.executable, "-m", "badsum"]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return None


def tool_version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def fmt_table(rows: list[dict]) -> str:
    head = ["tool", "packets/s", "MB/s", "peak RSS MB", "tree RSS MB", "seconds", "vs badsum", "FN", "FP",
            "partial->bad"]
    lines = []
    for r in rows:
        ratio = r.get("ratio_vs_badsum")
        lines.append([
            r["tool"],
            f"{r['packets_per_s']:,.0f}" if r.get("packets_per_s") is not None else "-",
            f"{r['mb_per_s']:,.1f}" if r.get("mb_per_s") is not None else "-",
            f"{r['peak_rss_mb']:,.1f}",
            f"{r['tree_rss_mb']:,.1f}",
            f"{r['seconds']:.2f}",
            f"{ratio:.1f}x" if ratio is not None else "-",
            str(r.get("false_negatives", "-")),
            str(r.get("false_positives", "-")),
            str(r.get("partial_called_bad", "-")),
        ])
        if r["failed"]:
            lines[-1][0] += f" (rc={r['returncode']})"
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    out.append("  ".join("-" * w for w in widths))
    for l in lines:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(l, widths))))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pcap", help="capture written by bench/gen.py")
    ap.add_argument("--truth", help="truth CSV (default PCAP.truth.csv)")
    ap.add_argument("--jobs", type=int, default=2, help="jobs for the --jobs row (default 2)")
    ap.add_argument("--modes", default="all",
                    help=f"badsum rows to run, comma-separated from {','.join(ALL_MODES)} (default all)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per badsum row; the median is shown (default 3)")
    ap.add_argument("--gzip", help="gzip copy of the capture for the gzip row (default PCAP.gz)")
    ap.add_argument("--limit-packets", type=int, metavar="N",
                    help="only the first N packets (tshark -c N, tcpdump -c N, badsum on a prefix copy)")
    ap.add_argument("--skip-badsum", action="store_true")
    ap.add_argument("--skip-tshark", action="store_true")
    ap.add_argument("--skip-tcpdump", action="store_true")
    ap.add_argument("--badsum-cmd", help="command to run badsum (default: `badsum` on PATH, else python -m badsum)")
    ap.add_argument("--workdir", default=OUT_DIR, help="where tool outputs go (default bench/out)")
    ap.add_argument("--results", default=os.path.join(OUT_DIR, "results.json"), help="JSON results file")
    ap.add_argument("--keep-outputs", action="store_true", help="keep the tools' stdout files")
    args = ap.parse_args(argv)

    pcap = os.path.abspath(args.pcap)
    truth_path = args.truth or pcap + ".truth.csv"
    meta_path = pcap + ".truth.json"
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    limit = args.limit_packets

    # Packets and bytes processed.
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    badsum_input = pcap
    prefix_path = None
    if limit is not None:
        prefix_path = os.path.join(args.workdir, f"prefix-{limit}.pcap")
        packets, nbytes = pcap_prefix(pcap, limit, None if args.skip_badsum else prefix_path)
        if not args.skip_badsum:
            badsum_input = prefix_path
    elif meta.get("packets") and meta.get("file_bytes") == os.path.getsize(pcap):
        packets, nbytes = int(meta["packets"]), int(meta["file_bytes"])
    else:
        packets, nbytes = pcap_prefix(pcap, None, None)
    if not os.path.exists(truth_path):
        raise SystemExit(f"no ground truth at {truth_path} (write it with bench/gen.py)")
    print(f"capture {pcap}: {packets:,} packets, {nbytes / 1e6:,.1f} MB"
          f"{f' (first {limit:,} packets)' if limit else ''}", file=sys.stderr)
    # The truth is loaded after the runs: a child's ru_maxrss starts at this runner's own peak RSS.
    scorers = []

    rows: list[dict] = []
    badsum = None if args.skip_badsum else find_badsum(args.badsum_cmd)
    if not args.skip_badsum and badsum is None:
        print("badsum not found (no `badsum` on PATH, `python -m badsum` fails): skipping it", file=sys.stderr)

    def finish(res: dict) -> dict:
        s = res["seconds"]
        res["packets"] = packets
        res["bytes"] = nbytes
        res["packets_per_s"] = packets / s if s > 0 else None
        res["mb_per_s"] = nbytes / 1e6 / s if s > 0 else None
        return res

    def cleanup(path: str) -> None:
        if not args.keep_outputs:
            try:
                os.unlink(path)
            except OSError:
                pass

    if badsum is not None:
        for mode in badsum_modes(args, badsum_input, pcap, prefix_path):
            if mode.skip:
                print(f"{mode.name}: skipped ({mode.skip})", file=sys.stderr)
                continue
            argv_s = badsum + mode.argv
            out = os.path.join(args.workdir, "badsum.out")
            runs = []
            for _ in range(args.repeat):
                warm(mode.input)
                print("running: " + shlex.join(argv_s), file=sys.stderr)
                # badsum exits 1 when it finds bad checksums, which this capture has.
                runs.append(run_tool(mode.name, argv_s, out, os.path.join(args.workdir, "badsum.stderr"), ok_codes=(0, 1)))
            res = finish(median_run(runs))
            res["mode"] = mode.key
            if mode.score == "counts":
                counts = parse_badsum_summary(out)
                scorers.append((res, lambda truth, counts=counts: score_counts(counts, truth)))
            elif mode.score == "records":
                got, zero, junk = parse_badsum_jsonl(out)
                scorers.append((res, lambda truth, got=got, zero=zero: score_badsum(got, zero, truth)))
                res["unparsable_lines"] = junk
            if mode.input != badsum_input:
                res["input_bytes"] = os.path.getsize(mode.input)
            res["version"] = tool_version(badsum + ["--version"])
            rows.append(res)
            cleanup(out)

    if not args.skip_tshark:
        if shutil.which("tshark") is None:
            print("tshark not on PATH: skipping it", file=sys.stderr)
        else:
            argv_t = ["tshark", "-n", "-r", pcap, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                      "-o", "udp.check_checksum:TRUE", "-T", "fields"]
            for fld in TSHARK_FIELDS:
                argv_t += ["-e", fld]
            if limit is not None:
                argv_t += ["-c", str(limit)]
            out = os.path.join(args.workdir, "tshark.tsv")
            warm(pcap)
            print("running: " + shlex.join(argv_t), file=sys.stderr)
            res = finish(run_tool("tshark", argv_t, out, os.path.join(args.workdir, "tshark.stderr")))
            flagged, seen = parse_tshark(out)
            scorers.append((res, lambda truth, flagged=flagged: score_flagger(flagged, truth)))
            res["frames_seen"] = seen
            res["version"] = tool_version(["tshark", "--version"])
            rows.append(res)
            cleanup(out)

    if not args.skip_tcpdump:
        if shutil.which("tcpdump") is None:
            print("tcpdump not on PATH: skipping it", file=sys.stderr)
        else:
            argv_d = ["tcpdump", "-#", "-vv", "-n", "-r", pcap]
            if limit is not None:
                argv_d[1:1] = ["-c", str(limit)]
            out = os.path.join(args.workdir, "tcpdump.txt")
            warm(pcap)
            print("running: " + shlex.join(argv_d), file=sys.stderr)
            res = finish(run_tool("tcpdump -vv", argv_d, out, os.path.join(args.workdir, "tcpdump.stderr")))
            flagged, seen = parse_tcpdump(out)
            scorers.append((res, lambda truth, flagged=flagged: score_flagger(flagged, truth)))
            res["frames_seen"] = seen
            res["version"] = tool_version(["tcpdump", "--version"])
            rows.append(res)
            cleanup(out)

    for p in (prefix_path, prefix_path and prefix_path + ".gz"):
        if p and os.path.exists(p):
            os.unlink(p)

    truth_rows = load_truth(truth_path, limit)
    print(f"truth: {len(truth_rows):,} non-ok checksums", file=sys.stderr)
    for res, score in scorers:
        res.update(score(truth_rows))

    base = next((r for key in ("report", "json") for r in rows if r.get("mode") == key and not r["failed"]), None)
    for r in rows:
        r["ratio_vs_badsum"] = r["seconds"] / base["seconds"] if base else None

    print(fmt_table(rows))
    targets = check_targets(rows, args.jobs)
    if targets:
        print("\ntargets (issue 16):")
        for label, got, met in targets:
            print(f"  {'met ' if met else 'MISS'}  {label}: {got}")
    for r in rows:
        if r["failed"]:
            print(f"\n{r['tool']} exited with {r['returncode']}:\n{r.get('stderr_tail', '')}", file=sys.stderr)
        if r.get("frames_seen") is not None and r["frames_seen"] != packets:
            print(f"note: {r['tool']} printed {r['frames_seen']:,} packets, expected {packets:,}", file=sys.stderr)
        if r.get("partial_total"):
            print(f"{r['tool']}: calls {r['partial_called_bad']:,} of {r['partial_total']:,} partial checksums bad",
                  file=sys.stderr)

    result = {
        "capture": pcap,
        "packets": packets,
        "bytes": nbytes,
        "limit_packets": limit,
        "jobs": args.jobs,
        "truth": {
            "file": truth_path,
            "non_ok": len(truth_rows),
            "bad": sum(1 for r in truth_rows if r[3] == "bad"),
            "partial": sum(1 for r in truth_rows if r[3] == "partial"),
            "zero_allowed": sum(1 for r in truth_rows if r[3] == "zero-allowed"),
        },
        "host": {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "kernel": platform.release()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": rows,
        "targets": [{"target": t, "measured": g, "met": m} for t, g, m in targets],
        "repeat": args.repeat,
    }
    with open(args.results, "w") as f:
        json.dump(result, f, indent=2, default=list)
        f.write("\n")
    print(f"\nwrote {args.results}", file=sys.stderr)
    ok = not any(r["failed"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
