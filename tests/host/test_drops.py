"""The kfree_skb format and trace text parsers, and DropWatch's incremental reading (no root)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from support import REPO

from badsum.host import drops
from badsum.host.drops import Drop, DropWatch, TraceLine

FIXTURE = REPO / "tests" / "data" / "kfree_skb-format-6.18.txt"
#: The `uname -r` of the machine the fixture was read on, kept beside it.
FIXTURE_RELEASE = json.loads(FIXTURE.with_suffix(".json").read_text())["release"]
#: A kernel enum name as __print_symbolic prints it (SKB_DROP_REASON_ stripped).
REASON_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
#: A line the 6.18 kernel of this project's machine wrote into a watch instance's trace_pipe.
REAL_LINE = ("     kworker/0:0-27028   [000] .....  8012.778407: kfree_skb: skbaddr=000000000f30323f "
             "rx_sk=0000000000000000 protocol=0 location=virtio_transport_recv_pkt+0x414/0xf80 reason: NOT_SPECIFIED")  # fmt: skip


def _symbolic_entries(text: str) -> list[tuple[int, str]]:
    """An independent reading of the table: split the print fmt on `}, {` by hand."""
    body = text.split("__print_symbolic(REC->reason,", 1)[1].rsplit(")", 1)[0]
    out = []
    for chunk in body.split("},"):
        chunk = chunk.strip().strip("{} )")
        if not chunk:
            continue
        value, name = chunk.split(",", 1)
        out.append((int(value), name.strip().strip('"')))
    return out


def test_reasons_of_the_stored_6_18_format() -> None:
    text = FIXTURE.read_text()
    reasons = drops.parse_reasons(text)
    assert reasons == dict(_symbolic_entries(text))
    assert len(reasons) == len(set(reasons.values())) == text.count('"') // 2 - 1  # minus the format string
    # The numbers the kernel gave the checksum reasons in 6.18 (include/net/dropreason-core.h).
    assert {k: reasons[k] for k in (10, 11, 14, 85, 93)} == {10: "TCP_CSUM", 11: "UDP_CSUM", 14: "IP_CSUM",
                                                          85: "ICMP_CSUM", 93: "PKT_TOO_BIG"}  # fmt: skip
    assert drops.has_reason_field(text)
    # The release recorded beside it is the build the file came from, not a guess at a family.
    assert FIXTURE_RELEASE.startswith("6.18.") and FIXTURE_RELEASE.count(".") >= 2


def _live_format() -> str | None:
    for root in drops.TRACEFS_CANDIDATES:
        p = Path(root, drops.EVENT, "format")
        try:
            return p.read_text()
        except OSError:
            continue
    for line in Path("/proc/self/mounts").read_text().splitlines():
        f = line.split()
        if len(f) > 2 and f[2] == "tracefs":
            try:
                return Path(f[1], drops.EVENT, "format").read_text()
            except OSError:
                continue
    return None


def _mounted_format(tmp: Path) -> str | None:
    """As root: mount tracefs on a private directory just to read the format, then unmount."""
    point = tmp / "tracefs"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tracefs", "nodev", str(point)], capture_output=True, timeout=10, check=False).returncode:
        return None
    try:
        return (point / drops.EVENT / "format").read_text()
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, timeout=10, check=True)


def test_reasons_of_the_live_kernel(tmp_path: Path) -> None:
    text = _live_format()
    if text is None and os.geteuid() == 0:
        text = _mounted_format(tmp_path)
    if text is None:
        pytest.skip("no tracefs readable here (not mounted, and mounting it needs root)")
    reasons = drops.parse_reasons(text)
    entries = _symbolic_entries(text)
    # Properties any kernel with drop reasons (5.17+) has; the numbers themselves move between
    # builds of one patch release (6.18.44-fc-v1272 inserted IPV6_TOO_MANY_EXTHDRS at 99).
    assert reasons == dict(entries) and len(reasons) > 10
    assert len(entries) == len(reasons) == len(set(reasons.values())), "a value or a name twice"
    assert all(REASON_NAME.fullmatch(name) for name in reasons.values()), reasons
    assert all(value >= 0 for value in reasons)
    assert {"NOT_SPECIFIED", "TCP_CSUM", "UDP_CSUM", "IP_CSUM", "ICMP_CSUM"} <= set(reasons.values())
    if os.uname().release == FIXTURE_RELEASE:  # the very build the fixture was read on
        assert reasons == drops.parse_reasons(FIXTURE.read_text())


def test_a_format_without_reasons_gives_none() -> None:
    old = re.sub(r", __print_symbolic\(.*", ")", FIXTURE.read_text().replace(" reason: %s", ""))
    old = old.replace("\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n", "")
    assert drops.parse_reasons(old) == {} and not drops.has_reason_field(old)
    assert drops.parse_reasons("") == {}


def test_parse_a_real_trace_line() -> None:
    assert drops.parse_line(REAL_LINE) == TraceLine("NOT_SPECIFIED", 0, "virtio_transport_recv_pkt")


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (("<idle>-0 [001] ..s2. 1.5: kfree_skb: skbaddr=00000000abcd rx_sk=0000000000000000 protocol=2048 "
          "location=tcp_v4_rcv+0x1a2/0x1000 reason: TCP_CSUM"), TraceLine("TCP_CSUM", 0x0800, "tcp_v4_rcv")),
        ("x-1 [000] ..... 2.0: kfree_skb: skbaddr=0000 rx_sk=0000 protocol=34525 location=ip6_mc_input reason: 0x9999",
         TraceLine("0x9999", 0x86DD, "ip6_mc_input")),
        ("x-1 [000] ..... 2.0: kfree_skb: skbaddr=0000 protocol=2048 location=0xffffffff81000000",
         TraceLine(None, 0x0800, "0xffffffff81000000")),
        ("x-1 [000] ..... 2.0: consume_skb: skbaddr=0000 location=foo", None),
        ("CPU:1 [LOST 12 EVENTS]", None),
        ("", None),
        ("kfree_skb: protocol=notanumber location=x", None),
    ],
)  # fmt: skip
def test_parse_line_cases(line: str, want: TraceLine | None) -> None:
    assert drops.parse_line(line) == want


def test_lost_events() -> None:
    assert drops.lost_events("CPU:1 [LOST 12 EVENTS]") == 12
    assert drops.lost_events(REAL_LINE) == 0


def test_reason_names_map_numbers_through_the_table() -> None:
    table = drops.parse_reasons(FIXTURE.read_text())
    assert drops.reason_name("TCP_CSUM", table) == "TCP_CSUM"
    assert drops.reason_name("0xa", table) == "TCP_CSUM"
    assert drops.reason_name("10", table) == "TCP_CSUM"
    assert drops.reason_name("0x9999", table) == "UNKNOWN_39321"
    assert drops.reason_name(None, table) == "NOT_SPECIFIED"


def test_group_counts_by_reason_protocol_location_most_first() -> None:
    lines = [TraceLine("TCP_CSUM", 0x800, "tcp_v4_rcv")] * 3 + [TraceLine("UDP_CSUM", 0x86DD, "__udp6_lib_rcv")]
    lines += [TraceLine("TCP_CSUM", 0x86DD, "tcp_v6_rcv")]
    got = drops.group(lines, {})
    assert got == [Drop("TCP_CSUM", 0x800, "tcp_v4_rcv", None, 3), Drop("UDP_CSUM", 0x86DD, "__udp6_lib_rcv", None, 1),
                   Drop("TCP_CSUM", 0x86DD, "tcp_v6_rcv", None, 1)]  # fmt: skip
    assert got[0].protocol_name == "IPv4" and got[1].protocol_name == "IPv6"
    assert drops.protocol_name(0x1234) == "0x1234"
    assert drops.group([], {}) == []


def test_read_is_incremental_and_keeps_a_split_line_for_later() -> None:
    """A pipe stands in for trace_pipe: what was read is not read again, half a line waits."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    watch = DropWatch("badsum-watch-test")
    watch._fd = r
    try:
        assert watch.read() == []
        line = REAL_LINE.replace("NOT_SPECIFIED", "TCP_CSUM").replace("protocol=0", "protocol=2048") + "\n"
        os.write(w, (line * 2 + line[:40]).encode())
        assert watch.read() == [Drop("TCP_CSUM", 0x800, "virtio_transport_recv_pkt", None, 2)]
        assert watch.read() == []
        os.write(w, (line[40:] + "CPU:0 [LOST 5 EVENTS]\n").encode())
        assert watch.read() == [Drop("TCP_CSUM", 0x800, "virtio_transport_recv_pkt", None, 1)]
        assert watch.lost == 5
    finally:
        watch.stop()
        os.close(w)
    assert watch._fd is None
    with pytest.raises(OSError):
        os.fstat(r)  # stop() closed it: no fd leak


