"""badsum against a real kernel: TCP/UDP over a veth pair with transmit checksum offload on and off.

Oracles independent of badsum: `ethtool --json -k` (is offload on?), tcpdump -vv (does the
checksum verify, and what should it be?), nstat (did the receiving kernel count checksum
errors?) and the application itself (did the exact payload arrive?).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from support import need_root, need_tool
from netns import (
    SESSION_PREFIX,
    STARTED,
    NetnsError,
    Topology,
    list_netns,
    pid_alive,
    run,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
DATA_CAPTURE = REPO / "tests" / "data" / "veth-tx-offload.pcap"

A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
PORT = 5001
# Larger than the MTU: with offload on, TCP hands the veth one GSO super-frame.
TCP_PAYLOAD = b"".join(hashlib.sha256(b"badsum-veth-%d" % i).digest() for i in range(160))  # 5120 bytes
NSTAT_COUNTERS = ("TcpInCsumErrors", "UdpInCsumErrors", "Udp6InCsumErrors", "IpExtInCsumErrors")

# Runs in namespace B: one TCP connection and one UDP datagram per family, each answered with the
# sha256 of what arrived; bounded by a 10 s deadline. Reports on stderr ("ready", "RESULT {...}").
SERVER = r"""
import hashlib, json, selectors, socket, sys, time
v4, v6, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sel = selectors.DefaultSelector()
for fam, addr in ((socket.AF_INET, v4), (socket.AF_INET6, v6)):
    t = socket.socket(fam, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, port)); t.listen(1)
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((addr, port))
    sel.register(t, selectors.EVENT_READ, "tcp"); sel.register(u, selectors.EVENT_READ, "udp")
print("ready", file=sys.stderr, flush=True)
got, deadline = {}, time.monotonic() + 10
while len(got) < 4 and time.monotonic() < deadline:
    for key, _ in sel.select(timeout=0.2):
        s, fam = key.fileobj, "v6" if key.fileobj.family == socket.AF_INET6 else "v4"
        if key.data == "tcp":
            c, _ = s.accept(); c.settimeout(5); h = hashlib.sha256(); n = 0
            for _ in range(10000):
                d = c.recv(65536)
                if not d: break
                h.update(d); n += len(d)
            c.sendall(h.hexdigest().encode()); c.close()
        else:
            d, peer = s.recvfrom(65536); h = hashlib.sha256(d); n = len(d)
            s.sendto(h.hexdigest().encode(), peer)
        got[key.data + "-" + fam] = {"sha256": h.hexdigest(), "bytes": n}
print("RESULT " + json.dumps(got), file=sys.stderr, flush=True)
"""

# Runs in namespace A: TCP v4, UDP v4, TCP v6, UDP v6, in that order; prints the digests it got back.
CLIENT = r"""
import json, socket, sys
v4, v6, port, payload_file, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
payload = open(payload_file, "rb").read()
out = {}
for fam, addr, name in ((socket.AF_INET, v4, "v4"), (socket.AF_INET6, v6, "v6")):
    t = socket.socket(fam, socket.SOCK_STREAM); t.settimeout(5); t.connect((addr, port))
    t.sendall(payload); t.shutdown(socket.SHUT_WR); reply = b""
    for _ in range(100):
        d = t.recv(4096)
        if not d: break
        reply += d
    t.close(); out["tcp-" + name] = reply.decode()
    u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(5)
    u.sendto(("badsum-udp-%s-%s" % (tag, name)).encode(), (addr, port))
    out["udp-" + name] = u.recv(4096).decode(); u.close()
