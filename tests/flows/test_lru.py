"""BatchLru against Bounded: the same keys fed batch by batch leave the same table, in the same
LRU order, with the same created/evicted counts (the detectors' stats depend on them)."""

from __future__ import annotations

import numpy as np
import pytest

from badsum.flows.base import Bounded
from badsum.flows.lru import BatchLru, lex_groups


def _reference(batches: list[np.ndarray], cap: int) -> tuple[list, int, int, list[list[bool]]]:
    b: Bounded = Bounded(cap)
    fresh_all = []
    for keys in batches:
        fresh = []
        for k in keys.tolist():
            if b.get(k) is None:
                b.put(k, k)
                fresh.append(True)
            else:
                fresh.append(False)
        fresh_all.append(fresh)
    return list(b.data), b.created, b.evicted, fresh_all


def _batches(rng: np.random.Generator, n: int, universe: int) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        size = int(rng.integers(0, 40))
        out.append(np.unique(rng.integers(0, universe, size=size).astype(np.uint64)))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_same_table_as_bounded(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cap = int(rng.choice([1, 2, 3, 7, 16, 50]))
    batches = _batches(rng, 30, int(rng.choice([8, 30, 200, 10_000])))
    keys, created, evicted, fresh_ref = _reference(batches, cap)
    lru = BatchLru(cap, np.uint64)
    values = np.zeros(cap, dtype=np.uint64)  # what a caller keeps per slot: here the key itself
    for keys_b, want_fresh in zip(batches, fresh_ref):
        slots, fresh = lru.touch(keys_b)
        assert fresh.tolist() == want_fresh
        alive = slots >= 0
        assert len(set(slots[alive].tolist())) == int(alive.sum())
        values[slots[alive & fresh]] = keys_b[alive & fresh]
        assert (values[slots[alive]] == keys_b[alive]).all()
    order = lru.order()
    assert lru.keys[order].tolist() == keys and values[order].tolist() == keys
    assert (lru.created, lru.evicted, len(lru)) == (created, evicted, len(keys))
    assert (lru.lookup(np.array(keys, dtype=np.uint64)) == order).all()


def test_lex_groups_as_unique_axis0() -> None:
    rng = np.random.default_rng(1)
    w = rng.integers(0, 4, size=(300, 3)).astype(np.uint64) << np.uint64(62)
    w[:, 2] |= rng.integers(0, 3, size=300).astype(np.uint64)
    first, group = lex_groups(*w.T)
    _, want_first, want_inverse = np.unique(w, axis=0, return_index=True, return_inverse=True)
    assert first.tolist() == want_first.tolist() and group.tolist() == want_inverse.ravel().tolist()
    assert lex_groups(np.zeros(0, dtype=np.uint64))[0].tolist() == []
