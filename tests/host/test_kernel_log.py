"""The kernel log reader: recorded logs of several kernels and formats, hostile records, the bounds,
and the live ring (root writes a line through /dev/kmsg and reads it back, filed under LOG_USER)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from badsum.host import kernel_log as kl

DATA = Path(__file__).resolve().parents[1] / "data" / "kernel_log"


def read_fixture(name: str, facilities: frozenset[int] = frozenset({0})) -> kl.KernelLog:
    lines = (DATA / name).read_text().splitlines()
    recs = [r for r in (kl.parse_dmesg_line(ln) for ln in lines) if r is not None]
    return kl.summarise(recs, "dmesg", facilities=facilities)


def test_a_quiet_modern_log_reports_nothing() -> None:
    log = read_fixture("linux-6.18-quiet.dmesg")
    assert log.records > 10
    assert log.events == () and log.counts == {}


def test_raspberry_pi_510_fault_names_eth0() -> None:
    log = read_fixture("rpi-5.10-hw-csum.dmesg")
    assert log.counts == {"hw-csum-failure": 1}
    (ev,) = log.events
    assert ev.device == "eth0" and ev.usec == 20996_184301
    # The trace frames that follow are not faults of their own.
    assert log.devices("hw-csum-failure") == {"eth0": 1}


def test_syslog_format_of_a_44_kernel() -> None:
    log = read_fixture("openwrt-4.4-logread.txt")
    assert log.counts == {"hw-csum-failure": 2}
    assert [e.usec for e in log.events] == [2483_365003, 2484_101337]
    assert log.devices("hw-csum-failure") == {"eth1": 2}


def test_6x_formats_driver_prefix_gso_warning_and_udp_debug() -> None:
    log = read_fixture("netdev-err-6.x.dmesg")
    kinds = [(e.kind, e.device) for e in log.events]
    assert kinds == [("hw-csum-failure", "ens1f0np0"), ("bad-offload", "vxlan.calico"), ("bad-offload", None),
                     ("udp-bad-checksum", None), ("hw-csum-failure", None)]  # fmt: skip
    assert log.counts == {"hw-csum-failure": 2, "bad-offload": 2, "udp-bad-checksum": 1}


@pytest.mark.parametrize("raw", [b"", b"no separator", b"a,b,c;x", b"3,1;too few", b"-3,1,2,-;neg", b"\xff\xfe;\x00",
                                 b"3,1,2", b"99999999999999999999999,1,2,-;big prio"])  # fmt: skip
def test_malformed_kmsg_records_are_dropped(raw: bytes) -> None:
    rec = kl.parse_kmsg_record(raw)
    assert rec is None or (rec.message and len(rec.message) <= kl.MAX_MESSAGE)


def test_kmsg_record_with_dictionary_and_escapes() -> None:
    rec = kl.parse_kmsg_record(b"4,77,123456,-;eth0: hw csum failure \\x01\n SUBSYSTEM=net\n DEVICE=n2\n")
    assert rec == kl.LogRecord(0, 4, 77, 123456, "eth0: hw csum failure \\x01")
    assert kl.classify(rec).device == "eth0"


def test_a_huge_binary_record_is_cut() -> None:
    raw = b"3,1,2,-;" + os.urandom(1 << 20)
    rec = kl.parse_kmsg_record(raw)
    assert rec is not None and len(rec.message) <= kl.MAX_MESSAGE
    line = kl.parse_dmesg_line("<3>[ 1.0] " + "x" * (1 << 20))
    assert line is not None and len(line.message) <= kl.MAX_MESSAGE


def test_user_facility_lines_never_pass_as_the_kernels() -> None:
    # What `echo '<3>eth0: hw csum failure' > /dev/kmsg` becomes: the kernel files it under LOG_USER (1).
    forged = kl.parse_kmsg_record(b"11,5,10,-;eth0: hw csum failure\n")
    assert forged is not None and forged.facility == 1
    assert kl.summarise([forged], "/dev/kmsg").events == ()
    assert len(kl.summarise([forged], "/dev/kmsg", facilities=frozenset({1})).events) == 1


def test_a_flood_is_bounded_and_still_counted() -> None:
    n = 100_000
    recs = (kl.LogRecord(0, 3, i, i, f"veth{i % 7}: hw csum failure") for i in range(n))
    log = kl.summarise(recs, "/dev/kmsg")
    assert log.records == n and log.counts == {"hw-csum-failure": n}
    assert len(log.events) == kl.MAX_MATCHES
    assert log.events[-1].seq == n - 1 and log.events[0].seq == n - kl.MAX_MATCHES  # the newest are kept


def test_unreadable_everywhere_is_one_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dmesg
    log = kl.read_kernel_log(path=str(tmp_path / "no-kmsg"))
    assert log.source is None and log.events == ()
    assert "no-kmsg" in log.error and "dmesg is not installed" in log.error


@pytest.mark.root
def test_live_ring_reads_back_a_line_written_now() -> None:
    """Root writes one line (LOG_USER, marked as a test) and reads the ring: the line is there with
    a time and sequence number, and is not taken for the kernel's."""
    dev = "bst" + secrets.token_hex(3)
    text = f"<12>{dev}: hw csum failure (a badsum test line, not from the kernel)\n"
    with open(kl.KMSG, "w") as f:  # noqa: PTH123 - a character device
        f.write(text)
    mine = kl.read_kernel_log(facilities=frozenset({1}))
    assert mine.source == kl.KMSG and mine.error is None
    hits = [e for e in mine.events if e.device == dev]
    assert len(hits) == 1 and hits[0].kind == "hw-csum-failure"
    assert hits[0].seq is not None and hits[0].usec is not None and hits[0].usec > 0
    kernel_only = kl.read_kernel_log()
    assert all(e.device != dev for e in kernel_only.events)
    assert kernel_only.records == mine.records or abs(kernel_only.records - mine.records) < 50  # same ring


@pytest.mark.root
def test_live_ring_read_stops_at_the_bound() -> None:
    log = kl.read_kernel_log(limit=5)
    assert log.records == 5 and log.truncated