print(json.dumps(out))
"""


def udp_datagram(tag: str, family: str) -> bytes:
    return f"badsum-udp-{tag}-{family}".encode()


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def tools() -> None:
    need_root()
    for tool in ("ip", "ethtool", "tcpdump", "nstat"):
        need_tool(tool)


@dataclass(frozen=True)
class Pair:
    """Two namespaces joined by a veth pair: a/veth0 (192.0.2.1, 2001:db8::1) and b/veth1 (.2, ::2)."""

    topo: Topology
    a: str
    b: str


@pytest.fixture
def pair(tools: None) -> Iterator[Pair]:
    with Topology() as topo:
        a, b = topo.netns("a"), topo.netns("b")
        topo.veth(a, "veth0", b, "veth1")
        for ns, ifname, v4, v6 in ((a, "veth0", A4, A6), (b, "veth1", B4, B6)):
            topo.addr(ns, ifname, f"{v4}/24")
            topo.addr(ns, ifname, f"{v6}/64")
            topo.up(ns, ifname)
        for ns, ifname in ((a, "veth0"), (b, "veth1")):
            topo.wait_oper_up(ns, ifname)
            topo.wait_addrs_ready(ns, ifname)
        yield Pair(topo, a, b)


# -- oracles --------------------------------------------------------------------------------------


def nstat(topo: Topology, ns: str) -> dict[str, int]:
    # -a: absolute values, -s: leave nstat's history file alone, -z: print zero counters too.
    out = topo.exec(ns, ["nstat", "-asz", "--json", *NSTAT_COUNTERS]).stdout
    kernel = json.loads(out)["kernel"]
    return {name: int(kernel.get(name, 0)) for name in NSTAT_COUNTERS}


@dataclass(frozen=True)
class TcpdumpPacket:
    """One packet as `tcpdump -nn -vv -tt -r` prints it."""

    frame: int
    """1-based, as badsum numbers frames."""
    proto: str | None
    """'tcp' or 'udp' when tcpdump printed a port pair with a checksum verdict, else None."""
    src: str | None
    dst: str | None
    stored: int | None
    correct: int | None
    """The value tcpdump says the field should hold; None when tcpdump calls it correct."""
    text: str


_START = re.compile(r"^\d+\.\d+ ")
_PORTS = re.compile(r"\s([0-9a-f.:]+)\.\d+ > ([0-9a-f.:]+)\.\d+: ")
_TCP_SUM = re.compile(r"cksum 0x([0-9a-f]{4}) \((correct|incorrect -> 0x([0-9a-f]{4}))\)")
_UDP_OK = re.compile(r"\[udp sum ok\]")
_UDP_BAD = re.compile(r"\[bad udp cksum 0x([0-9a-f]{4}) -> 0x([0-9a-f]{4})!\]")


def tcpdump_read(path: Path) -> list[TcpdumpPacket]:
    cp = run(["tcpdump", "-nn", "-vv", "-tt", "-r", str(path)], timeout=30)
    blocks: list[str] = []
    for line in cp.stdout.splitlines():
        if _START.match(line):
            blocks.append(line)
        elif blocks:
            blocks[-1] += "\n" + line
    packets = []
    for frame, text in enumerate(blocks, 1):
        proto = src = dst = stored = correct = None
        ports = _PORTS.search(text)
        if ports:
            src, dst = ports.groups()
        if m := _TCP_SUM.search(text):
            proto, stored = "tcp", int(m.group(1), 16)
            correct = int(m.group(3), 16) if m.group(3) else None
        elif m := _UDP_BAD.search(text):
            proto, stored, correct = "udp", int(m.group(1), 16), int(m.group(2), 16)
        elif _UDP_OK.search(text):
            proto = "udp"
        packets.append(TcpdumpPacket(frame, proto, src, dst, stored, correct, text))
    return packets


def badsum_cmd() -> list[str]:
    exe = shutil.which("badsum")
    return [exe] if exe else [sys.executable, "-m", "badsum"]


def badsum_pcap(path: Path, fmt: str) -> subprocess.CompletedProcess[str]:
    """The installed CLI on one capture; exit 0 or 1 are answers, anything else is a failure."""
    cp = subprocess.run([*badsum_cmd(), "pcap", fmt, str(path)], check=False, capture_output=True, text=True,
                        timeout=60, stdin=subprocess.DEVNULL)
    assert cp.returncode in (0, 1), f"badsum failed ({cp.returncode}): {cp.stderr}"
    return cp


def badsum_jsonl(path: Path) -> tuple[int, list[dict]]:
    cp = badsum_pcap(path, "--jsonl")
    records = [json.loads(line) for line in cp.stdout.splitlines() if line.strip()]
    return cp.returncode, [r for r in records if r["record"] == "checksum"]


def badsum_json(path: Path) -> tuple[int, dict]:
    cp = badsum_pcap(path, "--json")
    return cp.returncode, json.loads(cp.stdout)


# -- driving traffic ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    captures: dict[str, Path]
    """namespace role ('a' or 'b') -> its capture."""
    nstat_delta: dict[str, dict[str, int]]
    client: dict[str, str]
    server: dict[str, dict]
    tcpdump_stats: dict[str, str]


def exchange(pair: Pair, tmp_path: Path, tag: str) -> Exchange:
    """Capture both veth ends while A talks TCP and UDP, v4 and v6, to B; stop cleanly."""
    topo = pair.topo
    payload_file = tmp_path / f"payload-{tag}.bin"
    payload_file.write_bytes(TCP_PAYLOAD)
    captures = {"a": tmp_path / f"{tag}-a-veth0.pcap", "b": tmp_path / f"{tag}-b-veth1.pcap"}
    before = {"a": nstat(topo, pair.a), "b": nstat(topo, pair.b)}
    dumps = {"a": topo.tcpdump(pair.a, "veth0", captures["a"]), "b": topo.tcpdump(pair.b, "veth1", captures["b"])}
    server = topo.spawn(pair.b, [sys.executable, "-c", SERVER, B4, B6, str(PORT)])
    server.wait_stderr("ready", timeout=10)
    client = topo.exec(pair.a, [sys.executable, "-c", CLIENT, B4, B6, str(PORT), str(payload_file), tag],
                       timeout=30)
    assert server.wait(timeout=15) == 0, server.stderr
    # The last packet of the exchange is B's UDP reply over IPv6 (the sha256 of the datagram): wait
    # until both captures hold it, then nothing of the exchange can still be in flight.
    last = hashlib.sha256(udp_datagram(tag, "v6")).hexdigest().encode()
    for role, path in captures.items():
        try:
            wait_for(partial(capture_holds, path, last), timeout=5, what=f"the last reply in {path.name}")
        except NetnsError as e:
            # Say why: a full capture ring shows up as "N packets dropped by kernel" on stop.
            dumps[role].stop()
            raise AssertionError(f"{e}\n{dumps[role].stderr}") from e
    stats = {}
    for role, dump in dumps.items():
        assert dump.stop() == 0, dump.stderr
        stats[role] = dump.stderr
    after = {"a": nstat(topo, pair.a), "b": nstat(topo, pair.b)}
    delta = {r: {k: after[r][k] - before[r][k] for k in NSTAT_COUNTERS} for r in before}
    result_line = next(line for line in server.stderr.splitlines() if line.startswith("RESULT "))
    return Exchange(captures, delta, json.loads(client.stdout), json.loads(result_line[7:]), stats)


def capture_holds(path: Path, needle: bytes) -> bool:
    return path.exists() and needle in path.read_bytes()


def assert_application_got_exact_bytes(ex: Exchange, tag: str) -> None:
    """The receiving kernel accepted every byte: the server hashed exactly what A sent."""
    tcp_digest = hashlib.sha256(TCP_PAYLOAD).hexdigest()
    for fam in ("v4", "v6"):
        assert ex.server[f"tcp-{fam}"] == {"sha256": tcp_digest, "bytes": len(TCP_PAYLOAD)}
        assert ex.client[f"tcp-{fam}"] == tcp_digest
        udp_digest = hashlib.sha256(udp_datagram(tag, fam)).hexdigest()
        assert ex.server[f"udp-{fam}"]["sha256"] == udp_digest
        assert ex.client[f"udp-{fam}"] == udp_digest
    for role in ("a", "b"):
        assert ex.nstat_delta[role] == dict.fromkeys(NSTAT_COUNTERS, 0), (role, ex.nstat_delta)
        assert re.search(r"^0 packets dropped by kernel$", ex.tcpdump_stats[role], re.MULTILINE), ex.tcpdump_stats[role]


def l4_packets(packets: list[TcpdumpPacket]) -> list[TcpdumpPacket]:
    """TCP/UDP packets of our exchange (ND, MLD and ARP noise from the fresh links left out)."""
    ours = {A4, B4, A6, B6}
    return [p for p in packets if p.proto and p.src in ours and p.dst in ours]


# -- tests ----------------------------------------------------------------------------------------


@pytest.mark.root
def test_tx_offload_on_shows_partial_on_both_ends(pair: Pair, tmp_path: Path) -> None:
    topo = pair.topo
    for ns, ifname in ((pair.a, "veth0"), (pair.b, "veth1")):
        features = topo.features(ns, ifname)
        # veth advertises NETIF_F_HW_CSUM: the stack leaves TCP/UDP sums CHECKSUM_PARTIAL.
        assert features["tx-checksum-ip-generic"] and features["tx-checksumming"], (ns, features)

    ex = exchange(pair, tmp_path, "on")
    assert_application_got_exact_bytes(ex, "on")

    seen: dict[str, Counter] = {}
    for role, path in ex.captures.items():
        sender = {A4, A6} if role == "a" else {B4, B6}
        code, records = badsum_jsonl(path)
        assert not [r for r in records if r["status"] == "bad"], records
        # Partial alone is no fault: a plain pcap says nothing about direction.
        assert code == 0, records
        by_frame = {(r["frame"], r["layer"]): r for r in records}
        packets = l4_packets(tcpdump_read(path))
        sent = [p for p in packets if p.src in sender]
        assert {p.proto for p in sent} == {"tcp", "udp"}, f"{path.name}: nothing sent by {role}?"
        assert {p.src for p in sent} == sender
        for p in packets:
            # tcpdump calls the field incorrect and names the full sum: badsum must say partial, not
            # bad, and agree with tcpdump on both the stored and the full value.
            assert p.correct is not None, f"tcpdump says correct:\n{p.text}"
            r = by_frame.get((p.frame, p.proto))
            assert r is not None, f"badsum has no record for frame {p.frame}:\n{p.text}"
            assert r["status"] == "partial", (r, p.text)
            assert int(r["stored"], 16) == p.stored and int(r["computed"], 16) == p.correct, (r, p.text)
            assert r["flow"]["src"] == p.src and r["flow"]["dst"] == p.dst
        # Nothing else is non-ok: IPv4 header sums are computed in software, ICMPv6 (ND/MLD) too.
        assert {k for k in by_frame} == {(p.frame, p.proto) for p in packets}, records
        seen[role] = Counter((p.src, p.dst, p.proto, p.stored, p.correct) for p in packets)

    # The receiver sees the same partial sums: veth hands the very skb to its peer
    # (veth_xmit -> __dev_forward_skb), still CHECKSUM_PARTIAL, GSO super-frames unsegmented; the
    # receiving stack trusts CHECKSUM_PARTIAL (skb_csum_unnecessary), hence nstat stays at 0.
    assert seen["a"] == seen["b"]


@pytest.mark.root
def test_tx_offload_off_every_checksum_ok(pair: Pair, tmp_path: Path) -> None:
    topo = pair.topo
    for ns, ifname in ((pair.a, "veth0"), (pair.b, "veth1")):
        topo.set_features(ns, ifname, tx="off")
        features = topo.features(ns, ifname)
        assert not features["tx-checksum-ip-generic"] and not features["tx-checksumming"], (ns, features)

    ex = exchange(pair, tmp_path, "off")
    assert_application_got_exact_bytes(ex, "off")

    for path in ex.captures.values():
        code, envelope = badsum_json(path)
        totals = envelope["data"]["totals"]
        assert code == 0 and envelope["status"] == "ok", envelope
        assert totals["ok"] > 0 and all(n == 0 for s, n in totals.items() if s != "ok"), totals
        layers = {c["layer"] for c in envelope["data"]["checksums"] if c["status"] == "ok"}
        assert {"tcp", "udp", "ipv4"} <= layers, envelope["data"]["checksums"]
        packets = l4_packets(tcpdump_read(path))
        assert {p.proto for p in packets} == {"tcp", "udp"}
        # Software checksums: tcpdump finds every one correct (and segments of at most the MTU).
        assert all(p.correct is None for p in packets), [p.text for p in packets if p.correct is not None]
        assert "incorrect" not in run(["tcpdump", "-nn", "-vv", "-r", str(path)], timeout=30).stdout


@pytest.mark.tools
def test_saved_veth_capture_is_partial_not_bad() -> None:
    need_tool("tcpdump")
    assert DATA_CAPTURE.stat().st_size < 20_000
    code, envelope = badsum_json(DATA_CAPTURE)
    assert code == 0 and envelope["data"]["totals"]["bad"] == 0, envelope
    cells = {(c["layer"], c["status"]): c["count"] for c in envelope["data"]["checksums"]}
    assert cells.get(("tcp", "partial"), 0) > 0 and cells.get(("udp", "partial"), 0) > 0, cells

    _, records = badsum_jsonl(DATA_CAPTURE)
    partial = {(r["frame"], r["layer"]): r for r in records if r["status"] == "partial"}
    packets = [p for p in tcpdump_read(DATA_CAPTURE) if p.proto]
    # Independent oracle: tcpdump calls exactly these fields incorrect, and names the same full sum.
    assert {(p.frame, p.proto) for p in packets if p.correct is not None} == set(partial)
    for p in packets:
        r = partial[(p.frame, p.proto)]
        assert (int(r["stored"], 16), int(r["computed"], 16)) == (p.stored, p.correct), (r, p.text)


@pytest.mark.root
def test_zz_nothing_left_behind() -> None:
    """Runs last in this module: no namespace of ours and no process we started survives."""
    need_root()
    need_tool("ip")
    assert [n for n in list_netns() if n.startswith(SESSION_PREFIX)] == []
    for pid, name in STARTED:
        if pid_alive(pid):
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            assert comm != Path(name).name[:15], f"{name} (pid {pid}) still running"
