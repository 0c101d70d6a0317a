"""KB-004: reading kube-proxy-style MASQUERADE rules and the unmark fix (iptables-save text)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from badsum.host.model import Namespace
from badsum.rules.model import FixAction


@dataclass(frozen=True, slots=True)
class Masquerade:
    """A MASQUERADE --random-fully rule gated by a mark (kube-proxy's KUBE-POSTROUTING, for one)."""

    chain: str
    """The nat chain holding it."""
    position: int
    """1-based position in the chain, as `iptables -I/-R CHAIN N` counts."""
    mark: int
    """The mark bit it requires (`-m mark --mark M/M`)."""
    tokens: tuple[str, ...]
    """The rule after `-A CHAIN`."""


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def _mark_match(tokens: list[str]) -> tuple[int, bool] | None:
    """`-m mark [!] --mark V/M`: (mark, negated) when V == M (a mark bit that must be set)."""
    for i, tok in enumerate(tokens[:-1]):
        if tok == "--mark":
            value, _, mask = tokens[i + 1].partition("/")
            v, m = _int(value), _int(mask or value)
            if v is not None and v == m and v:
                return v, i > 0 and tokens[i - 1] == "!"
    return None


def _clears(tokens: list[str], mark: int) -> bool:
    """The rule clears the `mark` bits of a packet that has them.

    `--xor-mark M` (iptables-save prints `--set-xmark M/0x0`) toggles them off; `--set-xmark V/M`
    and `--set-mark V/M` clear a bit that is in the mask and not in the value.
    """
    for i, tok in enumerate(tokens[:-1]):
        arg = tokens[i + 1]
        if tok == "--xor-mark" and _int(arg) == mark:
            return True
        if tok in ("--set-xmark", "--set-mark"):
            value, _, mask = arg.partition("/")
            v, m = _int(value), (_int(mask) if mask else 0xFFFFFFFF)
            if v is None or m is None:
                continue
            cleared = (m & mark) == mark and not v & mark
            toggled = tok == "--set-xmark" and not m & mark and (v & mark) == mark
            if cleared or toggled:
                return True
    return False


def appended_rules(lines: Iterable[str] | None) -> Iterator[list[str]]:
    """The words of each `-A CHAIN ...` line of iptables-save / ip6tables-save output, quoting
    honoured where it parses (a comment with an odd quote falls back to plain splitting)."""
    for line in lines or ():
        if not line.startswith("-A "):
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            tokens = line.split()
        if len(tokens) >= 2:
            yield tokens


def unguarded_masquerades(nat: Iterable[str]) -> list[Masquerade]:
    """MASQUERADE --random-fully rules gated by a mark, with nothing earlier in the chain unmarking it."""
    chains: dict[str, list[list[str]]] = {}
    for tokens in appended_rules(nat):
        chains.setdefault(tokens[1], []).append(tokens[2:])
    found = []
    for chain, rules in chains.items():
        for pos, tokens in enumerate(rules, 1):
            if "MASQUERADE" not in tokens or "--random-fully" not in tokens:
                continue
            gate = _mark_match(tokens)
            if gate is None or gate[1]:
                continue
            mark = gate[0]
            guarded = False
            for earlier in rules[: pos - 1]:
                m = _mark_match(earlier)
                returns = "-j" in earlier and earlier[earlier.index("-j") + 1] == "RETURN"
                if _clears(earlier, mark) or (returns and m is not None and m[0] == mark and not m[1]):
                    guarded = True
                    break
            if not guarded:
                found.append(Masquerade(chain, pos, mark, tuple(tokens)))
    return found


def _without_mark(tokens: tuple[str, ...], mark: int) -> list[str]:
    """The rule spec with its `-m mark --mark M/M` match taken out (kubernetes#92035's MASQUERADE rule)."""
    out = list(tokens)
    for i in range(len(out) - 1):
        if out[i] == "--mark" and (i == 0 or out[i - 1] != "!") and _mark_match(out[i: i + 2]) == (mark, False):
            start = i - 2 if i >= 2 and out[i - 2: i] == ["-m", "mark"] else i
            return out[:start] + out[i + 2:]
    return out


def unmark_fix(ns: Namespace, masq: Masquerade) -> list[FixAction]:
    """kubernetes#92035 in place: RETURN unless marked, clear the mark, masquerade without the mark match."""
    mark = f"{masq.mark:#x}"
    cost = ("kube-proxy (or the CNI) owns this chain and rewrites it on its next sync; the lasting fix is "
            "kube-proxy >= 1.16.13 / 1.17.9 / 1.18.6 / 1.19")  # fmt: skip
    p = masq.position
    specs = [
        ["-I", masq.chain, str(p), "-m", "mark", "!", "--mark", f"{mark}/{mark}", "-j", "RETURN"],
        ["-I", masq.chain, str(p + 1), "-j", "MARK", "--xor-mark", mark],
        ["-R", masq.chain, str(p + 2), *_without_mark(masq.tokens, masq.mark)],
    ]
    return [FixAction("iptables-rule", ns.id, ns.enter, "nat", "\0".join(spec), "", cost) for spec in specs]
