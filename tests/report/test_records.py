"""The one encoder of verdicts: the exact bytes of `--jsonl` records, annotations and flow text.

The expected strings are what `Verdict.as_record()` and `annotation()` printed before the encoder
moved out of badsum.checksum (docs/cli.md documents the first one): a change here changes the
output programs parse.
"""

from __future__ import annotations

import json

import pytest

from badsum.checksum.verdict import Flow, Layer, Status, Verdict, VerdictFlag
from badsum.report.records import (
    annotation,
    checksum_line,
    flow_json,
    flow_record,
    flow_text,
    reason,
)

F4 = Flow(4, "192.0.2.1", "192.0.2.2", 6, 40001, 80)
F6 = Flow(6, "2001:db8::1", "2001:db8::2", 132, 5000, 6000)
FLOW4 = '{"src":"192.0.2.1","dst":"192.0.2.2","proto":6,"sport":40001,"dport":80}'

CASES = [
    (
        Verdict(2, Layer.TCP, 0, 50, 0x2174, 0x3340, Status.BAD, VerdictFlag.NONE, F4),
        ('{"record":"checksum","frame":2,"layer":"tcp","depth":0,"status":"bad","stored":"0x2174","computed":"0x3340",'
         f'"offset":50,"flow":{FLOW4},"reason":"TCP checksum 0x2174 should be 0x3340"}}'),
        "badsum:tcp[0] bad: TCP checksum 0x2174 should be 0x3340",
    ),
    (
        Verdict(9, Layer.SCTP, 1, 100, 0xDEADBEEF, 0x1, Status.BAD, VerdictFlag.REASSEMBLED, F6),
        ('{"record":"checksum","frame":9,"layer":"sctp","depth":1,"status":"bad","stored":"0xdeadbeef",'
         '"computed":"0x00000001","offset":100,"flow":{"src":"2001:db8::1","dst":"2001:db8::2","proto":132,'
         '"sport":5000,"dport":6000},"reason":"SCTP checksum 0xdeadbeef should be 0x00000001 after IP reassembly"}'),
        "badsum:sctp[1] bad: SCTP checksum 0xdeadbeef should be 0x00000001 after IP reassembly",
    ),
    (
        Verdict(3, Layer.TCP, 0, 50, 0x1C46, 0x3340, Status.PARTIAL, VerdictFlag.GSO | VerdictFlag.KERNEL, F4, 3000),
        ('{"record":"checksum","frame":3,"layer":"tcp","depth":0,"status":"partial","stored":"0x1c46",'
         f'"computed":"0x3340","offset":50,"flow":{FLOW4},"reason":"kernel says TP_STATUS_CSUMNOTREADY; TCP field '
         "holds the pseudo-header sum alone (length 3000), not the full checksum 0x3340: transmit offload pending; "
         'GSO/TSO super-frame, segmented later","gso":true,"kernel":true}'),
        ("badsum:tcp[0] partial: kernel says TP_STATUS_CSUMNOTREADY; TCP field holds the pseudo-header sum alone "
         "(length 3000), not the full checksum 0x3340: transmit offload pending; GSO/TSO super-frame, segmented later"),
    ),
    (
        Verdict(4, Layer.IPV4, 0, 24, 0, 0x1234, Status.PARTIAL, VerdictFlag.HDR_OFFLOAD, None),
        ('{"record":"checksum","frame":4,"layer":"ipv4","depth":0,"status":"partial","stored":"0x0000",'
         '"computed":"0x1234","offset":24,"flow":null,"reason":"IPv4 header checksum 0 on an offloaded packet: '
         'the NIC fills it in"}'),
        "badsum:ipv4[0] partial: IPv4 header checksum 0 on an offloaded packet: the NIC fills it in",
    ),
]


@pytest.mark.parametrize("v,line,comment", CASES, ids=[c[0].layer.label + "-" + c[0].status.label for c in CASES])
def test_the_bytes_of_each_record_and_comment(v: Verdict, line: str, comment: str) -> None:
    assert checksum_line(v) == line + "\n"
    assert checksum_line(v, flow_json(v.flow)) == line + "\n"  # the cached flow a writer passes
    assert json.loads(line)["reason"] == reason(v)
    assert annotation(v) == comment


def test_flow_forms() -> None:
    assert flow_json(F4) == FLOW4 and json.loads(FLOW4) == flow_record(F4)
    assert flow_record(None) is None and flow_json(None) == "null"
    assert flow_text(F4) == "192.0.2.1:40001 > 192.0.2.2:80 proto 6"
    assert flow_text(F6) == "[2001:db8::1]:5000 > [2001:db8::2]:6000 proto 132"
    assert flow_text(Flow(4, "192.0.2.1", "192.0.2.2", 1, 0, 0)) == "192.0.2.1 > 192.0.2.2 proto 1"


def test_every_status_and_layer_has_a_reason() -> None:
    for layer in Layer:
        for status in Status:
            for flags in (VerdictFlag.NONE, VerdictFlag(0xFF)):
                v = Verdict(1, layer, 0, 0, 0xFFFF, 0, status, flags, None)
                text = reason(v)
                assert text and "\n" not in text
                assert json.loads(checksum_line(v))["reason"] == text
