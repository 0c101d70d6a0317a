"""The retransmission finder (SegmentTable, C `seg_match`) against a plain dict walked in frame order."""

from __future__ import annotations

import numpy as np
import pytest

from badsum.flows.base import SegmentTable
from badsum.flows.facts import FACTS_DTYPE, PROTO_TCP, PROTO_UDP
from badsum.native import _fastscan

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


def _echo_facts(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.zeros(n, dtype=FACTS_DTYPE)
    f["frame"] = np.arange(1, n + 1)
    f["ts_ns"] = np.cumsum(rng.integers(1, 1000, n))
    f["ipver"] = 4
    f["proto"] = rng.choice([1, 1, 1, PROTO_UDP], n)
    f["icmp_type"] = np.where(f["proto"] == 1, rng.choice([0, 8, 3], n), 0)
    raw = f.view(np.uint8).reshape(n, -1)
    src, dst = FACTS_DTYPE.fields["src"][1], FACTS_DTYPE.fields["dst"][1]
    hosts = rng.integers(1, 6, (n, 2))  # five hosts: every pair repeats, both directions
    raw[:, src], raw[:, dst] = hosts[:, 0], hosts[:, 1]
    return f


def test_pair_count_matches_a_dict_walked_in_order() -> None:
    """PairDetector's C counting equals the rule written out per packet (a table large enough for no collision)."""
    from badsum.flows.base import Limits, host_pair_keys
    from badsum.flows.pairs import REP0, REQ0, UDP0, PairDetector

    f = _echo_facts(3000, 5)
    det = PairDetector(Limits(host_pairs=1 << 16))
    icmp, udp = np.flatnonzero(f["proto"] == 1), np.flatnonzero(f["proto"] == PROTO_UDP)
    det._count(f, icmp[:1500], udp=False)
    det._count(f, udp, udp=True)
    det._count(f, icmp[1500:], udp=False)
    keys, dirs = host_pair_keys(f)
    ref: dict[int, list[int]] = {}
    init: dict[int, tuple[int, int]] = {}  # key -> (initiator direction, first frame)
    order = [(i, False) for i in icmp[:1500]] + [(i, True) for i in udp] + [(i, False) for i in icmp[1500:]]
    for i, is_udp in order:
        k, d, t = int(keys[i]) | 1, int(dirs[i]), int(f["icmp_type"][i])
        if is_udp:
            if k in ref:
                ref[k][UDP0 + d] += 1
            continue
        if t not in (0, 8):
            continue
        if k not in ref:
            ref[k] = [0] * 6
            init[k] = (d if t == 8 else 1 - d, int(f["frame"][i]))
        ref[k][(REQ0 if t == 8 else REP0) + d] += 1
    occ = np.flatnonzero(det.key != 0)
    got = {int(det.key[s]): det.counts[s].tolist() for s in occ}
    assert got == ref and det.created == len(ref) and det.evicted == 0
    for s in occ:
        assert (int(det.a_dir[s]), int(det.first[s, 0])) == init[int(det.key[s])]


def test_pmtu_rows_key_what_an_icmp_quote_can_match() -> None:
    """A quote's row (from the q_* fields) keys like the packet itself: direction, protocol and, for TCP and
    UDP only, ports count; the sequence number only for TCP."""
    from badsum.flows.pmtu import pmtu_rows, quoted_row

    f = np.zeros(4, dtype=FACTS_DTYPE)
    f["proto"] = [PROTO_TCP, PROTO_UDP, 132, PROTO_TCP]
    f["sport"], f["dport"], f["seq"], f["ipid"], f["ip_len"] = 1000, 80, 7, 99, 1500
    f["src"], f["dst"] = b"\x0a\0\0\x01", b"\x0a\0\0\x02"
    f["frame"] = [1, 2, 3, 4]
    f[3]["src"], f[3]["dst"] = f[0]["dst"], f[0]["src"]  # the same TCP flow, other direction
    rows = pmtu_rows(f)
    assert rows["frame"].tolist() == [1, 2, 3, 4] and rows["ip_len"].tolist() == [1500] * 4
    assert rows["seq"].tolist() == [7, 0, 0, 7] and rows["ipid"].tolist() == [99] * 4
    assert len(set(rows["key"].tolist())) == 4
    for i in range(3):
        err = np.zeros((), dtype=FACTS_DTYPE)
        for a, b in (("src", "q_src"), ("dst", "q_dst"), ("sport", "q_sport"), ("dport", "q_dport"),
                     ("proto", "q_proto"), ("seq", "q_seq"), ("ipid", "q_ipid")):  # fmt: skip
            err[b] = f[i][a]
        if f[i]["proto"] == 132:
            err["q_sport"] = 1  # SCTP ports are quoted but the fact has none: they must not count
        q = quoted_row(err)
        assert q["key"] == rows["key"][i] and q["seq"] == rows["seq"][i]
        err["q_proto"] = PROTO_UDP if f[i]["proto"] != PROTO_UDP else PROTO_TCP
        assert quoted_row(err)["key"] != rows["key"][i]
