"""Kernel code addresses -> function names, from /proc/kallsyms (root sees real addresses)."""

from __future__ import annotations

from bisect import bisect_right


class Symbols:
    """Text symbols of the running kernel, read once when first needed."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        self.path = path
        self._addrs: list[int] | None = None
        self._names: list[str] = []

    def _load(self) -> None:
        pairs: list[tuple[int, str]] = []
        try:
            with open(self.path, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in ("t", "T"):
                        addr = int(parts[0], 16)
                        if addr:
                            pairs.append((addr, parts[2]))
        except (OSError, ValueError):
            pairs = []
        pairs.sort()
        self._addrs = [a for a, _ in pairs]
        self._names = [n for _, n in pairs]

    def name(self, addr: int) -> str:
        """`tcp_v4_rcv+0x1a3`, or the address in hex when no symbol is known (addresses hidden)."""
        if not addr:
            return ""
        if self._addrs is None:
            self._load()
        assert self._addrs is not None
        i = bisect_right(self._addrs, addr) - 1
        if i < 0 or not self._addrs:
            return f"0x{addr:x}"
        off = addr - self._addrs[i]
        if off > 1 << 20:  # past the last function of a region: not a real match
            return f"0x{addr:x}"
        return f"{self._names[i]}+0x{off:x}"


def function(located: str) -> str:
    """`tcp_v4_rcv+0x1a3` -> `tcp_v4_rcv` (how host/drops.py names locations)."""
    return located.split("+", 1)[0]
