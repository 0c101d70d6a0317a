"""tc programs (cls_bpf filters) on recorded `tc -j` output (iproute2 6.1, tests/data/tc/, taken from
the vxlan-double-snat and veth-marks-verified labs with their emulations attached): parsed into TcBpf records, read only
on devices that have a clsact qdisc, and never an exception other than ParseError."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from badsum.host import tc
from badsum.host.commands import Output
from badsum.host.model import TcBpf

DATA = Path(__file__).resolve().parents[1] / "data" / "tc"
QDISC = (DATA / "kb004-node1-qdisc.json").read_text()
EGRESS = (DATA / "kb004-node1-eth0-egress.json").read_text()
INGRESS = (DATA / "kb004-node1-eth0-ingress.json").read_text()
KB004 = TcBpf("egress", "kb004_nat_csum", 6127, "0ba607106429b2e2", "kb004_nat.bpf.o:[tc]", True, 49152)


def test_devices_with_a_clsact_qdisc() -> None:
    # eth0 has noqueue as root and clsact for the hooks; lo and flannel.1 only noqueue.
    assert tc.parse_hook_devices(QDISC) == ["eth0"]
    assert tc.parse_hook_devices('[{"kind":"ingress","dev":"veth1","parent":"ffff:fff1"}]') == ["veth1"]
    assert tc.parse_hook_devices("[]") == [] and tc.parse_hook_devices("") == []


def test_the_emulation_program_as_tc_prints_it() -> None:
    # tc prints a header entry per priority (no options) and then the filter with its program.
    assert tc.parse_filters(EGRESS, "egress") == (KB004,)
    assert tc.parse_filters(INGRESS, "ingress") == ()


def test_the_kb001_emulation_on_a_veth() -> None:
    # Recorded in veth-marks-verified's h2: the host end of c2's veth, beside a bridge.
    assert tc.parse_hook_devices((DATA / "kb001-h2-qdisc.json").read_text()) == ["veth-c2"]
    assert tc.parse_filters((DATA / "kb001-h2-veth-c2-egress.json").read_text(), "egress") == (
        TcBpf("egress", "kb001_veth_xmit", 6475, "4d2de98c921725fb", "kb001_veth.bpf.o:[tc]", True, 49152),)


def test_filters_without_a_program_or_of_other_kinds_are_left_out() -> None:
    text = ('[{"kind":"u32","pref":1,"options":{"fh":"800:"}},{"kind":"bpf","pref":2,"options":{"bpf_name":"x.o:[tc]"}},'
            '{"kind":"bpf","options":{"prog":{"name":"p","id":"7"}}}]')  # fmt: skip
    assert tc.parse_filters(text, "ingress") == (TcBpf("ingress", "p", None),)


def fake(outputs: dict[tuple[str, ...], Output], seen: list[list[str]]) -> tc.Runner:
    def run(argv: list[str]) -> Output:
        seen.append(argv)
        return outputs.get(tuple(argv), Output(None, "unexpected command"))

    return run


def test_collect_reads_filters_only_where_a_clsact_qdisc_is() -> None:
    seen: list[list[str]] = []
    outputs = {("tc", "-j", "qdisc", "show"): Output(QDISC),
               ("tc", "-j", "filter", "show", "dev", "eth0", "ingress"): Output(INGRESS),
               ("tc", "-j", "filter", "show", "dev", "eth0", "egress"): Output(EGRESS)}  # fmt: skip
    found, errors = tc.collect_tc_bpf(fake(outputs, seen), ["lo", "eth0", "flannel.1"])
    assert errors == []
    assert found == {"lo": (), "eth0": (KB004,), "flannel.1": ()}
    assert len(seen) == 3  # one qdisc dump, two filter dumps for the one hooked device


def test_collect_unknown_when_the_qdiscs_cannot_be_read_and_bounded() -> None:
    found, errors = tc.collect_tc_bpf(fake({}, []), ["eth0"])
    assert found is None and errors == ["tc programs unknown: unexpected command"]
    many = "[" + ",".join(f'{{"kind":"clsact","dev":"v{i}"}}' for i in range(tc.MAX_DEVICES + 3)) + "]"
    seen: list[list[str]] = []
    found, errors = tc.collect_tc_bpf(fake({("tc", "-j", "qdisc", "show"): Output(many)}, seen),
                                      [f"v{i}" for i in range(tc.MAX_DEVICES + 3)])  # fmt: skip
    assert len(seen) == 1 + 2 * tc.MAX_DEVICES and any("first 512" in e for e in errors)
    assert found is not None and found[f"v{tc.MAX_DEVICES + 2}"] == ()


@pytest.mark.parametrize("text", [EGRESS, QDISC])
def test_every_truncation_parses_or_raises_parse_error(text: str) -> None:
    for i in range(len(text)):
        for parse in (lambda t: tc.parse_filters(t, "egress"), tc.parse_hook_devices):
            try:
                parse(text[:i])
            except tc.ParseError:
                pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                        ["kind", "dev", "options", "prog", "name", "id", "tag", "bpf_name", "pref", "direct-action"]),
                        c, max_size=5), max_leaves=20))  # fmt: skip
def test_any_json_shape_returns_or_raises_parse_error(doc: object) -> None:
    import json

    text = json.dumps(doc)
    for parse in (lambda t: tc.parse_filters(t, "egress"), tc.parse_hook_devices):
        try:
            parse(text)
        except tc.ParseError:
            pass
