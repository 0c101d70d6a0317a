"""Each scapy-built situation gets the verdict docs/verdicts.md prescribes, with exact evidence."""

from __future__ import annotations

import pytest
from builders import fragments_case, ipv6_fragments, pseudo4, zoo
from scapy.all import TCP, Ether

from badsum.checksum.detailed import DetailedJudge
from badsum.checksum.verdict import Layer, Status, VerdictFlag
from badsum.report.records import reason
from badsum.wire.link import LINKTYPE_ETHERNET

CASES = zoo()


def verdict_map(frame: bytes) -> dict[str, str]:
    res = DetailedJudge().judge(1, 0, frame, len(frame), LINKTYPE_ETHERNET)
    return {f"{v.layer.label}@{v.depth}": v.status.label for v in res.verdicts}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_zoo_case(case) -> None:  # noqa: ANN001
    assert verdict_map(case.frame) == case.expect


def test_partial_evidence_names_the_pseudo_header_and_full_sum() -> None:
    case = next(c for c in CASES if c.name == "tcp4-partial")
    (v,) = [v for v in DetailedJudge().judge(7, 0, case.frame, len(case.frame), 1).verdicts if v.layer == Layer.TCP]
    good = Ether(next(c for c in CASES if c.name == "tcp4-ok").frame)
    assert v.frame == 7
    assert v.offset == 14 + 20 + 16  # Ethernet + IPv4 + TCP checksum field
    assert v.stored == pseudo4("192.0.2.1", "192.0.2.2", 6, len(good[TCP]))
    assert v.computed == good[TCP].chksum  # scapy's own full checksum: an independent computation
    assert "pseudo-header" in reason(v) and "offload" in reason(v)


def test_bad_evidence_carries_stored_and_computed() -> None:
    case = next(c for c in CASES if c.name == "tcp4-bad")
    good = Ether(next(c for c in CASES if c.name == "tcp4-ok").frame)
    (v,) = [v for v in DetailedJudge().judge(1, 0, case.frame, len(case.frame), 1).verdicts if v.layer == Layer.TCP]
    assert (v.stored, v.computed) == (good[TCP].chksum ^ 0x0100, good[TCP].chksum)
    assert v.flow is not None and (v.flow.src, v.flow.dport) == ("192.0.2.1", 80)


def test_snaplen_cut_is_unverifiable_not_bad() -> None:
    frame = next(c for c in CASES if c.name == "tcp4-ok").frame
    res = DetailedJudge().judge(1, 0, frame[:60], len(frame), 1)
    got = {v.layer: v for v in res.verdicts}
    assert got[Layer.IPV4].status == Status.OK
    assert got[Layer.TCP].status == Status.UNVERIFIABLE and got[Layer.TCP].flags & VerdictFlag.TRUNCATED


def test_ipv4_fragments_are_judged_once_after_reassembly() -> None:
    frags, expect = fragments_case()
    judge = DetailedJudge()
    l4 = []
    for i, f in enumerate(frags, 1):
        l4 += [(i, v) for v in judge.judge(i, i * 1000, f, len(f), 1).verdicts if v.layer != Layer.IPV4]
    assert [(i, v.layer.label, v.status.label) for i, v in l4] == [(len(frags), "udp", "ok")]
    assert l4[0][1].flags & VerdictFlag.REASSEMBLED


def test_ipv6_fragments_reassemble_and_verify() -> None:
    frags = ipv6_fragments()
    judge = DetailedJudge()
    out = [v for i, f in enumerate(frags, 1) for v in judge.judge(i, 0, f, len(f), 1).verdicts]
    assert [(v.layer.label, v.status.label) for v in out] == [("udp", "ok")]


def test_missing_fragment_is_unverifiable_at_the_end() -> None:
    frags, _ = fragments_case()
    judge = DetailedJudge()
    for i, f in enumerate(frags[:-1], 1):
        assert all(v.layer == Layer.IPV4 for v in judge.judge(i, 0, f, len(f), 1).verdicts)
    (v,) = judge.expired(final=True)
    assert (v.frame, v.layer, v.status) == (1, Layer.UDP, Status.UNVERIFIABLE)
    assert v.flags & VerdictFlag.INCOMPLETE_FRAGMENT


def test_overlapping_fragments_that_disagree_are_reported() -> None:
    frags, _ = fragments_case()
    judge = DetailedJudge()
    f1 = bytearray(frags[1])
    f1[-1] ^= 0xFF  # same offset, different bytes, sent twice
    issues = []
    for i, f in enumerate([frags[0], frags[1], bytes(f1)], 1):
        issues += judge.judge(i, 0, f, len(f), 1).issues
    assert [i.code for i in issues] == ["ipv4.fragment_overlap_mismatch"]


def test_kernel_status_decides() -> None:
    from badsum.checksum.verdict import TP_STATUS_CSUM_VALID, TP_STATUS_CSUMNOTREADY

    bad = next(c for c in CASES if c.name == "tcp4-bad").frame
    tcp = lambda res: next(v for v in res.verdicts if v.layer == Layer.TCP)  # noqa: E731
    v = tcp(DetailedJudge().judge(1, 0, bad, len(bad), 1, TP_STATUS_CSUMNOTREADY))
    assert v.status == Status.PARTIAL and v.flags & VerdictFlag.KERNEL
    v = tcp(DetailedJudge().judge(1, 0, bad, len(bad), 1, TP_STATUS_CSUM_VALID))
    assert v.status == Status.OK and v.flags & VerdictFlag.KERNEL
