"""A bounded LRU table driven a batch of keys at a time, with `Bounded`'s exact semantics.

The detectors that count per flow or per tunnel saw a new key for nearly every UDP packet of an
ephemeral-port workload; one `Bounded.get`/`put` and one Python object per key cost more than the
checksum scan. `BatchLru` keeps only the key -> slot mapping; the values live in the caller's
numpy arrays, indexed by slot, and a whole batch is looked up and inserted with array operations.

The result is the one `Bounded` gives when the keys of a batch are `get()` (and `put()` when
absent) one after the other, in the order given: the same entries survive, in the same LRU order,
with the same `created` and `evicted` counts (tests/flows/test_lru.py holds them equal). When an
eviction would reach an entry the same batch touches later, the batch is replayed key by key.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from badsum.flows.facts import _M1, _M2

_S30, _S27 = np.uint64(30), np.uint64(27)


def fold_keys(*words: np.ndarray) -> np.ndarray:
    """One well-spread uint64 per row from several uint64 columns (splitmix64 rounds)."""
    # _mix(k * _M1 ^ w) per column, in place: the same arithmetic without a temporary per step
    k = np.zeros(len(words[0]), dtype=np.uint64)
    t = np.empty_like(k)
    for w in words:
        np.multiply(k, _M1, out=k)
        np.bitwise_xor(k, w if w.dtype == np.uint64 else w.astype(np.uint64), out=k)
        np.right_shift(k, _S30, out=t)
        np.bitwise_xor(k, t, out=k)
        np.multiply(k, _M2, out=k)
        np.right_shift(k, _S27, out=t)
        np.bitwise_xor(k, t, out=k)
    return k


def _insert_sorted(a: np.ndarray, at: np.ndarray, values: np.ndarray) -> np.ndarray:
    """np.insert(a, at, values) for a non-decreasing `at` (values in the order given)."""
    n = len(a) + len(values)
    pos = at + np.arange(len(values))
    out = np.empty(n, dtype=a.dtype)
    old = np.ones(n, dtype=bool)
    old[pos] = False
    out[pos] = values
    out[old] = a
    return out


def lex_groups(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with equal columns grouped, groups in the order np.unique(axis=0) gives them (columns
    compared left to right): (index of each group's first row, group of each row)."""
    o = np.lexsort(cols[::-1])  # stable: equal rows keep their order, the first one leads
    new = np.zeros(len(o), dtype=bool)
    if len(o):
        new[0] = True
    for c in cols:
        s = c[o]
        new[1:] |= s[1:] != s[:-1]
    group = np.empty(len(o), dtype=np.int64)
    group[o] = np.cumsum(new) - 1
    return o[new], group


class BatchLru:
    """Key -> slot (0 .. cap-1) with LRU eviction; `touch(keys)` takes a batch of unique keys."""

    def __init__(self, cap: int, dtype: np.dtype | type) -> None:
        self.cap = max(int(cap), 1)
        self.dtype = np.dtype(dtype)
        self.keys = np.zeros(self.cap, dtype=self.dtype)
        """The key held by each slot (meaningful for the slots in `order()`)."""
        self.created = 0
        self.evicted = 0
        self._age = np.zeros(0, dtype=np.int64)  # the live slots, least recently used first
        self._free = np.arange(self.cap, dtype=np.int64)  # slots no live entry holds
        self._sorted = np.zeros(0, dtype=self.dtype)  # the live keys, sorted, for searchsorted
        self._slot_of = np.zeros(0, dtype=np.int64)
        self._mark = np.zeros(self.cap, dtype=bool)  # scratch, all False between calls

    def __len__(self) -> int:
        return len(self._age)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The slot of each key, -1 where absent; nothing is touched."""
        keys = np.asarray(keys, dtype=self.dtype)
        out = np.full(len(keys), -1, dtype=np.int64)
        n = len(self._sorted)
        if n == 0 or len(keys) == 0:
            return out
        pos = np.minimum(np.searchsorted(self._sorted, keys), n - 1)
        return np.where(self._sorted[pos] == keys, self._slot_of[pos], out)

    def order(self) -> np.ndarray:
        """The live slots, least recently used first (the iteration order of `Bounded.values()`)."""
        return self._age.copy()

    def touch(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Get-or-put each key in order: (slot per key, True where the entry is new and its values
        must be reset). The slot is -1 for a key whose entry the same batch evicted again."""
        keys = np.asarray(keys, dtype=self.dtype)
        slots = self.lookup(keys)
        fresh = slots < 0
        ins = int(np.count_nonzero(fresh))
        hits = slots[~fresh] if ins < len(slots) else slots[:0]
        age = self._age
        mark = self._mark
        if len(hits):
            mark[hits] = True
            touched = mark[age]
            mark[hits] = False
            rest = age[~touched]  # entries this batch does not touch, oldest first
        else:
            touched, rest = None, age
        excess = len(age) + ins - self.cap
        evict = rest[:0]
        if excess > 0:
            if excess > len(rest):
                return self._replay(keys)  # evictions reach entries of this very batch
            evict = rest[:excess]
            if len(hits) and int(np.argmax(touched)) < int(np.flatnonzero(~touched)[excess - 1]):
                return self._replay(keys)  # an entry touched later would have been evicted first
        # Each eviction frees the slot an insertion then takes (never more evictions than insertions).
        free = np.concatenate([evict, self._free[: ins - len(evict)]])
        self._free = self._free[ins - len(evict) :]
        slots[fresh] = free
        self.keys[free] = keys[fresh]
        self._age = np.concatenate([rest[len(evict) :], slots])
        self.created += ins
        self.evicted += len(evict)
        # Merge into the sorted index rather than sort it again: O(table) memory moves per batch.
        sk, so = self._sorted, self._slot_of
        if len(evict):
            mark[evict] = True
            keep = ~mark[so]
            mark[evict] = False
            sk, so = sk[keep], so[keep]
        if ins:
            nk, ns = keys[fresh], free
            o = np.argsort(nk, kind="stable")
            nk, ns = nk[o], ns[o]
            at = np.searchsorted(sk, nk)
            sk, so = _insert_sorted(sk, at, nk), _insert_sorted(so, at, ns)
        self._sorted, self._slot_of = sk, so
        return slots, fresh

    def _replay(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`Bounded`'s get/put key by key: the exact answer when evictions and hits interleave."""
        table: OrderedDict = OrderedDict(zip(self.keys[self._age].tolist(), self._age.tolist()))
        free = self._free.tolist()[::-1]
        slots = np.full(len(keys), -1, dtype=np.int64)
        fresh = np.zeros(len(keys), dtype=bool)
        owner: dict[int, int] = {}  # slot -> index of the key of this batch that holds it
        for i, k in enumerate(keys.tolist()):
            s = table.get(k)
            if s is not None:
                table.move_to_end(k)
            else:
                if len(table) >= self.cap:  # Bounded puts, then evicts the oldest: never the new key (cap >= 1)
                    _, gone = table.popitem(last=False)
                    self.evicted += 1
                    free.append(gone)
                    if gone in owner:
                        slots[owner.pop(gone)] = -1
                s = free.pop()
                table[k] = s
                fresh[i] = True
                self.created += 1
            slots[i] = s
            owner[s] = i
        self._age = np.fromiter(table.values(), dtype=np.int64, count=len(table))
        self._free = np.array(free[::-1], dtype=np.int64)
        alive = slots >= 0
        self.keys[slots[alive]] = keys[alive]
        k = self.keys[self._age]
        o = np.argsort(k, kind="stable")
        self._sorted, self._slot_of = k[o], self._age[o]
        return slots, fresh
