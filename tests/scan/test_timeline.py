"""Bad and partial checksums over the capture's time (scan/timeline.py) and `pcap --html`'s chart
of them: the bins against tshark's own verdicts and frame.time_relative, binned the same way."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from support import need_tool

from badsum.checksum.verdict import ISSUE_DTYPE, Layer, Status
from badsum.scan.batch import Batch
from badsum.scan.timeline import Timeline

REPO = Path(__file__).resolve().parents[2]
CAPTURE = REPO / "tests" / "data" / "csum-timeline.pcap"
LADDER = REPO / "tests" / "data" / "syn-ladder-63s.pcap"
LAYER_OF_TSHARK = {"ip": "ipv4", "tcp": "tcp", "udp": "udp"}


def batch(ts_ns: list[int], first_frame: int = 1) -> Batch:
    n = len(ts_ns)
    z = np.zeros(n, dtype=np.uint32)
    return Batch(b"", first_frame, np.zeros(n, dtype=np.int64), z, z, np.array(ts_ns, dtype=np.int64),
                 np.zeros(n, dtype=np.uint16), z, np.full(n, 0xFFFFFFFF, dtype=np.uint32), np.zeros(n, dtype=np.uint8),
                 np.zeros(n, dtype=np.int64))  # fmt: skip


def rows(*spec: tuple[int, Layer, Status]) -> np.ndarray:
    r = np.zeros(len(spec), dtype=ISSUE_DTYPE)
    for i, (frame, layer, status) in enumerate(spec):
        r[i]["frame"], r[i]["layer"], r[i]["status"] = frame, int(layer), int(status)
    return r


def test_bins_grow_tenfold_and_keep_every_count() -> None:
    t = Timeline(fine_bins=100, width_ns=1_000)
    t.add(batch([0, 50_000, 99_999]), rows((1, Layer.TCP, Status.BAD), (3, Layer.TCP, Status.PARTIAL)))
    assert t.width_ns == 1_000
    # A packet past the last bin: the bins fold tenfold until it fits, counts kept in place.
    t.add(batch([5_000_000, 7_654_321], first_frame=4),
          rows((4, Layer.UDP, Status.BAD), (5, Layer.IPV4, Status.BAD), (5, Layer.UDP, Status.OK), (5, Layer.TCP, Status.UNVERIFIABLE)))  # fmt: skip
    assert t.width_ns == 100_000 and int(t.counts.sum()) == 4
    s = t.series(max_bins=10)
    assert s["bin_s"] == 0.001 and s["bins"] == 8  # 77 fine bins of 0.1 ms used, grouped by 10 (1, 2, 5 x 10^k)
    assert s["bad"] == [1, 0, 0, 0, 0, 1, 0, 1] and s["partial"] == [1, 0, 0, 0, 0, 0, 0, 0]
    assert set(s["layers"]) == {"ipv4", "tcp", "udp"} and s["layers"]["udp"]["bad"][5] == 1


def test_out_of_order_stamps_count_in_the_first_bin_and_empty_is_empty() -> None:
    t = Timeline()
    assert t.series()["bins"] == 0
    t.add(batch([1_000_000_000, 999_000_000, 1_002_000_000]), rows((2, Layer.TCP, Status.BAD)))
    s = t.series()
    assert s["bad"][0] == 1 and s["span_s"] == pytest.approx(0.002)


def tshark_bins(path: Path, bin_s: float) -> tuple[dict, dict]:
    """(layer -> bin -> checksums tshark calls bad, bin -> TCP ones holding the pseudo-header sum)."""
    need_tool("tshark")
    fields = ["frame.time_relative", "ip.checksum.status", "tcp.checksum.status", "udp.checksum.status",
              "ip.src", "ip.dst", "tcp.hdr_len", "tcp.len", "tcp.checksum"]  # fmt: skip
    opts = [x for p in ("ip", "tcp", "udp") for x in ("-o", f"{p}.check_checksum:TRUE")]
    r = subprocess.run(["tshark", "-r", str(path), *opts, "-T", "fields", "-E", "separator=,", *(x for f in fields for x in ("-e", f))],
                       capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    bin_ns = round(Decimal(repr(bin_s)) * 10**9)
    bad: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    partial: dict[int, int] = defaultdict(int)
    for line in r.stdout.splitlines():
        rel, ip_st, tcp_st, udp_st, src, dst, hdr, tlen, stored = line.split(",")
        b = int(Decimal(rel) * 10**9) // bin_ns
        for proto, st in (("ip", ip_st), ("tcp", tcp_st), ("udp", udp_st)):
            if st == "0":  # tshark: 0 bad, 1 good, 2 not verified
                bad[LAYER_OF_TSHARK[proto]][b] += 1
        if tcp_st == "0" and int(stored, 16) == pseudo_sum(src, dst, 6, int(hdr) + int(tlen)):
            partial[b] += 1
    return bad, partial


def pseudo_sum(src: str, dst: str, proto: int, length: int) -> int:
    """RFC 793's pseudo-header, folded, not inverted (what CHECKSUM_PARTIAL leaves in the field)."""
    s = sum(int.from_bytes(bytes(int(x) for x in a.split("."))[i : i + 2], "big") for a in (src, dst) for i in (0, 2))
    s += proto + length
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def page_series(tmp_path: Path, capture: Path) -> tuple[dict, str]:
    page = tmp_path / "pcap.html"
    r = subprocess.run([sys.executable, "-m", "badsum", "pcap", "--html", str(page), str(capture)],
                       capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 1, r.stderr
    text = page.read_text()
    (island,) = re.findall(r'<script type="application/json" id="csum-timeline">(.*?)</script>', text)
    return json.loads(island), text


@pytest.mark.parametrize("capture", [CAPTURE, LADDER], ids=lambda p: p.name)
def test_chart_bins_agree_with_tshark(tmp_path: Path, capture: Path) -> None:
    series, text = page_series(tmp_path, capture)
    bad, partial = tshark_bins(capture, series["bin_s"])
    assert series["bins"] <= 120 and bad
    for layer in ("ipv4", "tcp", "udp"):
        ours = series["layers"].get(layer, {"bad": [0] * series["bins"], "partial": [0] * series["bins"]})
        want = [bad[layer].get(i, 0) for i in range(series["bins"])]
        assert [b + p for b, p in zip(ours["bad"], ours["partial"])] == want, layer
        assert set(bad[layer]) <= set(range(series["bins"]))
    assert series["layers"]["tcp"]["partial"] == [partial.get(i, 0) for i in range(series["bins"])]
    # The drawn bars carry the same numbers as the data.
    drawn = {(c, int(i)): int(n) for c, i, n in re.findall(r'<rect class="(bad|partial)" data-bin="(\d+)" data-n="(\d+)"', text)}
    assert drawn == {(c, i): n for c in ("bad", "partial") for i, n in enumerate(series[c]) if n}


def test_the_burst_and_the_quiet_show_where_they_were(tmp_path: Path) -> None:
    series, _ = page_series(tmp_path, CAPTURE)
    w = series["bin_s"]
    assert w == 0.5 and series["bins"] == 80  # 40 s, at most 120 bins of 1, 2 or 5 x 10^k s
    partial_at = [i * w for i, n in enumerate(series["partial"]) if n]
    assert partial_at and 10 <= min(partial_at) and max(partial_at) < 12
    assert not any(series["bad"][int(25 / w) : int(40 / w)])  # nothing went wrong after 25 s


@pytest.mark.parametrize("capture", [CAPTURE, LADDER], ids=lambda p: p.name)
def test_fast_and_reference_paths_bin_alike(capture: Path) -> None:
    from badsum.analyze import ScanConfig, Scanner
    from badsum.capture import open_capture

    out = []
    for fast in (True, False):
        with open_capture(capture) as reader:
            out.append(Scanner(ScanConfig(fast=fast, timeline=True)).run(reader).timeline.series())
    assert out[0] == out[1] and sum(out[0]["bad"]) + sum(out[0]["partial"]) > 0