def test_a_read_is_bounded_and_the_rest_comes_next_time() -> None:
    """A host freeing skbs faster than we parse: one read() stops after its byte budget (it must
    return, and must not hold everything), and the following reads get the rest, none twice."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: room for the whole test in the pipe
    watch = DropWatch("badsum-watch-test")
    watch._fd = r
    watch.MAX_READ_BYTES = 4096
    line = (REAL_LINE.replace("NOT_SPECIFIED", "TCP_CSUM").replace("protocol=0", "protocol=2048") + "\n").encode()
    n = (64 * 1024) // len(line)
    try:
        os.write(w, line * n)
        first = watch.read()
        assert 0 < first[0].count < n  # stopped at its budget, not at the end of the data
        total, reads = first[0].count, 1
        while total < n:
            got = watch.read()
            assert got, "a later read must get what the first left"
            total += got[0].count
            reads += 1
        assert total == n and watch.read() == [] and reads > 2
    finally:
        watch.stop()
        os.close(w)


def test_start_without_tracefs_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def cannot_mount(argv: list[str]) -> str | None:
        calls.append(argv)
        return "mount: unknown filesystem type 'tracefs'."

    before = set(os.listdir(tmp_path))
    watch = DropWatch("badsum-watch-test", candidates=(str(tmp_path / "none"),), command=cannot_mount)
    assert watch.start() is False
    assert watch.why_not == "tracefs not available: mount: unknown filesystem type 'tracefs'."
    assert calls and calls[0][:4] == ["mount", "-t", "tracefs", "nodev"] and not os.path.exists(calls[0][4])
    assert set(os.listdir(tmp_path)) == before


def test_start_on_a_kernel_without_drop_reasons(tmp_path: Path) -> None:
    """A fake tracefs tree whose kfree_skb format predates drop reasons (Linux < 5.17)."""
    event = tmp_path / "events" / "skb" / "kfree_skb"
    event.mkdir(parents=True)
    (tmp_path / "instances").mkdir()
    fmt = FIXTURE.read_text().split("\tfield:enum skb_drop_reason")[0] + '\nprint fmt: "skbaddr=%p protocol=%u location=%p"\n'
    (event / "format").write_text(fmt)
    watch = DropWatch("badsum-watch-test", candidates=(str(tmp_path),), command=lambda argv: None)
    assert watch.start() is False
    assert watch.why_not == "this kernel's skb:kfree_skb has no drop reasons (they came with Linux 5.17)"
    assert os.listdir(tmp_path / "instances") == []
