"""host/kernel_drops.py: the kernel drop counter behind DropWatch's interface, and the choice between
them. No kernel here: a fake counter returns cumulative rows as kernel/session.py's DropCounter does."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from support import need_root

from badsum.host import kernel_drops
from badsum.host.drops import Drop
from badsum.host.kernel_drops import KERNEL, KernelDrops, NotAvailable, open_drops
from badsum.host.nscounters import COUNTER_JOIN

TCP_V4_RCV, TCP_V4_RCV_2, UDP_RCV = 0xFFFF0001, 0xFFFF0002, 0xFFFF0100
FUNCTIONS = {TCP_V4_RCV: "tcp_v4_rcv", TCP_V4_RCV_2: "tcp_v4_rcv", UDP_RCV: "__udp4_lib_rcv"}
C2, WEB = 4026532001, 4026532002


@dataclass(frozen=True)
class Row:
    """kernel/records.py DropCount's fields."""

    netns: int
    ifindex: int
    ifname: str
    reason: str
    protocol: int
    location: int
    count: int


class FakeCounter:
    """Cumulative totals, as the kernel keeps them: `rows` is replaced between reads by the test."""

    def __init__(self, rows: list[Row] | None = None, overflow: int = 0) -> None:
        self.reasons = {2: "SKB_DROP_REASON_NOT_SPECIFIED", 5: "SKB_DROP_REASON_TCP_CSUM", 6: "SKB_DROP_REASON_UDP_CSUM"}
        self.rows = rows or []
        self.overflow_total = overflow
        self.closed = False

    def read(self) -> list[Row]:
        assert not self.closed
        return list(self.rows)

    def overflow(self) -> int:
        return self.overflow_total

    def close(self) -> None:
        self.closed = True


def functions_of(addrs: set[int]) -> dict[int, str]:
    return {a: FUNCTIONS[a] for a in addrs}


def adapter(*counters: FakeCounter, max_keys: int = 100) -> KernelDrops:
    queue = list(counters)
    opened: list[str | None] = []

    def opener(btf: str | None) -> FakeCounter:
        opened.append(btf)
        return queue.pop(0)

    k = KernelDrops(btf_path="/fake/btf", max_keys=max_keys, opener=opener, functions_of=functions_of)
    k.opened = opened  # type: ignore[attr-defined]
    assert k.start() and k.why_not is None
    return k


def tcp(count: int, netns: int = C2, loc: int = TCP_V4_RCV, ifindex: int = 2, ifname: str = "eth0") -> Row:
    return Row(netns, ifindex, ifname, "TCP_CSUM", 0x0800, loc, count)


