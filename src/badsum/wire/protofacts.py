"""The protocol facts the decoders and the C kernels share, each stated once.

Link types (https://www.tcpdump.org/linktypes.html), ethertypes (IEEE 802 numbers), IP protocol
numbers (IANA), the UDP ports tunnels use, where each checksum field sits, and the decoder's
limits. Python modules import them from here (wire/link.py, wire/ports.py, capture/linktypes.py,
checksum/verify.py, trace/verdict.py re-export or use them); the C kernels include
src/badsum/native/protofacts.h, generated from this module by `python3 -m badsum.wire.protofacts_h`.
tests/wire/test_protofacts.py fails when the committed header and this module disagree.
"""

from __future__ import annotations

from enum import IntEnum

# ---- link types (pcap LINKTYPE_* values as they appear in files) ----

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_IEEE802_5 = 6
LINKTYPE_SLIP = 8
LINKTYPE_PPP = 9
LINKTYPE_FDDI = 10
# DLT_RAW is 12 on most systems and 14 on OpenBSD; files written there carry those values.
LINKTYPE_RAW_12 = 12
LINKTYPE_RAW_14 = 14
LINKTYPE_PPP_HDLC = 50
LINKTYPE_PPP_ETHER = 51
LINKTYPE_RAW = 101
LINKTYPE_C_HDLC = 104
LINKTYPE_IEEE802_11 = 105
LINKTYPE_FRELAY = 107
LINKTYPE_LOOP = 108
LINKTYPE_ENC = 109
LINKTYPE_LINUX_SLL = 113
LINKTYPE_PFLOG = 117
LINKTYPE_IEEE802_11_PRISM = 119
LINKTYPE_IP_OVER_FC = 122
LINKTYPE_IEEE802_11_RADIOTAP = 127
LINKTYPE_ARCNET_LINUX = 129
LINKTYPE_USER0 = 147
LINKTYPE_PPI = 192
LINKTYPE_IEEE802_15_4 = 195
LINKTYPE_ERF = 197
LINKTYPE_BLUETOOTH_HCI_H4_WITH_PHDR = 201
LINKTYPE_USB_LINUX_MMAPPED = 220
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_NETANALYZER = 240
LINKTYPE_IPOIB = 242
LINKTYPE_MPEG_2_TS = 243
LINKTYPE_WIRESHARK_UPPER_PDU = 252
LINKTYPE_NETLINK = 253
LINKTYPE_DOCSIS31_XRA31 = 273
LINKTYPE_ETHERNET_MPACKET = 274
LINKTYPE_DISPLAYPORT_AUX = 275
LINKTYPE_LINUX_SLL2 = 276

#: LINKTYPE value -> the name tcpdump.org gives it (the three raw-IP values all read `RAW`).
LINKTYPE_NAMES: dict[int, str] = {
    value: name.removeprefix("LINKTYPE_").removesuffix("_12").removesuffix("_14")
    for name, value in sorted(globals().items())
    if name.startswith("LINKTYPE_") and isinstance(value, int) and name != "LINKTYPE_USER0"
}
LINKTYPE_NAMES.update({LINKTYPE_USER0 + i: f"USER{i}" for i in range(16)})

#: Link types whose frames start directly with an IPv4 or IPv6 header.
RAW_IP_LINKTYPES = frozenset({LINKTYPE_RAW_12, LINKTYPE_RAW_14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6})

#: Link types the decoder (wire/link.decode_link) reads. Anything else is counted as unknown.
DECODED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_PPP,
        LINKTYPE_PPP_HDLC,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_LINUX_SLL2,
        *RAW_IP_LINKTYPES,
    }
)

#: Bytes of the fixed link headers the C walkers skip (SLL: protocol in the last 2 bytes; SLL2:
#: protocol first; NULL/LOOP: a 4-byte address family).
ETH_HLEN = 14
SLL_HLEN = 16
SLL2_HLEN = 20
NULL_HLEN = 4

#: BSD loopback address families (NULL in the writer's byte order, LOOP in network order).
NULL_AF_INET = 2
#: AF_INET6 differs by system: NetBSD/OpenBSD 24, FreeBSD 28, Darwin 30.
NULL_AF_INET6 = frozenset({24, 28, 30})

