"""The packet filter `badsum follow -f` takes: a subset of tcpdump's language, run in the kernel.

The subset (docs/cli.md, `badsum follow`):

    expression := term { "and" term }          ("&&" works too)
    term       := proto
                | [ip|ip6] [src|dst] host ADDRESS
                | [ip|ip6] [src|dst] net ADDRESS/PREFIX
                | [tcp|udp|sctp] [src|dst] port NUMBER
    proto      := tcp | udp | sctp | icmp | icmp6 | gre | ip | ip6

A packet matches when every term holds for its outer headers, or every term holds for the headers
inside its VXLAN, Geneve, GRE or IP-in-IP encapsulation. `or`, `not`, parentheses, ranges and
byte offsets are refused with a message naming the word, not approximated: a filter that silently
matched more or less than typed would send the user after the wrong packets.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

MAX_TERMS = 8
MAX_TUNNEL_PORTS = 8
TERM_PROTO, TERM_HOST, TERM_NET, TERM_PORT = 1, 2, 3, 4
DIR_ANY, DIR_SRC, DIR_DST = 0, 1, 2

#: name -> (IP protocol or 0 for any, family or 0 for any)
PROTOS = {
    "tcp": (6, 0),
    "udp": (17, 0),
    "sctp": (132, 0),
    "icmp": (1, 4),
    "icmp6": (58, 6),
    "gre": (47, 0),
    "ip": (0, 4),
    "ip6": (0, 6),
}
_PORT_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132}
_TERM = struct.Struct("<BBBBHBx16s")
_CONFIG_HEAD = struct.Struct("<IIII")
CONFIG_SIZE = _CONFIG_HEAD.size + 2 * MAX_TUNNEL_PORTS + MAX_TUNNEL_PORTS + MAX_TERMS * _TERM.size

SUBSET = ("the supported subset is terms joined by 'and': tcp|udp|sctp|icmp|icmp6|gre|ip|ip6, "
          "[src|dst] host ADDR, [src|dst] net ADDR/LEN, [tcp|udp|sctp] [src|dst] port N")  # fmt: skip


class FilterError(ValueError):
    """The expression is outside the subset, or malformed; the message says which word."""


@dataclass(frozen=True, slots=True)
class Term:
    kind: int
    direction: int = DIR_ANY
    family: int = 0
    proto: int = 0
    port: int = 0
    prefix: int = 0
    addr: bytes = bytes(16)
    text: str = ""

    def pack(self) -> bytes:
        return _TERM.pack(self.kind, self.direction, self.family, self.proto, self.port, self.prefix, self.addr)


@dataclass(frozen=True, slots=True)
class Filter:
    terms: tuple[Term, ...] = ()
    text: str = ""

    @property
    def empty(self) -> bool:
        return not self.terms


def parse(text: str) -> Filter:
    words = text.replace("&&", " and ").replace("(", " ( ").replace(")", " ) ").split()
    if not words:
        return Filter((), "")
    terms: list[Term] = []
    i = 0
    while i < len(words):
        term, i = _term(words, i)
        terms.append(term)
        if i < len(words):
            if words[i] != "and":
                raise FilterError(f"'{words[i]}' where 'and' was expected: {SUBSET}")
            i += 1
            if i == len(words):
                raise FilterError("the expression ends with 'and'")
    if len(terms) > MAX_TERMS:
        raise FilterError(f"{len(terms)} terms: at most {MAX_TERMS}")
    return Filter(tuple(terms), " ".join(words))


def _term(words: list[str], i: int) -> tuple[Term, int]:
    start = i
    w = words[i]
    if w in ("or", "not", "!", "||", "(", ")", "less", "greater", "portrange", "ether", "vlan", "proto", "broadcast",
             "multicast", "arp", "inbound", "outbound"):  # fmt: skip
        raise FilterError(f"'{w}' is not in the subset badsum follow runs in the kernel: {SUBSET}")
    family = proto = 0
    proto_word = None
    if w in PROTOS:
        proto_word = w
        i += 1
        if i == len(words) or words[i] == "and":
            p, fam = PROTOS[w]
            return Term(TERM_PROTO, family=fam, proto=p, text=w), i
        w = words[i]
    direction = DIR_ANY
    if w in ("src", "dst"):
        direction = DIR_SRC if w == "src" else DIR_DST
        i += 1
        if i == len(words):
            raise FilterError(f"'{words[i - 1]}' must be followed by host, net or port")
        w = words[i]
    if w not in ("host", "net", "port"):
        raise FilterError(f"'{w}' is not in the subset badsum follow runs in the kernel: {SUBSET}")
    if i + 1 >= len(words):
        raise FilterError(f"'{w}' needs a value")
    value = words[i + 1]
    text = " ".join(words[start : i + 2])
    if w == "port":
        if proto_word is not None:
            if proto_word not in _PORT_PROTOS:
                raise FilterError(f"'{proto_word} port': ports belong to tcp, udp or sctp")
            proto = _PORT_PROTOS[proto_word]
        if not value.isdigit() or not 0 <= int(value) <= 65535:
            raise FilterError(f"port '{value}': a number from 0 to 65535 (service names are not looked up)")
        return Term(TERM_PORT, direction, 0, proto, int(value), text=text), i + 2
    if proto_word is not None:
        if proto_word not in ("ip", "ip6"):
            raise FilterError(f"'{proto_word} {w}': only ip or ip6 may qualify host and net")
        family = PROTOS[proto_word][1]
    try:
        if w == "host":
            addr = ipaddress.ip_address(value)
            prefix = addr.max_prefixlen
        else:
            net = ipaddress.ip_network(value, strict=False)
            addr, prefix = net.network_address, net.prefixlen
    except ValueError:
        raise FilterError(f"'{value}' is not an IP {'address' if w == 'host' else 'network (ADDR/LEN)'} "
                          "(host names are not looked up)") from None  # fmt: skip
    if family and family != addr.version:
        raise FilterError(f"'{text}': an IPv{addr.version} address under {proto_word}")
    raw = addr.packed + bytes(16 - len(addr.packed))
    return Term(TERM_HOST if w == "host" else TERM_NET, direction, addr.version, 0, 0, prefix, raw, text), i + 2


def tunnel_ports(by_port: dict[int, int]) -> list[tuple[int, int]]:
    """The (port, kind) pairs the kernel filter looks inside: VXLAN (1) and Geneve (2) only."""
    pairs = sorted((p, int(k)) for p, k in by_port.items() if int(k) in (1, 2))
    if len(pairs) > MAX_TUNNEL_PORTS:
        raise FilterError(f"{len(pairs)} tunnel ports: at most {MAX_TUNNEL_PORTS} can be looked inside in the kernel")
    return pairs


def pack_config(f: Filter, snaplen: int, rate: int, ports: list[tuple[int, int]]) -> bytes:
    """`struct config` of kernel/bpf/follow_event.h."""
    out = bytearray(_CONFIG_HEAD.pack(len(f.terms), snaplen, rate, 0))
    padded = ports + [(0, 0)] * (MAX_TUNNEL_PORTS - len(ports))
    out += struct.pack(f"<{MAX_TUNNEL_PORTS}H", *(p for p, _ in padded))
    out += struct.pack(f"<{MAX_TUNNEL_PORTS}B", *(k for _, k in padded))
    for t in f.terms:
        out += t.pack()
    out += bytes(CONFIG_SIZE - len(out))
    return bytes(out)
