"""The kernel log lines that matter for checksums, offloads and tunnel MTUs, read once and bounded.

Source, in order: `/dev/kmsg` opened read-only and non-blocking (every record still in the ring,
with its facility, sequence number and boot-relative time in microseconds), else `dmesg --raw`
(the same records as text). Both need root or `kernel.dmesg_restrict=0`; without them the log is
unknown and the snapshot says why, it never guesses.

Only records of the kernel facility (0) are kept. Root can write to /dev/kmsg, but the kernel files
those records under LOG_USER unless a non-zero facility is given (devkmsg_write), so a line a
program wrote can look like "eth0: hw csum failure" yet never pass as the kernel's.

What is kept (the kinds, with the kernel code that prints them):
- `hw-csum-failure`: netdev_rx_csum_fault() prints "<dev>: hw csum failure" when a
  CHECKSUM_COMPLETE value disagrees with the data (KB-008; BPF csum helpers on IPv6, known-issues-2 B).
- `bad-offload`: skb_warn_bad_offload() warns "<dev>: caps=(...)" with the GSO type and the device's
  features when a GSO/TSO skb reaches a device path that cannot take it (KB-007-like forwarders,
  tunnel GSO mismatches, known-issues-2 C/D).
- `udp-bad-checksum`: "UDP: bad checksum. From a:p to b:q ulen n" (and UDPv6), net_dbg_ratelimited
  in __udp4_lib_rcv/__udp6_lib_rcv, printed only with dynamic debug on.
- `tunnel-mtu`: VXLAN/Geneve/OVS lines naming an MTU ("vxlan: ... mtu", "Dropped ... larger than MTU").
The parse is pure (`parse_kmsg_record`, `parse_dmesg_line`); `read_kernel_log` does the bounded I/O.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from badsum.host.model import KernelLog, KernelLogEvent

KMSG = "/dev/kmsg"
#: Bounds: records read, bytes of one message kept, matching lines kept (the newest), bytes of dmesg output read.
MAX_RECORDS = 50_000
MAX_MESSAGE = 512
MAX_MATCHES = 200
MAX_DMESG_BYTES = 16 * 1024 * 1024
DMESG_TIMEOUT = 10.0
KERNEL_FACILITY = 0

# A device name is at most 15 bytes of anything but '/', ':' and whitespace (dev_valid_name). netdev_err()
# puts the driver and bus id before it ("mlx5_core 0000:03:00.0 eth0: ...") and may add a state in parentheses.
_DEV = r"(?:^|\s)(?P<dev>[^\s:/]{1,15})(?: \([a-z ]+\))?"
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("hw-csum-failure", re.compile(rf"{_DEV}: hw csum failure\b|^hw csum failure\b")),
    ("bad-offload", re.compile(rf"{_DEV}: caps=\(|\bskb_warn_bad_offload\b")),
    ("udp-bad-checksum", re.compile(r"^UDP(?:v6)?: bad checksum\. From (?P<src>\S+) to (?P<dst>\S+) ulen (?P<ulen>\d+)")),
    ("tunnel-mtu", re.compile(r"^(?:vxlan|geneve|openvswitch)\b.*\bmtu\b|(?:vxlan|geneve).*\bmtu\b|"
                              r"\bpacket length \d+ is larger than (?:the )?mtu", re.IGNORECASE)),  # fmt: skip
)
KINDS = tuple(k for k, _ in PATTERNS)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One kernel log record as the ring holds it."""

    facility: int
    level: int
    seq: int | None
    usec: int | None
    """Time since boot in microseconds (the ring's clock); None when dmesg printed no time."""
    message: str


#: The snapshot's records (host/model.py), under the names this module's callers use.
LogEvent = KernelLogEvent


# -- parsing (pure) ----------------------------------------------------------------------------


def parse_kmsg_record(raw: bytes) -> LogRecord | None:
    """One /dev/kmsg record: `prio,seq,usec,flags[,...];message\\n[ KEY=value\\n...]` (Documentation/ABI/
    testing/dev-kmsg). Non-printable bytes arrive escaped as \\xNN; anything malformed gives None."""
    head, sep, rest = raw.partition(b";")
    if not sep:
        return None
    fields = head.split(b",")
    if len(fields) < 3:
        return None
    try:
        prio, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None
    if prio < 0 or seq < 0 or usec < 0:
        return None
    message = rest.split(b"\n", 1)[0][:MAX_MESSAGE].decode("utf-8", errors="replace")
    return LogRecord(prio >> 3, prio & 7, seq, usec, message)


_DMESG = re.compile(r"^(?:.{0,80}?\bkernel: )?(?:<(?P<prio>\d{1,4})>)?(?:\[\s*(?P<sec>\d+)\.(?P<frac>\d{1,9})\]\s?)?(?P<msg>.*)$")


