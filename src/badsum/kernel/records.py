"""The binary records the eBPF programs write (kernel/bpf/follow_event.h), read into typed ones.

Layouts are fixed and padding-free; tests compare the sizes here with the object's BTF, so a
change on one side only fails a test instead of misreading every event.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from badsum.follow.model import Hook, IpSummed, KernelEvent

EVENT_HEADER = struct.Struct("<QQQIIIIIIIIHHHHIHHHHBBBBII16s")
assert EVENT_HEADER.size == 104
DROP_KEY = struct.Struct("<IIIHxxQ")
DROP_VALUE = struct.Struct("<Q16s")
MAX_CAP = 2048
EV_ENCAPSULATION, EV_CSUM_VALID, EV_L2, EV_CUT, EV_NO_DEV = 1, 2, 4, 8, 16
#: enum stat of follow_event.h, in order.
STATS = ("seen", "matched", "sent", "ring_full", "rate_limited", "cut")


class RecordError(ValueError):
    pass


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def decode_event(raw: bytes, reasons: dict[int, str] | None = None) -> KernelEvent:
    """One ring-buffer record -> KernelEvent. Drop reason names come from the running kernel's
    BTF (`enum skb_drop_reason`), passed in as `reasons`."""
    if len(raw) < EVENT_HEADER.size:
        raise RecordError(f"record of {len(raw)} bytes, shorter than the {EVENT_HEADER.size}-byte header")
    (ts, skb, location, netns, ifindex, length, data_len, csum, mark, reason, wire_len, csum_start, csum_offset,
     gso_size, gso_segs, gso_type, protocol, dev_type, data_offset, cap_len, hook, ip_summed, csum_level, flags,
     cpu, iif, ifname) = EVENT_HEADER.unpack_from(raw)  # fmt: skip
    data = raw[EVENT_HEADER.size : EVENT_HEADER.size + cap_len]
    try:
        h = Hook(hook)
    except ValueError:
        raise RecordError(f"unknown hook {hook}") from None
    reason_name = ""
    if h == Hook.DROP:
        reason_name = strip_reason((reasons or {}).get(reason, str(reason)))
    return KernelEvent(
        ts_ns=ts, hook=h, skb=skb, netns=netns, ifindex=ifindex, ifname=_name(ifname),
        ip_summed=IpSummed(ip_summed & 3), csum=csum, csum_start=csum_start, csum_offset=csum_offset,
        csum_level=csum_level, csum_valid=bool(flags & EV_CSUM_VALID), encapsulation=bool(flags & EV_ENCAPSULATION),
        gso_size=gso_size, gso_segs=gso_segs, gso_type=gso_type, len=length, data_len=data_len, mark=mark,
        protocol=int.from_bytes(protocol.to_bytes(2, "little"), "big"), dev_type=dev_type, data=data,
        data_offset=data_offset, wire_len=wire_len, l2=bool(flags & EV_L2), reason=reason if h == Hook.DROP else 0,
        reason_name=reason_name, location=location, cpu=cpu, iif=iif,
    )  # fmt: skip


def strip_reason(name: str) -> str:
    """`SKB_DROP_REASON_TCP_CSUM` -> `TCP_CSUM`, the name the tracepoint prints."""
    return name.removeprefix("SKB_DROP_REASON_")


@dataclass(frozen=True, slots=True)
class DropCount:
    """One row of the kernel drop counter: drops of one (namespace, device, reason, place)."""

    netns: int
    ifindex: int
    ifname: str
    reason: str
    protocol: int
    location: int
    count: int


def decode_drop(key: bytes, value: bytes, reasons: dict[int, str]) -> DropCount:
    netns, ifindex, reason, protocol, location = DROP_KEY.unpack_from(key)
    count, ifname = DROP_VALUE.unpack_from(value)
    return DropCount(netns, ifindex, _name(ifname), strip_reason(reasons.get(reason, str(reason))), protocol, location, count)
