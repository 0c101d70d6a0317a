"""The fast JSON-lines writer prints exactly `records.checksum_line` of every row's `Verdict`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from builders import write_zoo
from support import RowCollector, corpus_files

from badsum.analyze import ScanConfig, Scanner
from badsum.capture import open_capture
from badsum.report.records import checksum_line
from badsum.report.sinks import JsonLinesSink
from badsum.scan.rows import iter_verdicts


def check(path: Path) -> int:
    buf, keep = io.StringIO(), RowCollector()
    with open_capture(path) as reader:
        Scanner(ScanConfig(), [JsonLinesSink(buf), keep]).run(reader)
    got = [json.loads(line) for line in buf.getvalue().splitlines()]
    want = [json.loads(checksum_line(v)) for p in keep.parts for v in iter_verdicts(p)]
    assert got == want
    return len(got)


def test_zoo(tmp_path: Path) -> None:
    p = tmp_path / "zoo.pcap"
    write_zoo(p)
    assert check(p) >= 8


@pytest.mark.corpus
@pytest.mark.parametrize("path", [p for p in corpus_files() if p.stat().st_size > 1000][:40], ids=lambda p: p.name)
def test_corpus(path: Path) -> None:
    check(path)