def parse_dmesg_line(line: str) -> LogRecord | None:
    """A `dmesg --raw` line, `<prio>[  sec.usec] message`. Plain `dmesg` lines and syslog lines
    (`Dec  6 12:00:01 node kernel: [ 12.3] ...`, as journald and logread store them) carry no
    priority and are taken as the kernel's: they are the kernel's by where they were read from."""
    m = _DMESG.match(line.rstrip("\n")[: MAX_MESSAGE + 40])
    if m is None or not m["msg"]:
        return None
    prio = int(m["prio"]) if m["prio"] is not None else KERNEL_FACILITY << 3
    usec = int(m["sec"]) * 1_000_000 + int(m["frac"].ljust(6, "0")[:6]) if m["sec"] is not None else None
    return LogRecord(prio >> 3, prio & 7, None, usec, m["msg"][:MAX_MESSAGE])


def classify(rec: LogRecord) -> LogEvent | None:
    for kind, pattern in PATTERNS:
        if m := pattern.search(rec.message):
            dev = m.groupdict().get("dev")
            return LogEvent(kind, None if not dev or dev == "<unknown>" else dev, rec.usec, rec.seq, rec.message)
    return None


def summarise(records: Iterable[LogRecord], source: str, *, facilities: frozenset[int] = frozenset({KERNEL_FACILITY}),
              truncated: bool = False) -> KernelLog:  # fmt: skip
    """The events of the kept facilities, newest MAX_MATCHES kept, every one counted."""
    kept: list[LogEvent] = []
    counts: dict[str, int] = {}
    n = 0
    for rec in records:
        n += 1
        if rec.facility not in facilities:
            continue
        ev = classify(rec)
        if ev is None:
            continue
        counts[ev.kind] = counts.get(ev.kind, 0) + 1
        kept.append(ev)
        if len(kept) > 2 * MAX_MATCHES:
            del kept[:MAX_MATCHES]
    return KernelLog(source, tuple(kept[-MAX_MATCHES:]), counts, n, truncated)


# -- reading -----------------------------------------------------------------------------------


def _kmsg_records(path: str, limit: int) -> tuple[list[LogRecord], bool]:
    """Every record in the ring, read with O_NONBLOCK until EAGAIN (the end) or `limit`."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    out: list[LogRecord] = []
    try:
        while len(out) < limit:
            try:
                raw = os.read(fd, 8192)  # one record per read; the kernel's records are < 8 KiB
            except BlockingIOError:
                return out, False
            except OSError as e:
                if e.errno == errno.EPIPE:  # the ring overwrote the next record while we read: go on
                    continue
                if e.errno == errno.EINVAL:  # a record larger than the buffer: skip it
                    continue
                raise
            if not raw:
                return out, False
            rec = parse_kmsg_record(raw)
            if rec is not None:
                out.append(rec)
        return out, True
    finally:
        os.close(fd)


def _dmesg_records(limit: int) -> tuple[list[LogRecord], bool]:
    p = subprocess.run(["dmesg", "--raw", "--nopager"], capture_output=True, timeout=DMESG_TIMEOUT, check=False)
    if p.returncode != 0:
        why = p.stderr.decode(errors="replace").strip().splitlines()
        raise PermissionError(why[-1] if why else f"dmesg exited {p.returncode}")
    data = p.stdout[:MAX_DMESG_BYTES]
    truncated = len(p.stdout) > MAX_DMESG_BYTES
    out: list[LogRecord] = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        if len(out) >= limit:
            return out, True
        rec = parse_dmesg_line(line)
        if rec is not None:
            out.append(rec)
    return out, truncated


def read_kernel_log(*, path: str = KMSG, limit: int = MAX_RECORDS,
                    facilities: frozenset[int] = frozenset({KERNEL_FACILITY})) -> KernelLog:  # fmt: skip
    """Read the ring once (never waits for new records). Never raises: an unreadable log is a KernelLog
    with source None and the reason."""
    errors = []
    try:
        recs, truncated = _kmsg_records(path, limit)
        return summarise(recs, KMSG if path == KMSG else path, facilities=facilities, truncated=truncated)
    except OSError as e:
        errors.append(f"{path}: {e.strerror or e}")
    try:
        recs, truncated = _dmesg_records(limit)
        return summarise(recs, "dmesg", facilities=facilities, truncated=truncated)
    except FileNotFoundError:
        errors.append("dmesg is not installed")
    except (OSError, subprocess.TimeoutExpired) as e:
        errors.append(f"dmesg: {e}")
    return KernelLog(None, error="kernel log unreadable (" + "; ".join(errors) + ")")


__all__ = ["KINDS", "KernelLog", "LogEvent", "LogRecord", "classify", "parse_dmesg_line", "parse_kmsg_record",
           "read_kernel_log", "summarise"]  # fmt: skip
