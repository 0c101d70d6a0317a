"""Untrusted bytes at the public boundary: the follow analysis returns, never raises."""

from __future__ import annotations

import json

from followkit import NAMES, NETNS, data_segment, syn, vxlan
from hypothesis import given, settings
from hypothesis import strategies as st

from badsum.follow.model import Hook, IpSummed, KernelEvent
from badsum.follow.result import follow_analysis, text_lines, to_data

GOOD = [syn(), syn(pending=True), data_segment(), data_segment(pending=True), vxlan(syn())]


@st.composite
def events(draw: st.DrawFn, data: st.SearchStrategy[bytes]) -> KernelEvent:
    raw = draw(data)
    return KernelEvent(
        ts_ns=draw(st.integers(0, 10_000)), hook=draw(st.sampled_from(list(Hook))), skb=draw(st.sampled_from([1, 2, 3])),
        netns=draw(st.sampled_from([0, *NETNS.values()])), ifindex=draw(st.integers(0, 3)),
        ifname=draw(st.sampled_from(["", "eth0", "c1-veth"])), ip_summed=draw(st.sampled_from(list(IpSummed))),
        csum=draw(st.integers(0, 2**32 - 1)), csum_start=draw(st.integers(0, 300)), csum_offset=draw(st.sampled_from([6, 16, 300])),
        csum_level=draw(st.integers(0, 3)), csum_valid=False, encapsulation=draw(st.booleans()),
        gso_size=draw(st.sampled_from([0, 1448])), gso_segs=0, gso_type=0, len=len(raw), data_len=0, mark=0, protocol=0x0800,
        dev_type=1, data=raw, data_offset=draw(st.sampled_from([0, 64])),
        wire_len=draw(st.integers(0, 2000)), l2=draw(st.booleans()), reason=0, reason_name=draw(st.sampled_from(["", "TCP_CSUM"])),
    )  # fmt: skip


def _run(evs: list[KernelEvent]) -> None:
    data = to_data(follow_analysis(evs, NAMES))
    text_lines(data)
    json.dumps(data)  # the JSON envelope's data: plain values only
    assert data["summary"]["events"] == len(evs)


@settings(max_examples=300, deadline=None)
@given(st.lists(events(st.binary(max_size=200)), max_size=8))
def test_random_bytes_never_raise(evs: list[KernelEvent]) -> None:
    _run(evs)


@settings(max_examples=300, deadline=None)
@given(st.lists(events(st.sampled_from(GOOD).flatmap(lambda g: st.tuples(st.integers(0, len(g)), st.binary(max_size=16))
                                                      .map(lambda t: g[: t[0]] + t[1]))), max_size=8))  # fmt: skip
def test_truncated_good_frames_with_junk_never_raise(evs: list[KernelEvent]) -> None:
    _run(evs)
