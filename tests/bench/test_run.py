"""bench/run.py end to end on a small capture from bench/gen.py: every badsum mode it times must
also agree with gen.py's ground truth (which gen.py derives by re-verifying every final byte with
its own RFC 1071 code, not from badsum). Speed targets are printed, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_badsum_mode_matches_the_generator_truth(tmp_path: Path) -> None:
    cap = tmp_path / "small.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen.py"), "--packets", "6000", "--out", str(cap)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    results = tmp_path / "results.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), str(cap), "--limit-packets", "5000", "--repeat", "1",
         "--skip-tshark", "--skip-tcpdump", "--badsum-cmd", f"{sys.executable} -m badsum",
         "--workdir", str(tmp_path / "out"), "--results", str(results)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(results.read_text())
    rows = {row["mode"]: row for row in doc["results"]}
    assert set(rows) == {"report", "json", "no-symptoms", "jsonl", "jobs", "gzip"}
    assert doc["packets"] == 5000 and doc["truth"]["non_ok"] > 0
    for key in ("json", "no-symptoms", "jsonl", "jobs", "gzip"):
        row = rows[key]
        assert (row["false_negatives"], row["false_positives"]) == (0, 0), (key, row.get("fn_examples"))
        assert row["expected"] == row["flagged"] > 0
    # The gzip row read a gzip file, and its MB/s counts the capture's own bytes.
    assert rows["gzip"]["argv"][-1].endswith(".gz") and rows["gzip"]["input_bytes"] < doc["bytes"]
    assert {t["target"].split()[0] for t in doc["targets"]} >= {"report", "--jsonl", "--jobs", "gzip", "peak"}
    assert "targets (issue 16):" in r.stdout