# ---- ethertypes ----

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_TEB = 0x6558  # transparent Ethernet bridging (GRE/NVGRE, Geneve carrying Ethernet)
ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848
ETH_P_PPP_SES = 0x8864  # PPPoE session
ETH_P_PBB = 0x88E7  # 802.1ah backbone
ETH_P_CISCO_METADATA = 0x8909  # Cisco MetaData (SGT)
ETH_P_NSH = 0x894F  # RFC 8300
#: Below this an Ethernet type field is an 802.3 length (IEEE 802.3 clause 3.2.6).
ETH_P_802_3_MIN = 0x0600
#: 802.1Q, 802.1ad and the two pre-standard QinQ TPIDs.
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
ETH_P_MPLS = frozenset({ETH_P_MPLS_UC, ETH_P_MPLS_MC})
#: Ethertypes the decoder follows to IP through one more header (wire/frame._Decoder.network): a
#: fast path that does not read that header leaves such packets to the decoder.
ETH_P_DECODER_FOLLOWS = frozenset({ETH_P_MPLS_UC, ETH_P_MPLS_MC, ETH_P_CISCO_METADATA})
#: Carriers of IP the decoder does not read yet. The checksum scan leaves them to it all the same,
#: so that the decoder can learn one without the two paths disagreeing.
ETH_P_MAYBE_IP = frozenset({ETH_P_PPP_SES, ETH_P_PBB, ETH_P_NSH})

# ---- IP protocol numbers (IANA) ----

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_IGMP = 2
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_MH = 135
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136
IPPROTO_HIP = 139
IPPROTO_SHIM6 = 140
#: What badsum calls the upper layers it decodes (layer names in issues, text output).
IPPROTO_NAMES: dict[int, str] = {
    IPPROTO_TCP: "tcp",
    IPPROTO_UDP: "udp",
    IPPROTO_UDPLITE: "udplite",
    IPPROTO_ICMP: "icmp",
    IPPROTO_ICMPV6: "icmpv6",
    IPPROTO_IGMP: "igmp",
    IPPROTO_SCTP: "sctp",
    IPPROTO_GRE: "gre",
}
#: IPv6 extension headers (RFC 8200 section 4, RFC 7045), 253/254 the experimental ones (RFC 3692).
IPV6_EXT_HEADERS = frozenset(
    {IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_MH, IPPROTO_HIP, IPPROTO_SHIM6, 253, 254}
)
#: IPv4 options that change the pseudo-header's destination (RFC 791: loose and strict source route).
IPOPT_END = 0
IPOPT_NOP = 1
IPOPT_LSRR = 131
IPOPT_SSRR = 137
#: IPv6 Jumbo Payload option (RFC 2675).
IPV6_OPT_JUMBO = 0xC2

# ---- checksum fields ----

#: The IPv4 header checksum: bytes 10-11 of the header (RFC 791).
IPV4_CSUM_AT = 10
#: Offset of the checksum field from the start of each upper-layer header.
CSUM_AT: dict[int, int] = {
    IPPROTO_TCP: 16,  # RFC 9293 section 3.1
    IPPROTO_UDP: 6,  # RFC 768
    IPPROTO_UDPLITE: 6,  # RFC 3828
    IPPROTO_ICMP: 2,  # RFC 792
    IPPROTO_ICMPV6: 2,  # RFC 4443
    IPPROTO_IGMP: 2,  # RFC 2236
    IPPROTO_SCTP: 8,  # RFC 9260: the CRC32c, 4 bytes
    IPPROTO_GRE: 4,  # RFC 2784, present when the C bit is set
}

# ---- UDP tunnels ----


class UDPTunnel(IntEnum):
    """What a UDP destination port carries. Values index the C kernels' uint8[65536] port table."""

    NONE = 0
    #: Read by the C kernels: the inner Ethernet frame is judged at depth + 1.
    VXLAN = 1
    #: Left to the decoder by the C kernels; they also earn the IPv6 zero-checksum exemption.
    GENEVE = 2
    GRE_IN_UDP = 3
    MPLS_IN_UDP = 4


#: Defaults: VXLAN on the IANA port (RFC 7348) and on Linux's/flannel's 8472; Geneve (RFC 8926);
#: GRE-in-UDP (RFC 8086); MPLS-in-UDP (RFC 7510).
NEXT_BY_UDP_PORT: dict[int, UDPTunnel] = {
    4789: UDPTunnel.VXLAN,
    8472: UDPTunnel.VXLAN,
    6081: UDPTunnel.GENEVE,
    4754: UDPTunnel.GRE_IN_UDP,
    6635: UDPTunnel.MPLS_IN_UDP,
}
#: RFC 7348 section 5: an 8-byte header whose I flag says the VNI is valid.
VXLAN_HLEN = 8
VXLAN_FLAG_I = 0x08

# ---- limits ----

#: Tunnel nesting bound (the outermost packet is depth 0); also the depth axis of the counts cube.
MAX_DEPTH = 8
#: VLAN tags the decoder follows; the tag after that is read as the ethertype.
MAX_VLAN_TAGS = 8
#: VLAN tags the checksum scan follows before it leaves the frame to the decoder: deeper stacks
#: are rare enough that judging them there costs nothing.
SCAN_VLAN_TAGS = 4
#: IPv6 extension headers the decoder walks before it gives up.
MAX_IPV6_EXT_HEADERS = 16
