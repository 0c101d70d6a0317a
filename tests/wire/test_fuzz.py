"""Decoding never raises and never hangs on untrusted bytes (STYLE.md: Hypothesis fuzz tests)."""

from __future__ import annotations

from builders import fragments_case, zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badsum.checksum.detailed import DetailedJudge
from badsum.wire.frame import decode_frame
from badsum.wire.link import SUPPORTED

SEEDS = [c.frame for c in zoo()] + fragments_case()[0]
LINKTYPES = sorted(SUPPORTED) + [147, 65535]


def test_every_truncation_of_every_seed_decodes() -> None:
    # Deterministic sweep: each seed frame (tunnels included) cut at every offset.
    for frame in SEEDS:
        for cut in range(len(frame) + 1):
            judge = DetailedJudge()
            res = judge.judge(1, 0, frame[:cut], len(frame), 1)
            assert all(v.frame == 1 for v in res.verdicts)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.integers(min_value=0, max_value=2000), st.binary(max_size=64), st.sampled_from(LINKTYPES))
def test_truncate_and_append_random_bytes(seed: bytes, cut: int, tail: bytes, linktype: int) -> None:
    data = seed[: cut % (len(seed) + 1)] + tail
    frame = decode_frame(data, linktype, len(data) + (cut & 7))
    assert frame.data == data
    DetailedJudge().judge(1, 0, data, len(data), linktype)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(LINKTYPES))
def test_random_bytes(data: bytes, linktype: int) -> None:
    DetailedJudge().judge(1, 0, data, len(data), linktype)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 1500), st.integers(0, 255)), max_size=8))
def test_byte_flips_in_headers(seed: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for pos, val in flips:
        if data:
            data[pos % len(data)] = val
    DetailedJudge().judge(1, 0, bytes(data), len(data), 1)
