"""`badsum pcap` end to end: exit codes, --json, --jsonl, --annotate, stdin/gzip, damage, help/docs.

Inputs are built with scapy (an independent packet builder); the expected verdicts come from how
each frame was built, the checksums badsum should compute from scapy's own, and tshark where it is
installed. Most checks run the real process (`python -m badsum`) so exit codes, stderr and files
are what a user sees; cheap option checks call `badsum.cli.main.main` in-process.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from builders import pseudo4
from support import need_tool
from scapy.all import ARP, IP, TCP, UDP, VXLAN, Ether, IPv6, PcapNgReader, PcapNgWriter, Raw, wrpcap

from badsum.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "cli.md"
TIMEOUT = 60
BADSUM = [sys.executable, "-m", "badsum"]
JSONL_KEYS = {"frame", "layer", "depth", "status", "stored", "computed", "offset", "flow", "reason"}
ENVELOPE_KEYS = {"schema_version", "command", "status", "data", "errors"}
STATUS_BY_EXIT = {0: "ok", 1: "findings", 3: "error"}

A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
ETH, IP4, IP6 = 14, 20, 40  # header lengths, for the checksum field offsets badsum must report
LIBPCAP_MAX_CAPLEN = 262144  # libpcap/Wireshark's largest normal record (pcap-savefile)


# -- independent arithmetic (RFC 1071, RFC 793 pseudo-header) -------------------------------------


# The arithmetic comes from tests/builders.py (RFC 1071/793 written out apart from badsum's).
pseudo_header_sum4 = pseudo4



# -- captures built with scapy ------------------------------------------------------------------


def _frame(pkt) -> Ether:
    """Serialise once so scapy fills every length and checksum, then parse back."""
    return Ether(bytes(pkt))


def _tcp4(i: int) -> Ether:
    return _frame(
        Ether(**MAC) / IP(src=A4, dst=B4) / TCP(sport=40000 + i, dport=80, flags="PA", seq=i) / Raw(b"t" * (40 + i))
    )


def _udp4(i: int) -> Ether:
    return _frame(Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=50000 + i, dport=53) / Raw(b"u" * (21 + i)))


def _tcp6(i: int) -> Ether:
    return _frame(
        Ether(**MAC) / IPv6(src=A6, dst=B6) / TCP(sport=41000 + i, dport=443, flags="A") / Raw(b"s" * (30 + i))
    )


def _udp6(i: int) -> Ether:
    return _frame(Ether(**MAC) / IPv6(src=A6, dst=B6) / UDP(sport=51000 + i, dport=123) / Raw(b"n" * (17 + i)))


def _arp() -> Ether:
    return _frame(Ether(src=MAC["src"], dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=A4, pdst=B4))


def _with_checksum(frame: Ether, layer, value: int) -> Ether:
    p = Ether(bytes(frame))
    p[layer].chksum = value
    return Ether(bytes(p))


@dataclass(frozen=True)
class Injected:
    """One checksum a test made non-ok on purpose, and what badsum must say about it."""

    frame: int
    layer: str
    status: str
    stored: int
    computed: int
    offset: int


def good_frames() -> list[Ether]:
    """ARP, TCP and UDP over IPv4 and IPv6: every checksum verifies."""
    return [_arp(), _tcp4(1), _udp4(1), _tcp6(1), _udp6(1), _tcp4(2), _udp4(2), _arp(), _tcp6(2)]


def bad_frames() -> tuple[list[Ether], list[Injected]]:
    """Good frames with a corrupted TCP, a corrupted UDP, a partial TCP and a corrupted IPv6 TCP."""
    frames = good_frames() + [_tcp4(3), _udp4(3), _tcp4(4), _tcp6(3), _udp6(2)]
    injected = []

    def corrupt(index: int, layer, name: str, offset: int) -> None:
        right = frames[index][layer].chksum
        wrong = right ^ 0x5A5A
        frames[index] = _with_checksum(frames[index], layer, wrong)
        injected.append(Injected(index + 1, name, "bad", wrong, right, offset))

    corrupt(9, TCP, "tcp", ETH + IP4 + 16)
    corrupt(10, UDP, "udp", ETH + IP4 + 6)
    corrupt(12, TCP, "tcp", ETH + IP6 + 16)
    # Partial: the field holds the pseudo-header sum alone, as a sender with TX offload leaves it.
    p = frames[11]
    l4_length = p[IP].len - p[IP].ihl * 4
    partial = pseudo_header_sum4(p[IP].src, p[IP].dst, 6, l4_length)
    assert partial != p[TCP].chksum
    injected.append(Injected(12, "tcp", "partial", partial, p[TCP].chksum, ETH + IP4 + 16))
    frames[11] = _with_checksum(p, TCP, partial)
    injected.sort(key=lambda i: i.frame)
    return frames, injected


def partial_frames() -> list[Ether]:
    """A good UDP packet, then a TCP packet whose checksum is the pseudo-header sum only."""
    p = _tcp4(7)
    partial = pseudo_header_sum4(A4, B4, 6, p[IP].len - p[IP].ihl * 4)
    return [_udp4(7), _with_checksum(p, TCP, partial)]


def write_pcapng(path: Path, frames: list[Ether], direction: int | None = None, comment: bytes | None = None) -> Path:
    w = PcapNgWriter(str(path))
    for f in frames:
        f = Ether(bytes(f))
        if direction is not None:
            f.direction = direction
        if comment is not None:
            f.comments = [comment]
        w.write(f)
    w.close()
    return path


def pcap_record_starts(data: bytes) -> list[int]:
    """Offsets of each record of a little-endian microsecond pcap written by scapy, plus the end."""
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    starts, pos = [], 24
    while pos + 16 <= len(data):
        starts.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    return starts + [pos]


def raw_pcap(records: list[bytes]) -> bytes:
    """A pcap by hand, for files too large to build packet by packet with scapy quickly."""
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    return head + b"".join(struct.pack("<IIII", 1, n, len(r), len(r)) + r for n, r in enumerate(records))


BIG_PACKETS = 70_001  # crosses the reader's 65,536-packet batch boundary
BIG_BAD_EVERY = 7


@pytest.fixture(scope="module")
def caps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("caps")
    frames, _ = bad_frames()
    out = {
        "good": d / "good.pcap",
        "bad": d / "bad.pcap",
        "partial": d / "partial.pcap",
    }
    wrpcap(str(out["good"]), good_frames())
    wrpcap(str(out["bad"]), frames)
    wrpcap(str(out["partial"]), partial_frames())
    out["bad_ng"] = write_pcapng(d / "bad.pcapng", frames)
    out["partial_in"] = write_pcapng(d / "partial_in.pcapng", partial_frames(), direction=1)
    out["partial_out"] = write_pcapng(d / "partial_out.pcapng", partial_frames(), direction=2)
    out["partial_in_pending"] = write_pcapng(d / "partial_in_pending.pcapng", partial_frames(), direction=1,
                                             comment=b"badsum:tp_status=0x00000008 TP_STATUS_CSUMNOTREADY")
    out["partial_in_complete"] = write_pcapng(d / "partial_in_complete.pcapng", partial_frames(), direction=1,
                                              comment=b"badsum:tp_status=0x00000000")
    out["bad_gz"] = d / "bad.pcap.gz"
    out["bad_gz"].write_bytes(gzip.compress(out["bad"].read_bytes()))
    good, bad = bytes(_tcp4(5)), bytes(_with_checksum(_tcp4(5), TCP, 0x1234))
    arp = bytes(_arp())
    records = [bad if n % BIG_BAD_EVERY == 0 else arp if n % 5 == 0 else good for n in range(1, BIG_PACKETS + 1)]
    out["big"] = d / "big.pcap"
    out["big"].write_bytes(raw_pcap(records))
    return out


INJECTED = bad_frames()[1]
BIG_BAD_FRAMES = [n for n in range(1, BIG_PACKETS + 1) if n % BIG_BAD_EVERY == 0]


# -- running badsum -----------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without variables that make rich pretend stderr is a terminal."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")
    }
    env.update(extra)
    return env


def badsum(*args: str | Path, stdin: bytes | None = None, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    proc = subprocess.run(
        [*BADSUM, *map(str, args)],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=TIMEOUT,
        env=env or clean_env(),
        cwd=cwd,
        check=False,
    )
    result = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result


def envelope(result: subprocess.CompletedProcess[str]) -> dict:
    doc = json.loads(result.stdout)
    assert set(doc) == ENVELOPE_KEYS
    assert doc["schema_version"] == 1
    assert doc["command"] == "pcap"
    assert doc["status"] == STATUS_BY_EXIT[result.returncode], (doc["status"], result.returncode)
    assert isinstance(doc["data"], dict) and isinstance(doc["errors"], list)
    return doc


def jsonl(text: str, record: str = "checksum") -> list[dict]:
    """The `--jsonl` records of one kind (checksum lines come first, then symptom lines)."""
    return [r for r in map(json.loads, text.splitlines()) if r["record"] == record]


def one_line_naming(stderr: str, name: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {stderr!r}"
    assert lines[0].startswith("badsum:"), lines[0]
    assert name in lines[0], lines[0]


def in_process(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# -- exit codes ---------------------------------------------------------------------------------


def test_good_capture_exits_0_with_the_answer_first(caps: dict[str, Path]) -> None:
    r = badsum("pcap", caps["good"])
    assert r.returncode == 0, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith(str(caps["good"])) and f"{len(good_frames())} packets" in first
    assert "all" in r.stdout and "verify" in r.stdout


def test_bad_checksum_exits_1(caps: dict[str, Path]) -> None:
    r = badsum("pcap", caps["bad"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "BAD" in r.stdout.splitlines()[1]


def test_partial_exits_0_unless_the_packet_was_received(
    capsys: pytest.CaptureFixture[str], caps: dict[str, Path]
) -> None:
    # No direction, or outbound: normal on the sending host. Inbound without the kernel's status:
    # normal across a veth (the peer gets the same skb, sum pending). Inbound with the kernel's
    # status and no checksum pending: a forwarder re-created the packet unfinished (KB-005).
    cases = (("partial", 0), ("partial_out", 0), ("partial_in", 0), ("partial_in_pending", 0), ("partial_in_complete", 1))
    for name, expected in cases:
        code, out, _ = in_process(capsys, "pcap", "--json", caps[name])
        doc = json.loads(out)
        assert code == expected, name
        assert doc["status"] == STATUS_BY_EXIT[expected]
        assert doc["data"]["totals"]["partial"] == 1 and doc["data"]["totals"]["bad"] == 0
        assert doc["data"]["inbound_partial"] == expected


USAGE_ERRORS = {
    "no-arguments": [],
    "no-file": ["pcap"],
    "unknown-command": ["frobnicate", "x.pcap"],
    "unknown-option": ["pcap", "--bogus", "x.pcap"],
    "json-and-jsonl": ["pcap", "--json", "--jsonl", "x.pcap"],
    "jobs-0": ["pcap", "--jobs", "0", "x.pcap"],
    "jobs-257": ["pcap", "-j", "257", "x.pcap"],
    "jobs-text": ["pcap", "--jobs", "many", "x.pcap"],
    "vxlan-port-70000": ["pcap", "--vxlan-port", "70000", "x.pcap"],
    "vxlan-port-0": ["pcap", "--vxlan-port", "0", "x.pcap"],
    "vxlan-port-text": ["pcap", "--vxlan-port", "vxlan", "x.pcap"],
}


@pytest.mark.parametrize("argv", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_exit_2_in_process(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = in_process(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "usage:" in err and "error:" in err


@pytest.mark.parametrize(
    "argv",
    [USAGE_ERRORS["no-file"], USAGE_ERRORS["json-and-jsonl"], USAGE_ERRORS["vxlan-port-70000"]],
    ids=["no-file", "json-and-jsonl", "vxlan-port-70000"],
)
def test_usage_errors_exit_2_as_a_process(argv: list[str]) -> None:
    r = badsum(*argv)
    assert r.returncode == 2
    assert r.stdout == ""
    assert "error:" in r.stderr.splitlines()[-1]


def _unreadable_inputs(d: Path) -> dict[str, Path]:
    (d / "a-directory").mkdir()
    (d / "empty.pcap").write_bytes(b"")
    noise = random.Random(6875).randbytes(4096)
    assert noise[:2] != b"\x1f\x8b"
    (d / "noise.pcap").write_bytes(noise)
    (d / "corrupt.pcap.gz").write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 64)
    return {
        "missing": d / "no-such-capture.pcap",
        "directory": d / "a-directory",
        "empty": d / "empty.pcap",
        "wrong-magic": d / "noise.pcap",
        "corrupt-gzip": d / "corrupt.pcap.gz",
    }


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "wrong-magic", "corrupt-gzip"])
def test_unreadable_input_exits_3_with_one_line(tmp_path: Path, case: str) -> None:
    path = _unreadable_inputs(tmp_path)[case]
    r = badsum("pcap", path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stdout == ""
    one_line_naming(r.stderr, str(path))


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "wrong-magic", "corrupt-gzip"])
def test_unreadable_input_json_envelope(capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str) -> None:
    path = _unreadable_inputs(tmp_path)[case]
    code, out, _ = in_process(capsys, "pcap", "--json", path)
    assert code == 3
    doc = json.loads(out)
    assert set(doc) == ENVELOPE_KEYS and doc["status"] == "error"
    assert doc["data"]["file"] == str(path)
    assert doc["errors"] and doc["errors"][0]["code"].startswith("capture.")
    assert str(path) in doc["errors"][0]["message"]


def test_permission_denied_exits_3(tmp_path: Path, caps: dict[str, Path]) -> None:
    path = tmp_path / "locked.pcap"
    path.write_bytes(caps["good"].read_bytes())
    path.chmod(0)
    try:
        if os.geteuid() == 0:
            # Root reads a mode-000 file through CAP_DAC_OVERRIDE; drop it (and DAC_READ_SEARCH)
            # from the bounding set so the kernel refuses the open as it would for a user.
            setpriv = need_tool("setpriv")
            cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m", "badsum", "pcap", str(path)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        else:
            r = badsum("pcap", path)
    finally:
        path.chmod(0o600)
    assert r.returncode == 3
    one_line_naming(r.stderr, str(path))


def test_empty_stdin_exits_3() -> None:
    r = badsum("pcap", "-", stdin=b"")
    assert r.returncode == 3
    one_line_naming(r.stderr, "-")


# -- damaged input ------------------------------------------------------------------------------


def _damaged(caps: dict[str, Path], tmp_path: Path, kind: str) -> tuple[Path, int, int]:
    """A damaged copy of good.pcap; returns (path, packets before the damage, its byte offset)."""
    data = caps["good"].read_bytes()
    starts = pcap_record_starts(data)
    path = tmp_path / f"{kind}.pcap"
    if kind == "cut-mid-record":
        k = 4
        path.write_bytes(data[: starts[k] + 16 + 7])  # header whole, packet bytes cut after 7
        return path, k, starts[k]
    if kind == "claims-16MB":
        k = 2
        head = bytearray(data[starts[k] : starts[k] + 16])
        struct.pack_into("<II", head, 8, 16 << 20, 16 << 20)
        path.write_bytes(data[: starts[k]] + bytes(head) + data[starts[k] + 16 :])
        return path, k, starts[k]
    if kind == "garbage-after":
        path.write_bytes(data + b"GARBAGE!" * 8)
        return path, len(starts) - 1, len(data)
    if kind == "cut-in-record-header":
        k = 3
        path.write_bytes(data[: starts[k] + 9])
        return path, k, starts[k]
    raise AssertionError(kind)


DAMAGE = ["cut-mid-record", "claims-16MB", "garbage-after", "cut-in-record-header"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_input_json(
    capsys: pytest.CaptureFixture[str], caps: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    path, packets, offset = _damaged(caps, tmp_path, kind)
    code, out, _ = in_process(capsys, "pcap", "--json", path)
    assert code == 3
    doc = json.loads(out)
    assert set(doc) == ENVELOPE_KEYS and doc["status"] == "error"
    assert doc["data"]["packets"] == packets
    assert len(doc["errors"]) == 1
    err = doc["errors"][0]
    assert {"code", "message", "offset"} <= set(err)
    assert err["offset"] == offset
    assert err["code"].startswith("pcap.") and err["message"]


@pytest.mark.parametrize("kind", ["cut-mid-record", "claims-16MB"])
def test_damaged_input_text_says_where(caps: dict[str, Path], tmp_path: Path, kind: str) -> None:
    path, packets, offset = _damaged(caps, tmp_path, kind)
    r = badsum("pcap", path)
    assert r.returncode == 3
    assert f"{packets} packets" in r.stdout.splitlines()[0]
    assert f"byte {offset}" in r.stdout


def test_damaged_input_jsonl_reports_damage_on_one_stderr_line(caps: dict[str, Path], tmp_path: Path) -> None:
    path, _, offset = _damaged(caps, tmp_path, "claims-16MB")
    r = badsum("pcap", "--jsonl", path)
    assert r.returncode == 3
    assert r.stdout == ""  # the packets before the damage are all good
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"byte {offset}" in lines[0]


def test_damaged_input_keeps_findings_before_the_damage(caps: dict[str, Path], tmp_path: Path) -> None:
    data = caps["bad"].read_bytes()
    starts = pcap_record_starts(data)
    path = tmp_path / "bad-cut.pcap"
    path.write_bytes(data[: starts[-2] + 20])  # cut inside the last record
    r = badsum("pcap", "--jsonl", path)
    assert r.returncode == 3  # damage wins over findings
    assert {(x["frame"], x["layer"], x["status"]) for x in jsonl(r.stdout)} == {
        (i.frame, i.layer, i.status) for i in INJECTED
    }


def test_gzip_with_a_bad_crc_trailer_keeps_every_packet(caps: dict[str, Path], tmp_path: Path) -> None:
    """A real gzip of a capture whose only damage is the CRC-32 of its trailer (RFC 1952 2.3.1):
    every packet is reported, and the exit code still says the input is damaged (--help promises
    the packets before the damage; zlib used to take the whole last 8 MiB block with it)."""
    data = caps["bad"].read_bytes()
    gz = bytearray(gzip.compress(data))
    gz[-8] ^= 0xFF
    path = tmp_path / "bad-crc.pcap.gz"
    path.write_bytes(gz)
    r = badsum("pcap", "--jsonl", path)
    assert r.returncode == 3
    assert {(x["frame"], x["layer"], x["status"]) for x in jsonl(r.stdout)} == {
        (i.frame, i.layer, i.status) for i in INJECTED
    }
    one_line_naming(r.stderr, f"byte {len(data)}")
    assert "CRC-32 in the gzip trailer" in r.stderr
    doc = envelope(badsum("pcap", "--json", path))
    assert doc["data"]["packets"] == len(pcap_record_starts(data)) - 1
    assert [(e["code"], e["offset"]) for e in doc["errors"]] == [("gzip.crc_mismatch", len(data))]


@pytest.mark.corpus
def test_corpus_fuzz_record_claiming_16MB(corpus: Path) -> None:
    path = corpus / "suricata-verify__bug-6875-01__fuzz.pcap"
    data = path.read_bytes()
    # Walk the records with plain Python, stopping where libpcap's 256 KiB limit is exceeded.
    order = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    pos, packets = 24, 0
    while struct.unpack_from(order + "I", data, pos + 8)[0] <= LIBPCAP_MAX_CAPLEN:
        pos += 16 + struct.unpack_from(order + "I", data, pos + 8)[0]
        packets += 1
    r = badsum("pcap", "--json", path)
    assert r.returncode == 3
    doc = envelope(r)
    assert doc["data"]["packets"] == packets == 1
    assert doc["errors"][0]["offset"] == pos


@pytest.mark.corpus
def test_corpus_pcapng_with_unknown_section_version(corpus: Path) -> None:
    path = corpus / "gopacket__test901.pcapng"
    data = path.read_bytes()
    # Walk the blocks (little-endian file) until a section header whose major version is not 1.
    pos, packets = 0, 0
    while pos + 12 <= len(data):
        btype, length = struct.unpack_from("<II", data, pos)
        if btype == 0x0A0D0D0A and struct.unpack_from("<H", data, pos + 12)[0] != 1:
            break
        packets += btype in (3, 6)
        pos += length
    assert pos < len(data), "the corpus file should hold a section of unknown version"
    r = badsum("pcap", "--json", path)
    assert r.returncode == 3
    doc = envelope(r)
    assert doc["data"]["packets"] == packets
    assert doc["errors"][0]["offset"] == pos


@pytest.mark.corpus
def test_corpus_every_file_gives_a_consistent_envelope(capsys: pytest.CaptureFixture[str], corpus: Path) -> None:
    files = sorted(p for p in corpus.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert files
    for path in files:
        code, out, _ = in_process(capsys, "pcap", "--json", path)
        doc = json.loads(out)
        assert code in STATUS_BY_EXIT, path.name
        assert doc["status"] == STATUS_BY_EXIT[code], path.name
        assert (code == 3) == bool(doc["errors"]), path.name


# -- --json -------------------------------------------------------------------------------------


def test_json_good(caps: dict[str, Path]) -> None:
    r = badsum("pcap", "--json", caps["good"])
    assert r.returncode == 0
    doc = envelope(r)
    assert doc["status"] == "ok" and doc["errors"] == []
    data = doc["data"]
    assert data["packets"] == len(good_frames())
    assert data["format"] == "pcap" and data["compressed"] is False
    assert {k: v for k, v in data["totals"].items() if k != "ok" and v} == {}
    # 4 IPv4 headers, 7 L4 checksums (the ARPs have none)
    assert data["totals"]["ok"] == 4 + 7


def test_json_counts_what_was_injected(caps: dict[str, Path]) -> None:
    r = badsum("pcap", "--json", caps["bad"])
    assert r.returncode == 1
    doc = envelope(r)
    totals = doc["data"]["totals"]
    assert totals["bad"] == sum(i.status == "bad" for i in INJECTED) == 3
    assert totals["partial"] == sum(i.status == "partial" for i in INJECTED) == 1
    assert totals["zero-invalid"] == totals["unverifiable"] == 0
    flows = doc["data"]["flows"]
    assert sorted(f["first_frame"] for f in flows) == [i.frame for i in INJECTED]


# -- --jsonl ------------------------------------------------------------------------------------


def test_jsonl_one_record_per_non_ok_checksum(caps: dict[str, Path]) -> None:
    r = badsum("pcap", "--jsonl", caps["bad"])
    assert r.returncode == 1
    assert r.stderr == ""
    records = jsonl(r.stdout)
    assert len(records) == len(INJECTED)
    for rec, inj in zip(records, INJECTED):
        assert JSONL_KEYS <= set(rec), rec
        assert (rec["frame"], rec["layer"], rec["depth"], rec["status"]) == (inj.frame, inj.layer, 0, inj.status)
        assert rec["stored"] == f"0x{inj.stored:04x}"
        assert rec["computed"] == f"0x{inj.computed:04x}"  # what scapy computed for the packet
        assert rec["offset"] == inj.offset
        assert set(rec["flow"]) == {"src", "dst", "proto", "sport", "dport"}
        assert rec["flow"]["proto"] == {"tcp": 6, "udp": 17}[inj.layer]
        assert isinstance(rec["reason"], str) and rec["reason"]


def test_jsonl_good_capture_prints_nothing(capsys: pytest.CaptureFixture[str], caps: dict[str, Path]) -> None:
    code, out, _ = in_process(capsys, "pcap", "--jsonl", caps["good"])
    assert (code, out) == (0, "")


def test_jsonl_pcapng_numbers_frames_like_pcap(capsys: pytest.CaptureFixture[str], caps: dict[str, Path]) -> None:
    _, a, _ = in_process(capsys, "pcap", "--jsonl", caps["bad"])
    _, b, _ = in_process(capsys, "pcap", "--jsonl", caps["bad_ng"])
    assert jsonl(a) == jsonl(b)


@pytest.mark.tools
def test_jsonl_frames_match_tshark(caps: dict[str, Path]) -> None:
    tshark = need_tool("tshark")
    t = subprocess.run(
        [tshark, "-n", "-r", str(caps["bad"]), "-T", "fields", "-e", "frame.number", "-e", "tcp.checksum.status",
         "-e", "udp.checksum.status", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"],
        capture_output=True, text=True, timeout=TIMEOUT, check=True,
    )  # fmt: skip
    tshark_bad: dict[str, set[int]] = {"tcp": set(), "udp": set()}
    for line in t.stdout.splitlines():
        frame, tcp, udp = (line.split("\t") + ["", ""])[:3]
        if tcp == "0":  # 0 = bad in tshark's checksum.status
            tshark_bad["tcp"].add(int(frame))
        if udp == "0":
            tshark_bad["udp"].add(int(frame))
    records = jsonl(badsum("pcap", "--jsonl", caps["bad"]).stdout)
    for layer in ("tcp", "udp"):
        ours = {r["frame"] for r in records if r["layer"] == layer and r["status"] in ("bad", "partial")}
        assert ours == tshark_bad[layer], layer
    assert tshark_bad["tcp"]  # the comparison compared something


def test_jsonl_frames_across_batches_and_jobs(capsys: pytest.CaptureFixture[str], caps: dict[str, Path]) -> None:
    r = badsum("pcap", "--jsonl", "--jobs", "3", caps["big"])
    assert r.returncode == 1
    frames = [x["frame"] for x in jsonl(r.stdout)]
    assert frames == BIG_BAD_FRAMES
    code, out, _ = in_process(capsys, "pcap", "--jsonl", caps["big"])
    assert code == 1 and out == r.stdout


def test_jsonl_closed_pipe_is_quiet(caps: dict[str, Path]) -> None:
    """`badsum pcap --jsonl F | head -1`: the reader goes away after one line."""
    proc = subprocess.Popen([*BADSUM, "pcap", "--jsonl", str(caps["big"])], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=clean_env())  # fmt: skip
    first = proc.stdout.readline()
    proc.stdout.close()
    try:
        err = proc.stderr.read().decode()
        proc.wait(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.stderr.close()
    assert json.loads(first)["frame"] == BIG_BAD_FRAMES[0]
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err


# -- other options ------------------------------------------------------------------------------


def test_vxlan_port_decodes_the_inner_packet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    inner = _with_checksum(_tcp4(9), TCP, 0x0BAD)
    outer = _frame(Ether(**MAC) / IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=33333, dport=4790)
                   / VXLAN(vni=42) / inner)  # fmt: skip
    path = tmp_path / "vxlan4790.pcap"
    wrpcap(str(path), [outer])
    code, out, _ = in_process(capsys, "pcap", "--jsonl", path)
    assert (code, out) == (0, "")  # 4790 is not a VXLAN port by default: the inner TCP is payload
    code, out, _ = in_process(capsys, "pcap", "--jsonl", "--vxlan-port", "4790", path)
    assert code == 1
    [rec] = jsonl(out)
    assert (rec["layer"], rec["depth"], rec["status"], rec["stored"]) == ("tcp", 1, "bad", "0x0bad")


def test_verbose_adds_the_per_layer_table(capsys: pytest.CaptureFixture[str], caps: dict[str, Path]) -> None:
    _, plain, _ = in_process(capsys, "pcap", caps["bad"])
    _, verbose, _ = in_process(capsys, "pcap", "-v", caps["bad"])
    assert "Checksums by layer and depth" not in plain
    assert "Checksums by layer and depth" in verbose


# -- --annotate ---------------------------------------------------------------------------------


# -- a capture where nothing decodes -------------------------------------------------------------

UNDECODABLE = {"one-byte": [b"\x00"] * 3000, "zero-length": [b""] * 3000}


@pytest.mark.parametrize("kind", UNDECODABLE)
def test_nothing_decoded_is_not_all_clear(tmp_path: Path, kind: str) -> None:
    """Thousands of records and not one long enough to hold an Ethernet header: "OK, all 0 checksums
    verify" with exit 0 would tell a script the capture is clean. Say what the records were, exit 3."""
    path = tmp_path / f"{kind}.pcap"
    path.write_bytes(raw_pcap(UNDECODABLE[kind]))
    what = "3,000 empty" if kind == "zero-length" else "3,000 too short or malformed"
    r = badsum("pcap", path)
    assert r.returncode == 3
    lines = r.stdout.splitlines()
    assert lines[0].endswith("3,000 packets, 0 checksums judged")
    assert lines[1].split()[0] == "UNDECODED" and f"none of the 3,000 records could be decoded ({what})" in lines[1]
    assert "OK" not in r.stdout
    one_line_naming(r.stderr, "no checksum was judged")
    doc = envelope(badsum("pcap", "--json", path))
    assert [e["code"] for e in doc["errors"]] == ["capture.nothing_decoded"]
    assert doc["data"]["packets"] == doc["data"]["undecodable_records"] == 3000
    assert doc["data"]["empty_records"] == (3000 if kind == "zero-length" else 0)
    r = badsum("pcap", "--jsonl", path)
    assert (r.returncode, r.stdout) == (3, "")
    one_line_naming(r.stderr, f"({what})")


