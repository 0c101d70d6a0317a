"""RFC 1071 arithmetic for the detailed path (the fast path has its own C loop)."""

from __future__ import annotations


def ones_sum(data: bytes | memoryview) -> int:
    """16-bit one's complement sum of big-endian words, folded to [0, 0xffff].

    Uses 2**16 == 1 (mod 0xffff): the sum of the words is the big integer mod 0xffff, except
    that a non-zero sum that is a multiple of 0xffff folds to 0xffff, not 0.
    """
    if len(data) & 1:
        data = bytes(data) + b"\0"
    n = int.from_bytes(data, "big")
    if n == 0:
        return 0
    r = n % 0xFFFF
    return r if r else 0xFFFF


def add(a: int, b: int) -> int:
    """One's complement addition of two folded sums."""
    s = a + b
    s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo_v4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """IPv4 pseudo-header sum (RFC 793 3.1): src, dst, zero, protocol, 16-bit length."""
    return ones_sum(src + dst + bytes((0, proto)) + (length & 0xFFFF).to_bytes(2, "big"))


def pseudo_v6(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """IPv6 pseudo-header sum (RFC 8200 8.1): src, dst, 32-bit length, zeros, next header."""
    return ones_sum(src + dst + (length & 0xFFFFFFFF).to_bytes(4, "big") + bytes((0, 0, 0, proto)))


def verifies(total: int) -> bool:
    """A checksum verifies when the sum over everything, field included, folds to 0xffff."""
    return total == 0xFFFF


def complement(s: int) -> int:
    return (~s) & 0xFFFF
