"""The tcpdump subset `badsum follow -f` runs in the kernel: what it accepts, how it packs, what it refuses."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from badsum.kernel import filter as kf


def test_empty_expression_matches_everything() -> None:
    assert kf.parse("").empty and kf.parse("   ").empty


@pytest.mark.parametrize(
    ("text", "kind", "direction", "family", "proto", "port", "prefix"),
    [
        ("tcp", kf.TERM_PROTO, kf.DIR_ANY, 0, 6, 0, 0),
        ("icmp6", kf.TERM_PROTO, kf.DIR_ANY, 6, 58, 0, 0),
        ("ip6", kf.TERM_PROTO, kf.DIR_ANY, 6, 0, 0, 0),
        ("host 203.0.113.7", kf.TERM_HOST, kf.DIR_ANY, 4, 0, 0, 32),
        ("src host 2001:db8::1", kf.TERM_HOST, kf.DIR_SRC, 6, 0, 0, 128),
        ("dst net 198.51.100.0/24", kf.TERM_NET, kf.DIR_DST, 4, 0, 0, 24),
        ("net 198.51.100.9/24", kf.TERM_NET, kf.DIR_ANY, 4, 0, 0, 24),
        ("port 443", kf.TERM_PORT, kf.DIR_ANY, 0, 0, 443, 0),
        ("udp dst port 4789", kf.TERM_PORT, kf.DIR_DST, 0, 17, 4789, 0),
        ("ip6 host 2001:db8::2", kf.TERM_HOST, kf.DIR_ANY, 6, 0, 0, 128),
    ],
)
def test_one_term(text: str, kind: int, direction: int, family: int, proto: int, port: int, prefix: int) -> None:
    (t,) = kf.parse(text).terms
    assert (t.kind, t.direction, t.family, t.proto, t.port, t.prefix) == (kind, direction, family, proto, port, prefix)


def test_net_is_masked_and_addresses_packed() -> None:
    (t,) = kf.parse("net 198.51.100.9/24").terms
    assert t.addr[:4] == ipaddress.ip_address("198.51.100.0").packed and t.addr[4:] == bytes(12)
    (t6,) = kf.parse("host 2001:db8::7").terms
    assert t6.addr == ipaddress.ip_address("2001:db8::7").packed


def test_conjunction_and_ampersands() -> None:
    f = kf.parse("tcp port 443 and host 203.0.113.7 && dst port 443")
    assert [t.kind for t in f.terms] == [kf.TERM_PORT, kf.TERM_HOST, kf.TERM_PORT]
    assert f.terms[0].proto == 6


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("tcp or udp", "or"),
        ("not tcp", "not"),
        ("(tcp)", "("),
        ("portrange 1-2", "portrange"),
        ("ether host 00:11:22:33:44:55", "ether"),
        ("host example.org", "example.org"),
        ("port http", "http"),
        ("port 70000", "70000"),
        ("icmp port 1", "icmp port"),
        ("tcp host 192.0.2.1", "tcp host"),
        ("ip host 2001:db8::1", "IPv6 address under ip"),
        ("tcp and", "ends with 'and'"),
        ("tcp udp", "'udp'"),
        ("host 192.0.2.1 tcp", "'tcp' where 'and' was expected"),
        ("src", "must be followed"),
        ("host", "needs a value"),
        ("tcp[13] & 2 != 0", "tcp[13]"),
    ],
)
def test_outside_the_subset_is_refused_naming_the_word(text: str, word: str) -> None:
    with pytest.raises(kf.FilterError) as e:
        kf.parse(text)
    assert word in str(e.value)


def test_at_most_eight_terms() -> None:
    kf.parse(" and ".join(["tcp"] * kf.MAX_TERMS))
    with pytest.raises(kf.FilterError, match="at most 8"):
        kf.parse(" and ".join(["tcp"] * (kf.MAX_TERMS + 1)))


def test_config_layout() -> None:
    f = kf.parse("udp dst port 4789 and src host 192.0.2.1")
    raw = kf.pack_config(f, 1600, 500, [(4789, 1), (6081, 2)])
    assert len(raw) == kf.CONFIG_SIZE == 232
    n_terms, snaplen, rate, flags = struct.unpack_from("<IIII", raw)
    assert (n_terms, snaplen, rate, flags) == (2, 1600, 500, 0)
    assert struct.unpack_from("<8H", raw, 16)[:3] == (4789, 6081, 0)
    assert struct.unpack_from("<8B", raw, 32)[:3] == (1, 2, 0)
    kind, direction, family, proto, port, prefix = struct.unpack_from("<BBBBHB", raw, 40)
    assert (kind, direction, proto, port) == (kf.TERM_PORT, kf.DIR_DST, 17, 4789)


def test_tunnel_ports_keep_vxlan_and_geneve_only() -> None:
    assert kf.tunnel_ports({4789: 1, 8472: 1, 6081: 2, 4754: 3}) == [(4789, 1), (6081, 2), (8472, 1)]
    with pytest.raises(kf.FilterError):
        kf.tunnel_ports({p: 1 for p in range(10000, 10009)})