def test_some_records_undecodable_is_said_but_not_an_error(caps: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "good-and-empty.pcap"
    path.write_bytes(caps["good"].read_bytes() + struct.pack("<IIII", 1, 0, 0, 0) * 5)
    r = badsum("pcap", path)
    assert r.returncode == 0 and r.stderr == ""
    assert "5 records could not be decoded (5 empty)" in r.stdout
    doc = envelope(badsum("pcap", "--json", path))
    assert doc["errors"] == [] and (doc["data"]["undecodable_records"], doc["data"]["empty_records"]) == (5, 5)


# -- standard output that cannot be written ----------------------------------------------------

STDOUT_FAILURES = {"dev-full": "No space left on device", "closed": "Bad file descriptor"}


def badsum_with_stdout(failure: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real process with standard output at /dev/full (ENOSPC) or closed (`>&-`): nothing to
    read back on stdout, so only the exit code and stderr are returned."""
    argv = [*BADSUM, *map(str, args)]
    if failure == "closed":
        # Closed in the child before Python starts: its sys.stdout is None, as under `badsum ... >&-`.
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT,
                              env=clean_env(), preexec_fn=lambda: os.close(1), check=False)  # fmt: skip
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "wb") as full:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=TIMEOUT, env=clean_env(), check=False)  # fmt: skip


@pytest.mark.parametrize("failure", STDOUT_FAILURES)
@pytest.mark.parametrize("mode", [[], ["--json"], ["--jsonl"]], ids=["text", "json", "jsonl"])
def test_stdout_that_cannot_be_written_is_named(caps: dict[str, Path], mode: list[str], failure: str) -> None:
    """One line naming standard output and exit 3 (the report could not be delivered): no traceback,
    no exit 1 that reads as "findings", and never the input file's name as the thing not written."""
    r = badsum_with_stdout(failure, "pcap", *mode, caps["bad"])
    assert r.returncode == 3, r.stderr
    assert r.stderr.splitlines() == [f"badsum: cannot write to standard output: {STDOUT_FAILURES[failure]}"]


@pytest.mark.parametrize("failure", STDOUT_FAILURES)
def test_stdout_failing_mid_scan_leaves_no_annotated_copy(caps: dict[str, Path], tmp_path: Path, failure: str) -> None:
    # --jsonl writes while the capture is read (70,001 packets, a bad one in 7): the scan stops there.
    r = badsum_with_stdout(failure, "pcap", "--jsonl", "--annotate", tmp_path / "copy.pcapng", caps["big"])
    assert r.returncode == 3
    assert r.stderr.splitlines() == [f"badsum: cannot write to standard output: {STDOUT_FAILURES[failure]}"]
    assert _listing(tmp_path) == []


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def _annotated(path: Path) -> list[tuple[bytes, list[str]]]:
    """(packet bytes, comments) per packet, read back with scapy."""
    out = []
    for p in PcapNgReader(str(path)):
        out.append((bytes(p), [c.decode() if isinstance(c, bytes) else c for c in (p.comments or [])]))
    return out


def test_annotate_comments_exactly_the_non_ok_frames(caps: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "annotated.pcapng"
    r = badsum("pcap", "--annotate", out, caps["bad"])
    assert r.returncode == 1
    assert f"annotated copy: {out}" in r.stdout
    assert _listing(tmp_path) == ["annotated.pcapng"]
    frames, _ = bad_frames()
    copy = _annotated(out)
    assert [b for b, _ in copy] == [bytes(f) for f in frames]
    expected = {i.frame: i for i in INJECTED}
    for n, (_, comments) in enumerate(copy, 1):
        ours = [c for c in comments if c.startswith("badsum:")]
        if n in expected:
            inj = expected[n]
            assert ours and ours[0].startswith(f"badsum:{inj.layer}[0] {inj.status}: "), (n, ours)
        else:
            assert ours == [], (n, ours)


@pytest.mark.tools
def test_annotate_output_opens_in_tshark(caps: dict[str, Path], tmp_path: Path) -> None:
    tshark = need_tool("tshark")
    out = tmp_path / "annotated.pcapng"
    assert badsum("pcap", "--annotate", out, caps["bad"]).returncode == 1
    t = subprocess.run([tshark, "-r", str(out), "-T", "fields", "-e", "frame.number", "-e", "frame.comment"],
                       capture_output=True, text=True, timeout=TIMEOUT, check=False)  # fmt: skip
    assert t.returncode == 0, t.stderr
    rows = [line.split("\t", 1) for line in t.stdout.splitlines()]
    assert len(rows) == len(bad_frames()[0])
    commented = {int(n) for n, c in rows if "badsum:" in c}
    assert commented == {i.frame for i in INJECTED}
    assert all(c.startswith("badsum:") for n, c in rows if int(n) in commented)


def test_annotate_keeps_comments_and_direction(
    capsys: pytest.CaptureFixture[str], caps: dict[str, Path], tmp_path: Path
) -> None:
    src = write_pcapng(tmp_path / "in.pcapng", partial_frames(), direction=1, comment=b"from the field")
    out = tmp_path / "out.pcapng"
    code, _, _ = in_process(capsys, "pcap", "--annotate", out, src)
    assert code == 0  # partial on an inbound packet, no kernel status recorded: not judged a fault
    packets = list(PcapNgReader(str(out)))
    assert [p.direction for p in packets] == [1, 1]
    comments = [[c.decode() if isinstance(c, bytes) else c for c in p.comments] for p in packets]
    assert comments[0] == ["from the field"]
    assert comments[1][0] == "from the field" and comments[1][1].startswith("badsum:tcp[0] partial: ")


def test_annotate_with_json_and_jsonl(
    capsys: pytest.CaptureFixture[str], caps: dict[str, Path], tmp_path: Path
) -> None:
    for flag in ("--json", "--jsonl"):
        out = tmp_path / f"copy{flag}.pcapng"
        code, stdout, _ = in_process(capsys, "pcap", flag, "--annotate", out, caps["bad"])
        assert code == 1
        assert sum(1 for _, c in _annotated(out) if any(x.startswith("badsum:") for x in c)) == len(INJECTED)
        assert "annotated copy" not in stdout  # machine output stays pure


def test_annotate_refuses_an_empty_path(caps: dict[str, Path], tmp_path: Path) -> None:
    """`--annotate "$OUT"` with OUT unset used to run and write nothing, silently."""
    r = badsum("pcap", "--annotate", "", caps["bad"], cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, "")
    one_line_naming(r.stderr, "--annotate needs a file name")
    doc = json.loads(badsum("pcap", "--json", "--annotate", "", caps["bad"], cwd=tmp_path).stdout)
    assert (doc["status"], [e["code"] for e in doc["errors"]]) == ("error", ["annotate.empty_path"])
    assert _listing(tmp_path) == []


def test_annotate_refuses_the_input_path(caps: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "in.pcap"
    src.write_bytes(caps["bad"].read_bytes())
    for spelling in (str(src), f"./{src.name}"):
        r = badsum("pcap", "--annotate", spelling, src, cwd=tmp_path)
        assert r.returncode == 2
        assert r.stdout == ""
        one_line_naming(r.stderr, "--annotate")
    assert src.read_bytes() == caps["bad"].read_bytes()
    assert _listing(tmp_path) == ["in.pcap"]


@pytest.mark.parametrize("kind", ["cut-mid-record", "claims-16MB"])
def test_annotate_leaves_nothing_when_the_input_is_damaged(caps: dict[str, Path], tmp_path: Path, kind: str) -> None:
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src, _, _ = _damaged(caps, src_dir, kind)
    r = badsum("pcap", "--annotate", out_dir / "copy.pcapng", src)
    assert r.returncode == 3
    assert _listing(out_dir) == [], "a failed run must leave neither the output nor a .part file"


def test_annotate_keeps_an_existing_output_when_the_run_fails(caps: dict[str, Path], tmp_path: Path) -> None:
    src, _, _ = _damaged(caps, tmp_path, "cut-mid-record")
    out = tmp_path / "previous.pcapng"
    out.write_bytes(b"an earlier, complete result")
    r = badsum("pcap", "--annotate", out, src)
    assert r.returncode == 3
    assert out.read_bytes() == b"an earlier, complete result"
    assert not [n for n in _listing(tmp_path) if n.endswith(".part")]


def test_annotate_into_a_missing_directory_exits_3(caps: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "no-such-dir" / "copy.pcapng"
    r = badsum("pcap", "--annotate", out, caps["bad"])
    assert r.returncode == 3
    one_line_naming(r.stderr, str(out))
    assert _listing(tmp_path) == []


def test_annotate_into_a_missing_directory_json_envelope(caps: dict[str, Path], tmp_path: Path) -> None:
    """--json promises one envelope on stdout whatever happens after argument parsing."""
    r = badsum("pcap", "--json", "--annotate", tmp_path / "no-such-dir" / "copy.pcapng", caps["bad"])
    assert r.returncode == 3
    doc = envelope(r)
    assert doc["status"] == "error" and doc["errors"]


def test_annotate_onto_a_directory_exits_2(caps: dict[str, Path], tmp_path: Path) -> None:
    """A usage error, like every other path that is not a regular file (tests/cli/test_output_targets.py)."""
    target = tmp_path / "a-directory"
    target.mkdir()
    r = badsum("pcap", "--annotate", target, caps["bad"])
    assert r.returncode == 2
    one_line_naming(r.stderr, str(target))
    assert _listing(tmp_path) == ["a-directory"] and _listing(target) == []


def _file_size_limit(limit: int):
    resource = pytest.importorskip("resource")

    def limit_output_files() -> None:  # runs in the child: writes past `limit` fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_output_files


def test_annotate_write_failure_exits_3(caps: dict[str, Path], tmp_path: Path) -> None:
    """A disk that fills up mid-copy (simulated with RLIMIT_FSIZE: EFBIG): say so, keep nothing."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "copy.pcapng"
    proc = subprocess.run([*BADSUM, "pcap", "--annotate", str(out), str(caps["big"])], capture_output=True, text=True,
                          timeout=TIMEOUT, env=clean_env(PYTHONDONTWRITEBYTECODE="1"),
                          preexec_fn=_file_size_limit(256 << 10), check=False)  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 3
    one_line_naming(proc.stderr, str(out))
    assert _listing(out_dir) == []


def _blocked_reading_stdin(pid: int) -> bool:
    """True once the process sits in read(0, ...) (x86-64 and arm64 syscall numbers 0 and 63)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        pytest.skip("/proc/PID/syscall is not readable here")
    return len(fields) > 1 and fields[0] in ("0", "63") and fields[1] == "0x0"


def test_interrupt_exits_130_and_removes_the_part_file(caps: dict[str, Path], tmp_path: Path) -> None:
    if not Path("/proc/self/syscall").exists():
        pytest.skip("needs Linux /proc/PID/syscall to know when badsum waits for input")
    record = bytes(_tcp4(6))
    # More than the reader's 16 MiB first chunk, so the scan (and the .part file) has started.
    data = raw_pcap([record] * ((17 << 20) // (16 + len(record))))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([*BADSUM, "pcap", "--annotate", str(out_dir / "copy.pcapng"), "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())  # fmt: skip
    try:
        proc.stdin.write(data)
        proc.stdin.flush()
        deadline = time.monotonic() + TIMEOUT
        while not (_blocked_reading_stdin(proc.pid) and _listing(out_dir)):
            assert time.monotonic() < deadline, "badsum never waited for more input"
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.01)
        assert [n for n in _listing(out_dir) if n.endswith(".part")]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err.decode()
    assert err.decode().strip() == "badsum: interrupted"
    assert _listing(out_dir) == []


# -- stdin and gzip -----------------------------------------------------------------------------


def _same_result(a: subprocess.CompletedProcess[str], b: subprocess.CompletedProcess[str], json_mode: bool) -> None:
    assert a.returncode == b.returncode
    if not json_mode:
        assert a.stdout == b.stdout
        return
    da, db = json.loads(a.stdout)["data"], json.loads(b.stdout)["data"]
    for key in ("file", "compressed"):
        da.pop(key), db.pop(key)
    assert da == db


@pytest.mark.parametrize("mode", ["--json", "--jsonl"])
def test_stdin_and_gzip_give_the_same_result(
    capsys: pytest.CaptureFixture[str], caps: dict[str, Path], mode: str
) -> None:
    runs = []
    for name in ("bad", "bad_gz"):
        code, out, _ = in_process(capsys, "pcap", mode, caps[name])
        runs.append(subprocess.CompletedProcess([], code, out, ""))
    assert runs[0].returncode == 1
    runs.append(badsum("pcap", mode, "-", stdin=caps["bad"].read_bytes()))
    runs.append(badsum("pcap", mode, "-", stdin=caps["bad_gz"].read_bytes()))
    for other in runs[1:]:
        _same_result(runs[0], other, mode == "--json")
    if mode == "--json":
        assert [json.loads(r.stdout)["data"]["compressed"] for r in runs] == [False, True, False, True]
        assert json.loads(runs[2].stdout)["data"]["file"] == "-"


def test_stdin_annotate(caps: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "copy.pcapng"
    r = badsum("pcap", "--annotate", out, "-", stdin=caps["bad_gz"].read_bytes())
    assert r.returncode == 1
    assert len(_annotated(out)) == len(bad_frames()[0])


# -- file names are data, not markup ---------------------------------------------------------------


def test_file_name_with_brackets_is_shown_verbatim(caps: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "capture[eth0].pcap"
    path.write_bytes(caps["good"].read_bytes())
    r = badsum("pcap", path)
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].startswith(f"{path}: ")
    missing = tmp_path / "gone[bold].pcap"
    r = badsum("pcap", missing)
    assert r.returncode == 3
    one_line_naming(r.stderr, str(missing))


def test_file_name_that_looks_like_a_closing_tag(caps: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "run[").mkdir()
    path = tmp_path / "run[" / "eth0].pcap"  # the path holds "[/eth0]"
    path.write_bytes(caps["bad"].read_bytes())
    r = badsum("pcap", path)
    assert r.returncode == 1
    assert r.stdout.splitlines()[0].startswith(f"{path}: ")
    r = badsum("pcap", tmp_path / "run[" / "missing].pcap")
    assert r.returncode == 3
    one_line_naming(r.stderr, str(tmp_path / "run[" / "missing].pcap"))


# -- help and docs ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["pcap", "--help"]], ids=["badsum", "badsum-pcap"])
def test_help_exits_0_with_examples(argv: list[str]) -> None:
    r = badsum(*argv)
    assert r.returncode == 0
    assert "example" in r.stdout.lower()
    assert "exit codes" in r.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = in_process(capsys, "--version")
    assert code == 0 and out.startswith("badsum ")


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _mentioned(text: str, token: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(token)}(?![\w-])", text) is not None


def test_every_command_and_option_is_in_the_docs() -> None:
    docs = DOCS.read_text()
    parser = build_parser()
    missing = [o for a in parser._actions for o in a.option_strings if not _mentioned(docs, o)]
    commands = _subparsers(parser)
    assert commands
    for name, sub in commands.items():
        if not _mentioned(docs, f"badsum {name}"):
            missing.append(f"command {name}")
        for action in sub._actions:
            missing += [o for o in action.option_strings if not _mentioned(docs, o)]
            if not action.option_strings and not _mentioned(docs, action.metavar or action.dest):
                missing.append(action.metavar or action.dest)
    assert not missing, f"not in docs/cli.md: {missing}"


def test_docs_list_every_exit_code() -> None:
    docs = DOCS.read_text()
    for code in (0, 1, 2, 3, 130):
        assert re.search(rf"^\| {code} \|", docs, re.MULTILINE), code


# -- progress -----------------------------------------------------------------------------------


def test_no_progress_when_stderr_is_not_a_terminal(caps: dict[str, Path]) -> None:
    r = badsum("pcap", caps["big"])
    assert r.returncode == 1
    assert r.stderr == ""


def test_no_progress_on_a_pipe_even_with_force_color(caps: dict[str, Path]) -> None:
    """FORCE_COLOR (set by many CI systems) asks for colour, not for a progress bar in the log."""
    r = badsum("pcap", caps["good"], env=clean_env(FORCE_COLOR="1"))
    assert r.returncode == 0
    assert r.stderr == ""


def _stderr_on_a_pty(*args: str | Path) -> tuple[int, bytes]:
    pty = pytest.importorskip("pty")
    import select

    leader, follower = pty.openpty()
    proc = subprocess.Popen([*BADSUM, *map(str, args)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=follower, env=clean_env(TERM="xterm"))  # fmt: skip
    os.close(follower)
    seen = b""
    try:
        proc.stdout.read()
        proc.wait(timeout=TIMEOUT)
        while select.select([leader], [], [], 0.2)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO once the other side is closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        proc.kill()
        proc.stdout.close()
        os.close(leader)
    return proc.returncode, seen


def test_progress_on_a_terminal_only_for_the_text_report(caps: dict[str, Path]) -> None:
    code, seen = _stderr_on_a_pty("pcap", caps["bad"])
    assert code == 1
    assert b"scanning" in seen
    assert b"Traceback" not in seen
    for flag in ("--json", "--jsonl", "--no-progress"):
        code, seen = _stderr_on_a_pty("pcap", flag, caps["bad"])
        assert code == 1, flag
        assert seen == b"", (flag, seen[:200])


def test_command_summaries_match_their_modules() -> None:
    # main.py lists each command's summary so that a run imports only its own command's module.
    import importlib

    from badsum.cli.main import COMMANDS

    for name, summary in COMMANDS.items():
        assert importlib.import_module(f"badsum.cli.{name}").HELP == summary, name


# ---- symptoms in the three output modes (the 63 s connect recorded on the real kernel) ----

LADDER = REPO / "tests" / "data" / "syn-ladder-63s.pcap"
LADDER_ORACLE = json.loads((REPO / "tests" / "data" / "syn-ladder-63s.json").read_text())


def test_symptoms_in_text_json_and_jsonl_agree_with_the_recording() -> None:
    """The oracle was written by the recording script from tshark, the client and nstat, not by badsum."""
    want_retries = LADDER_ORACLE["nstat_TcpExtTCPSynRetrans"]
    want_connect = LADDER_ORACLE["synack_times"][0] - LADDER_ORACLE["syn_times"][0]
    j = badsum("pcap", "--json", LADDER)
    assert j.returncode == 1  # the checksums are only partial (sender's capture); the 64 s connect fails
    doc = json.loads(j.stdout)
    assert doc["status"] == "findings" and doc["data"]["symptoms_total"] == 1
    [s] = doc["data"]["symptoms"]
    assert s["kind"] == "syn-retries" and s["severity"] == "fail" and s["count"] == want_retries
    assert s["details"]["outcome"] == "connected" and s["details"]["pattern"] == "exponential"
    assert s["duration_s"] == pytest.approx(want_connect, abs=0.01)
    assert s["flow"]["sport"] and s["flow"]["dport"] == LADDER_ORACLE["port"] and s["flow"]["dst"] == LADDER_ORACLE["server"]
    assert "KB-004" in [c["id"] for c in s["likely_causes"]]
    lines = badsum("pcap", "--jsonl", LADDER)
    records = [json.loads(x) for x in lines.stdout.splitlines()]
    kinds = [r["record"] for r in records]
    assert kinds == sorted(kinds)  # every checksum line, then the symptom line
    assert [r for r in records if r["record"] == "symptom"] == [{"record": "symptom", **s}]
    text = badsum("pcap", LADDER)
    assert text.returncode == 1
    head = text.stdout.split("Flows with bad or partial checksums")[0]  # the answer comes first
    assert "syn-retries" in head and "KB-004" in head and f"{want_retries} SYN retransmissions" in head


def test_no_symptoms_is_the_checksum_report_alone() -> None:
    r = badsum("pcap", "--json", "--no-symptoms", LADDER)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["data"]["symptoms"] == [] and doc["data"]["flow_analysis"] == {}
    assert doc["data"]["totals"] == json.loads(badsum("pcap", "--json", LADDER).stdout)["data"]["totals"]
    assert all(json.loads(x)["record"] == "checksum" for x in badsum("pcap", "--jsonl", "--no-symptoms", LADDER).stdout.splitlines())


@pytest.mark.parametrize("mode", [["--jsonl"], ["-v"]], ids=["jsonl", "text"])
def test_a_reader_that_goes_away_gives_141_not_findings(caps: dict[str, Path], mode: list[str]) -> None:
    """`badsum pcap F | head`: exit as a SIGPIPE'd process would (141), in both output modes (rich
    would exit 1 on its own, which reads as "findings"), with no traceback."""
    p = subprocess.Popen([*BADSUM, "pcap", *mode, str(caps["big"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)  # fmt: skip
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline()  # the reader takes one line and leaves
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=TIMEOUT) == 141 and "Traceback" not in err
