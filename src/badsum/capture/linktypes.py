"""Names for LINKTYPE_* values (https://www.tcpdump.org/linktypes.html).

Values as they appear in pcap headers and pcapng IDBs. `name()` never raises, so a capture of an
unknown link type can still be reported.
"""

from __future__ import annotations

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
LINKTYPE_NETLINK = 253
LINKTYPE_WIRESHARK_UPPER_PDU = 252
LINKTYPE_DOCSIS31_XRA31 = 273
LINKTYPE_ETHERNET_MPACKET = 274
LINKTYPE_DISPLAYPORT_AUX = 275
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_USER0 = 147

NAMES: dict[int, str] = {
    0: "NULL",
    1: "ETHERNET",
    6: "IEEE802_5",
    8: "SLIP",
    9: "PPP",
    10: "FDDI",
    12: "RAW",
    14: "RAW",
    50: "PPP_HDLC",
    51: "PPP_ETHER",
    101: "RAW",
    104: "C_HDLC",
    105: "IEEE802_11",
    107: "FRELAY",
    108: "LOOP",
    109: "ENC",
    113: "LINUX_SLL",
    117: "PFLOG",
    119: "IEEE802_11_PRISM",
    122: "IP_OVER_FC",
    127: "IEEE802_11_RADIOTAP",
    129: "ARCNET_LINUX",
    192: "PPI",
    195: "IEEE802_15_4",
    197: "ERF",
    201: "BLUETOOTH_HCI_H4_WITH_PHDR",
    220: "USB_LINUX_MMAPPED",
    228: "IPV4",
    229: "IPV6",
    239: "NFLOG",
    240: "NETANALYZER",
    242: "IPOIB",
    243: "MPEG_2_TS",
    252: "WIRESHARK_UPPER_PDU",
    253: "NETLINK",
    273: "DOCSIS31_XRA31",
    274: "ETHERNET_MPACKET",
    275: "DISPLAYPORT_AUX",
    276: "LINUX_SLL2",
}
NAMES.update({LINKTYPE_USER0 + i: f"USER{i}" for i in range(16)})

#: Link types whose frames start directly with an IPv4 or IPv6 header.
RAW_IP = frozenset({LINKTYPE_RAW_12, LINKTYPE_RAW_14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6})


def name(linktype: int) -> str:
    """`ETHERNET`, `LINUX_SLL2`, ...; `LINKTYPE_<n>` for a value without a name."""
    try:
        return NAMES.get(int(linktype), f"LINKTYPE_{int(linktype)}")
    except (TypeError, ValueError, OverflowError):
        return f"LINKTYPE_{linktype!r}"
