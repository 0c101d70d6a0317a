"""Reading a scenario's captures: tcpdump's own verdicts (an independent oracle) and badsum's."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

from badsum.capture import open_capture
from badsum.checksum.detailed import DetailedJudge

_INCORRECT = re.compile(r"(?P<layer>tcp|udp)?.*?cksum 0x[0-9a-f]+ \(incorrect")


def tcpdump_incorrect(path: Path, proto: str) -> int:
    """How many `proto` checksums `tcpdump -vv` calls incorrect in a capture."""
    r = subprocess.run(["tcpdump", "-n", "-vv", "-r", str(path), proto], capture_output=True, text=True, timeout=60, check=False)
    return sum(1 for line in r.stdout.splitlines() if "(incorrect" in line)


def badsum_statuses(path: Path) -> Counter:
    """(layer, status) -> count of every checksum in the capture, from badsum's detailed path."""
    c: Counter = Counter()
    judge = DetailedJudge()
    with open_capture(path) as reader:
        for b in reader:
            for i in range(len(b)):
                for v in judge.judge(b.first_frame + i, int(b.ts_ns[i]), b.packet(i), int(b.origlen[i]), int(b.linktype[i])).verdicts:
                    c[(v.layer.label, v.status.label)] += 1
    return c
