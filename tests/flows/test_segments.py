"""The retransmission finder (SegmentTable, C `seg_match`) against a plain dict walked in frame order."""

from __future__ import annotations

import numpy as np
import pytest

from badsum.flows.base import SegmentTable
from badsum.flows.facts import FACTS_DTYPE, PROTO_TCP, PROTO_UDP
from badsum.scan import _fastscan

M64 = (1 << 64) - 1


def _facts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = np.zeros(n, dtype=FACTS_DTYPE)
    f["frame"] = np.arange(1, n + 1)
    f["ts_ns"] = np.cumsum(rng.integers(0, 2_000_000, n))
    f["proto"] = rng.choice([PROTO_TCP, PROTO_TCP, PROTO_TCP, PROTO_UDP], n)
    f["seq"] = rng.integers(0, 40, n)  # few sequence numbers and ports: many repeats
    f["sport"], f["dport"] = rng.integers(1000, 1004, n), rng.integers(80, 82, n)
    f["payload"] = rng.integers(0, 3, n) * 500
    f["ip_len"] = f["payload"] + 40
    status = (rng.random(n) < 0.2).astype(np.uint8) * rng.integers(1, 3, n).astype(np.uint8)
    return f, status


def _slot(key: int, bits: int) -> int:
    """The documented slot: the splitmix64 finaliser of key * M1, low bits (a colliding segment replaces the older)."""
    x = (key * 0x9E3779B97F4A7C15) & M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    return x & ((1 << bits) - 1)


def _oracle(f: np.ndarray, status: np.ndarray | None, min_payload: int, min_ip_len: int, bits: int = 16) -> list[tuple[int, ...]]:
    """Every repeat of a stored segment, walking a direct-mapped table of slot -> (key, entry) in frame order."""
    slots: dict[int, tuple[int, list[int]]] = {}
    out = []
    for i, r in enumerate(f):
        if r["proto"] != PROTO_TCP or r["payload"] < min_payload or r["ip_len"] < min_ip_len:
            continue
        key = int(r["seq"]) << 32 | int(r["sport"]) << 16 | int(r["dport"])
        s = _slot(key, bits)
        held = slots.get(s)
        if held is not None and held[0] == key:
            out.append((i, *held[1]))
            held[1][0] = int(r["ts_ns"])
        elif status is None or status[i]:
            slots[s] = (key, [int(r["ts_ns"]), int(r["frame"]), int(r["ts_ns"]), 0 if status is None else int(status[i])])
    return out


@pytest.mark.parametrize("filtered", [False, True])
@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_repeats_in_frame_order_whatever_the_batches(filtered: bool, batch: int) -> None:
    f, status = _facts(1000, seed=batch)
    st = status if filtered else None
    table = SegmentTable(16, filtered=filtered)
    got = []
    for start in range(0, len(f), batch):
        idx, prev = table.match(f[start : start + batch], None if st is None else st[start : start + batch], 1, 0)
        got += [(start + int(i), *map(int, p)) for i, p in zip(idx, prev)]
    expected = _oracle(f, st, 1, 0)
    assert got == expected and len(expected) > 50


def test_min_ip_len_selects_large_segments() -> None:
    f, _ = _facts(500, seed=3)
    idx, _ = SegmentTable(16).match(f, None, 0, 540)
    assert [i for i, *_ in _oracle(f, None, 0, 540)] == idx.tolist() and (f["ip_len"][idx] >= 540).all()


def test_bad_arguments_raise() -> None:
    f, status = _facts(10, seed=1)
    table, idx, prev = np.zeros((16, 4), np.uint64), np.zeros(10, np.int64), np.zeros(40, np.int64)
    with pytest.raises(ValueError):
        _fastscan.seg_match(f, 0, 0, status, np.zeros((15, 4), np.uint64), None, idx, prev)  # not 2**k slots
    with pytest.raises(ValueError):
        _fastscan.seg_match(f, 0, 0, status[:5], table, None, idx, prev)
    with pytest.raises(ValueError):
        _fastscan.seg_match(f, 0, 0, None, table, np.zeros(1 << 14, np.uint64), idx, prev)  # a filter needs a status
    with pytest.raises(TypeError):
        _fastscan.seg_match(f, 0, 0, status, table.astype(np.float64), None, idx, prev)
    with pytest.raises(IndexError):
        _fastscan.flow_keys(f, np.array([10], np.int64), False, np.zeros(1, np.uint64), np.zeros(1, np.uint8))
