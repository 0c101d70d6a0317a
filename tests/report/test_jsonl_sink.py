"""The fast JSON-lines writer prints exactly `records.checksum_line` of every row's `Verdict`, byte for byte."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from builders import write_zoo
from support import RowCollector, corpus_files

from badsum.analyze import ScanConfig, Scanner
from badsum.capture import open_capture
from badsum.checksum.verdict import ISSUE_DTYPE, Layer, Status
from badsum.report.records import checksum_line, checksum_lines
from badsum.report.sinks import JsonLinesSink
from badsum.scan.rows import iter_verdicts


def check(path: Path) -> int:
    buf, keep = io.StringIO(), RowCollector()
    with open_capture(path) as reader:
        Scanner(ScanConfig(), [JsonLinesSink(buf), keep]).run(reader)
    want = "".join(checksum_line(v) for p in keep.parts for v in iter_verdicts(p))
    assert buf.getvalue() == want
    got = [json.loads(line) for line in buf.getvalue().splitlines()]
    return len(got)


def test_zoo(tmp_path: Path) -> None:
    p = tmp_path / "zoo.pcap"
    write_zoo(p)
    assert check(p) >= 8


@pytest.mark.corpus
@pytest.mark.parametrize("path", [p for p in corpus_files() if p.stat().st_size > 1000][:40], ids=lambda p: p.name)
def test_corpus(path: Path) -> None:
    check(path)


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=ISSUE_DTYPE)
    for name in ("frame", "offset", "stored", "computed", "extra"):
        rows[name] = rng.integers(0, 1 << 32, n)
    rows["layer"] = rng.choice([int(x) for x in Layer], n)
    rows["status"] = rng.choice([int(x) for x in Status], n)
    rows["flags"] = rng.integers(0, 256, n)
    rows["depth"] = rng.integers(0, 4, n)
    rows["ipver"] = rng.choice([0, 4, 6], n)
    rows["proto"] = rng.integers(0, 256, n)
    rows["sport"], rows["dport"] = rng.integers(0, 65536, n), rng.integers(0, 65536, n)
    raw = rng.integers(0, 4, (n, 32)).astype(np.uint8)  # few distinct addresses: the per-batch dedup at work
    raw[rows["ipver"] == 4, 4:16] = 0
    raw[rows["ipver"] == 4, 20:32] = 0
    rows["src"] = raw[:, :16].copy().view("V16").ravel()
    rows["dst"] = raw[:, 16:].copy().view("V16").ravel()
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_batch_lines_equal_one_verdict_at_a_time(seed: int) -> None:
    rows = _rows(500, seed)
    assert checksum_lines(rows) == "".join(checksum_line(v) for v in iter_verdicts(rows))
    assert checksum_lines(rows[:0]) == ""
