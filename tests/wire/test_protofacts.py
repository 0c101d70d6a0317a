"""The registry of protocol facts (badsum.wire.protofacts): the C header made from it is the one
committed, the C sources name its facts instead of repeating numbers, and the numbers themselves
agree with an independent packet builder (scapy)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from badsum.wire import ipv6, link, ports, protofacts as pf, protofacts_h

NATIVE = Path(__file__).resolve().parents[2] / "src" / "badsum" / "native"


def test_the_committed_header_is_the_registry_rendered() -> None:
    on_disk = (NATIVE / "protofacts.h").read_text()
    assert on_disk == protofacts_h.render(), (
        "src/badsum/native/protofacts.h differs from badsum/wire/protofacts.py: "
        "run `python3 -m badsum.wire.protofacts_h` and rebuild the extensions"
    )
    assert "do not edit" in on_disk.splitlines()[0]


def test_a_changed_registry_renders_a_different_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: each kind of fact reaches the header."""
    before = protofacts_h.render()
    for name, value in [
        ("MAX_DEPTH", 9),
        ("SCAN_VLAN_TAGS", 3),
        ("LINKTYPE_LINUX_SLL2", 277),
        ("ETH_P_CISCO_METADATA", 0x890A),
        ("VLAN_TPIDS", frozenset({0x8100})),
        ("IPV6_EXT_HEADERS", frozenset({0, 43})),
        ("CSUM_AT", {**pf.CSUM_AT, pf.IPPROTO_TCP: 18}),
        ("VXLAN_FLAG_I", 0x10),
    ]:
        with monkeypatch.context() as m:
            m.setattr(pf, name, value)
            assert protofacts_h.render() != before, name


def _c_sources() -> dict[str, str]:
    """The C of the native kernels, comments removed, except the generated header."""
    out = {}
    for path in sorted(NATIVE.glob("*.[ch]")):
        if path.name != "protofacts.h":
            text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
            out[path.name] = text
    return out


def test_the_c_kernels_state_no_protocol_number_of_their_own() -> None:
    """Ethertypes, tunnel ports and link types are named from protofacts.h, never written out."""
    ethertypes = {v for k, v in vars(pf).items() if k.startswith("ETH_P_") and isinstance(v, int)} | pf.VLAN_TPIDS
    found = []
    for name, text in _c_sources().items():
        if name == "_framing.c":  # pcapng framing: block types and option codes, no packet headers
            continue
        for et in ethertypes:
            if re.search(rf"\b0x{et:04x}\b", text, re.I):
                found.append(f"{name}: ethertype 0x{et:04x}")
        for port in pf.NEXT_BY_UDP_PORT:
            if re.search(rf"\b{port}\b", text):
                found.append(f"{name}: UDP port {port}")
        for m in re.finditer(r"case\s+(\d+)\s*:", text):
            if int(m.group(1)) in pf.DECODED_LINKTYPES - {0, 1, 4, 6}:  # small values are too common to tell
                found.append(f"{name}: `{m.group(0)}` looks like a link type")
        for m in re.finditer(r"proto\w*\s*[!=]=\s*(\d+)", text):
            found.append(f"{name}: `{m.group(0)}`: name the IP protocol")
    assert not found, "\n".join(found)


def test_python_names_are_the_registry() -> None:
    """The modules that kept their public names re-export the registry's objects."""
    assert link.SUPPORTED is pf.DECODED_LINKTYPES
    assert link.VLAN_TPIDS is pf.VLAN_TPIDS and link.MAX_VLAN_TAGS == pf.MAX_VLAN_TAGS
    assert ports.UDPTunnel is pf.UDPTunnel and ports.NEXT_BY_UDP_PORT is pf.NEXT_BY_UDP_PORT
    assert ipv6.EXT_HEADERS is pf.IPV6_EXT_HEADERS and ipv6.MAX_EXT_HEADERS == pf.MAX_IPV6_EXT_HEADERS
    assert pf.DECODED_LINKTYPES <= set(pf.LINKTYPE_NAMES) and pf.RAW_IP_LINKTYPES <= pf.DECODED_LINKTYPES
    assert pf.SCAN_VLAN_TAGS <= pf.MAX_VLAN_TAGS
    assert not pf.ETH_P_MAYBE_IP & pf.ETH_P_DECODER_FOLLOWS


def test_checksum_offsets_match_scapy() -> None:
    """Where scapy puts each checksum field (an independent packet builder)."""
    from scapy.all import GRE, ICMP, IGMP, SCTP, TCP, UDP, raw
    from scapy.layers.inet6 import ICMPv6EchoRequest

    marker = 0xA5C3
    layers = {
        pf.IPPROTO_TCP: TCP(chksum=marker),
        pf.IPPROTO_UDP: UDP(chksum=marker),
        pf.IPPROTO_ICMP: ICMP(chksum=marker),
        pf.IPPROTO_ICMPV6: ICMPv6EchoRequest(cksum=marker),
        pf.IPPROTO_IGMP: IGMP(chksum=marker),
        pf.IPPROTO_SCTP: SCTP(chksum=0xA5C3A5C3),
        pf.IPPROTO_GRE: GRE(chksum_present=1, chksum=marker),
    }
    for proto, layer in layers.items():
        assert raw(layer).find(marker.to_bytes(2, "big")) == pf.CSUM_AT[proto], proto
    assert set(layers) | {pf.IPPROTO_UDPLITE} == set(pf.CSUM_AT)
    assert pf.CSUM_AT[pf.IPPROTO_UDPLITE] == pf.CSUM_AT[pf.IPPROTO_UDP]  # RFC 3828: UDP's layout


def test_link_type_names() -> None:
    assert pf.LINKTYPE_NAMES[pf.LINKTYPE_RAW_12] == pf.LINKTYPE_NAMES[pf.LINKTYPE_RAW] == "RAW"
    assert pf.LINKTYPE_NAMES[pf.LINKTYPE_LINUX_SLL2] == "LINUX_SLL2"
    assert pf.LINKTYPE_NAMES[pf.LINKTYPE_USER0 + 15] == "USER15"