def test_reads_are_differences_of_the_kernels_totals() -> None:
    fake = FakeCounter([tcp(3), Row(WEB, 7, "eth0", "UDP_CSUM", 0x0800, UDP_RCV, 1)])
    k = adapter(fake)
    assert k.reasons == {2: "NOT_SPECIFIED", 5: "TCP_CSUM", 6: "UDP_CSUM"}
    first = k.read()
    assert first == [Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", C2, 3, "eth0"), Drop("UDP_CSUM", 0x0800, "__udp4_lib_rcv", WEB, 1, "eth0")]
    fake.rows = [tcp(10), Row(WEB, 7, "eth0", "UDP_CSUM", 0x0800, UDP_RCV, 1)]
    assert k.read() == [Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", C2, 7, "eth0")]  # the UDP key did not move
    assert k.read() == []  # nothing since
    fake.rows.append(Row(C2, 2, "eth0", "NOT_SPECIFIED", 0x86DD, 0, 2))  # a key new since the last read
    assert k.read() == [Drop("NOT_SPECIFIED", 0x86DD, "", C2, 2, "eth0")]
    assert k.lost == 0


def test_one_function_and_one_device_fold_into_one_group_and_unknowns_are_none() -> None:
    fake = FakeCounter([tcp(2), tcp(3, loc=TCP_V4_RCV_2), tcp(1, ifindex=9), Row(0, 0, "", "NOT_SPECIFIED", 0, UDP_RCV, 4)])
    k = adapter(fake)
    assert sorted(k.read(), key=lambda d: d.count) == [
        Drop("NOT_SPECIFIED", 0, "__udp4_lib_rcv", None, 4, None),  # no device and no socket: the kernel cannot tell
        Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", C2, 6, "eth0"),
    ]


def test_functions_are_resolved_once_per_address_in_batches() -> None:
    asked: list[set[int]] = []

    def batch(addrs: set[int]) -> dict[int, str]:
        asked.append(addrs)
        return functions_of(addrs)

    fake = FakeCounter([tcp(1), tcp(1, loc=TCP_V4_RCV_2)])
    k = KernelDrops(opener=lambda _b: fake, functions_of=batch)
    assert k.start()
    for n in range(2, 6):
        fake.rows = [tcp(n), tcp(1, loc=TCP_V4_RCV_2)]
        assert k.read()[0].location == "tcp_v4_rcv"
    fake.rows.append(Row(WEB, 3, "eth0", "UDP_CSUM", 0x0800, UDP_RCV, 1))
    assert k.read()[0].location == "__udp4_lib_rcv"
    assert asked == [{TCP_V4_RCV, TCP_V4_RCV_2}, {UDP_RCV}]


def test_the_live_kernels_symbols_name_a_dropping_function() -> None:
    from badsum.host.kernel_drops import kallsyms_functions
    from badsum.kernel.symbols import Symbols

    s = Symbols()
    s._load()
    if not s._addrs:
        pytest.skip("kernel addresses are hidden here (kptr_restrict, not root)")
    addr = s._addrs[s._names.index("tcp_v4_rcv")] + 0x10
    assert kallsyms_functions({addr}) == {addr: "tcp_v4_rcv"}


def test_drops_the_kernel_could_not_count_are_lost() -> None:
    fake = FakeCounter([tcp(1)], overflow=0)
    k = adapter(fake)
    k.read()
    fake.overflow_total = 5
    k.read()
    fake.overflow_total = 7
    k.read()
    assert k.lost == 7


def test_a_full_table_is_replaced_by_an_empty_counter_and_nothing_is_counted_twice() -> None:
    full = FakeCounter([tcp(1, netns=C2 + i) for i in range(4)], overflow=2)
    fresh = FakeCounter([])
    k = adapter(full, fresh, max_keys=4)
    assert sum(d.count for d in k.read()) == 4
    assert full.closed and k.reloads == 1 and k.opened == ["/fake/btf", "/fake/btf"]  # type: ignore[attr-defined]
    assert k.lost == 2
    fresh.rows = [tcp(3)]  # the new counter's totals start at 0
    assert k.read() == [Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", C2, 3, "eth0")]
    assert k.lost == 2  # the new counter's overflow starts at 0 too


def test_a_reload_that_fails_says_why_and_reads_nothing() -> None:
    full = FakeCounter([tcp(1, netns=C2 + i) for i in range(2)])
    calls = []

    def opener(_btf: str | None) -> FakeCounter:
        calls.append(1)
        if len(calls) > 1:
            raise NotAvailable("no BTF")
        return full

    k = KernelDrops(opener=opener, max_keys=2, functions_of=functions_of)
    assert k.start()
    assert len(k.read()) == 2  # read before the reload
    assert k.read() == [] and k.why_not == "the drop counter could not be reloaded: no BTF"


def test_start_failure_says_why_and_stop_is_safe() -> None:
    def opener(_btf: str | None) -> FakeCounter:
        raise NotAvailable("needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) to load eBPF programs")

    k = KernelDrops(opener=opener)
    assert k.start() is False
    assert k.why_not is not None and k.why_not.startswith("needs root")
    assert k.read() == []
    k.stop()
    k.stop()


def test_stop_closes_the_counter_once() -> None:
    fake = FakeCounter([tcp(1)])
    k = adapter(fake)
    k.stop()
    assert fake.closed and k.read() == []
    k.stop()


def test_open_counter_turns_the_loaders_refusal_into_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from badsum.kernel import session

    def refuse(_btf: str | None = None) -> None:
        raise session.Unavailable("no kernel BTF at /nonexistent (a kernel built with CONFIG_DEBUG_INFO_BTF is needed)")

    monkeypatch.setattr(session, "DropCounter", refuse)
    with pytest.raises(NotAvailable, match="^no kernel BTF at /nonexistent"):
        kernel_drops.open_counter("/nonexistent")


# -- the choice -------------------------------------------------------------------------------


class FakeReader:
    def __init__(self, ok: bool, why: str | None = None) -> None:
        self.ok, self.why_not, self.started = ok, None if ok else why, False
        self.names: list[str] = []

    def start(self) -> bool:
        self.started = True
        return self.ok


def choose(choice: str, kernel_ok: bool, tracefs_ok: bool) -> tuple[kernel_drops.DropSource, FakeReader, FakeReader]:
    k, t = FakeReader(kernel_ok, "no kernel BTF at /x"), FakeReader(tracefs_ok, "tracefs not available: no")

    def tracefs(name: str) -> FakeReader:
        t.names.append(name)
        return t

    return open_drops(choice, "badsum-watch-1", kernel=lambda: k, tracefs=tracefs), k, t  # type: ignore[arg-type,return-value]


def test_auto_prefers_the_kernel_counter() -> None:
    src, k, t = choose("auto", True, True)
    assert (src.reader, src.method, src.kernel_why_not, src.why_not) == (k, KERNEL, None, None)
    assert not t.started  # no tracefs instance when the kernel counter runs


def test_auto_falls_back_to_tracefs_and_keeps_the_reason() -> None:
    src, _k, t = choose("auto", False, True)
    assert (src.reader, src.method, src.kernel_why_not, src.why_not) == (t, COUNTER_JOIN, "no kernel BTF at /x", None)
    assert t.names == ["badsum-watch-1"]


def test_neither_says_both_reasons() -> None:
    src, _k, _t = choose("auto", False, False)
    assert src.reader is None and src.method is None
    assert src.why_not == "no kernel BTF at /x; and tracefs not available: no"


def test_kernel_only_never_touches_tracefs_and_tracefs_only_never_loads_a_program() -> None:
    src, _k, t = choose("kernel", False, True)
    assert (src.reader, src.method, src.why_not) == (None, None, "no kernel BTF at /x") and not t.started
    src, k, t = choose("tracefs", True, True)
    assert (src.reader, src.method, src.kernel_why_not) == (t, COUNTER_JOIN, None) and not k.started
    with pytest.raises(ValueError):
        choose("bpftrace", True, True)


@pytest.mark.root
def test_start_and_stop_leave_no_descriptor_and_no_program() -> None:
    """The real counter, loaded and unloaded in this process: nothing stays open or loaded."""
    from badcsum import bpf_prog_ids, still_loaded

    need_root()

    fds = set(os.listdir("/proc/self/fd"))
    held: set[int] = set()
    for _ in range(3):
        k = KernelDrops()
        if not k.start():
            pytest.skip(f"the kernel drop counter cannot run here: {k.why_not}")
        held |= bpf_prog_ids(os.getpid())
        k.read()
        k.stop()
        k.stop()
    assert held
    assert set(os.listdir("/proc/self/fd")) == fds
    assert not bpf_prog_ids(os.getpid())
    assert still_loaded(held) == set()
