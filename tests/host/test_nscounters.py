"""Delta maths per namespace, namespaces appearing and vanishing, and the drop-to-namespace join."""

from __future__ import annotations

from pathlib import Path

from badsum.host import nscounters
from badsum.host.netns import NsRef
from badsum.host.nscounters import NsDelta, Sample, Sampler, attribute, deltas

A, B, C = NsRef("host", 1, None), NsRef("web1", 2, "/run/netns/web1"), NsRef("pid:7", 3, "/proc/7/ns/net")


def values(**kw: int) -> dict[str, int]:
    return {k: kw.get(k, 0) for k in nscounters.WATCH_COUNTERS}


def test_counter_names_are_nstats() -> None:
    assert "TcpInCsumErrors" in nscounters.WATCH_COUNTERS and "Icmp6OutPktTooBigs" in nscounters.WATCH_COUNTERS
    assert len(set(nscounters.WATCH_COUNTERS)) == 18
    assert nscounters.NSTAT_ARGV[:5] == ["nstat", "-a", "-s", "-z", "--json"]


def test_deltas_subtract_per_namespace() -> None:
    before = {1: Sample(0.0, values(TcpInCsumErrors=5)), 2: Sample(0.0, values(IpFragFails=1))}
    after = {1: Sample(1.0, values(TcpInCsumErrors=9)), 2: Sample(1.0, values(IpFragFails=1))}
    got = deltas([A, B], before, after, [A, B])
    assert got[0] == NsDelta("host", 1, values(TcpInCsumErrors=4))
    assert got[1] == NsDelta("web1", 2, values())
    assert got[0].moved() == {"TcpInCsumErrors": 4} and got[1].moved() == {}
    assert got[0].moved(["UdpInCsumErrors"]) == {}


def test_a_counter_that_went_down_wrapped_and_counts_from_0() -> None:
    got = deltas([A], {1: Sample(0, values(TcpInCsumErrors=4294967290))}, {1: Sample(1, values(TcpInCsumErrors=3))}, [A])
    assert got[0].deltas is not None and got[0].deltas["TcpInCsumErrors"] == 3


def test_a_namespace_that_appeared_counts_from_zero() -> None:
    before = {1: Sample(0, values())}
    after = {1: Sample(1, values()), 2: Sample(1, values(TcpInCsumErrors=7))}
    got = deltas([A, B], before, after, [A])
    assert got[1] == NsDelta("web1", 2, values(TcpInCsumErrors=7), "new")


def test_first_interval_knows_nothing_new_and_a_failed_baseline_is_not_a_delta() -> None:
    before = {1: Sample(0, None, "nstat: timed out")}
    after = {1: Sample(1, values(TcpInCsumErrors=7))}
    got = deltas([A], before, after, [A])
    assert got == [NsDelta("host", 1, None, "baseline")]
    # Without previous refs (a caller that does not track them), a missing baseline is not "new" either.
    assert deltas([B], {}, {2: Sample(1, values())}, None) == [NsDelta("web1", 2, None, "baseline")]


def test_a_namespace_that_vanished_is_gone() -> None:
    before = {1: Sample(0, values()), 2: Sample(0, values()), 3: Sample(0, values())}
    after = {1: Sample(1, values()), 2: Sample(1, None, "namespace web1 vanished", vanished=True)}
    got = deltas([A, B], before, after, [A, B, C])
    assert [(d.ns_id, d.state) for d in got] == [("host", "ok"), ("web1", "gone"), ("pid:7", "gone")]
    assert got[1].deltas is None and got[1].error == "namespace web1 vanished"
    assert got[2].error == "the namespace vanished"


def test_an_unreadable_namespace_is_an_error() -> None:
    got = deltas([A], {1: Sample(0, values())}, {1: Sample(1, None, "nstat: not installed")}, [A])
    assert got == [NsDelta("host", 1, None, "error", "nstat: not installed")]


def test_attribute_by_the_counter_the_reason_moves() -> None:
    moved = [NsDelta("host", 1, values(UdpInCsumErrors=1)), NsDelta("c2", 2, values(TcpInCsumErrors=3)),
             NsDelta("c3", 3, values(Udp6InCsumErrors=2)), NsDelta("gone", 4, None, "gone")]  # fmt: skip
    assert [d.ns_id for d in attribute("TCP_CSUM", moved)] == ["c2"]
    assert [d.ns_id for d in attribute("UDP_CSUM", moved)] == ["host", "c3"]
    assert attribute("IP_CSUM", moved) == []
    assert attribute("NOT_SPECIFIED", moved) == []


def test_sampler_maps_each_namespace_by_inode() -> None:
    seen: list[str] = []

    def fake(ref: NsRef) -> Sample:
        seen.append(ref.id)
        return Sample(float(ref.inode), values(TcpInCsumErrors=ref.inode))

    s = Sampler(workers=3, read=fake)
    try:
        got = s.sample_all([A, B, C])
    finally:
        s.close()
    assert sorted(seen) == ["host", "pid:7", "web1"]
    assert {k: v.values["TcpInCsumErrors"] for k, v in got.items() if v.values} == {1: 1, 2: 2, 3: 3}


def test_sample_own_namespace_agrees_with_nstat() -> None:
    """The real nstat in our own namespace; an independent reading of /proc/net/snmp as the oracle."""
    def tcp_csum_errors() -> int:
        snmp = Path("/proc/net/snmp").read_text().splitlines()
        heads, vals = [ln.split() for ln in snmp if ln.startswith("Tcp:")]
        return dict(zip(heads[1:], map(int, vals[1:])))["InCsumErrors"]

    low = tcp_csum_errors()
    s = nscounters.sample(NsRef("host", 0, None))
    high = tcp_csum_errors()
    assert s.error is None and s.values is not None and set(s.values) == set(nscounters.WATCH_COUNTERS)
    assert low <= s.values["TcpInCsumErrors"] <= high
