"""Let the real kernel retransmit SYNs: two namespaces, a listener, an nftables rule that drops SYNs for a while.

`SynLab` builds namespaces `<session prefix>-cli` and `-srv` (tests/netns.py's Topology) joined by a veth pair (198.51.100.1/.2 and
2001:db8::1/::2; nothing in the root namespace), a TCP listener in the server namespace and, per connect,
an nftables table in the server namespace whose one rule drops incoming SYNs (with a counter) until the
kit deletes the table `drop_for` seconds after the client started connecting. The client's interface is
captured with tcpdump while a python3 client inside the client namespace connects with its own timeout.

What the kernel did is read back with tools of its own, never with badsum: the SYN times from tshark
(`tcp.flags.syn==1 && tcp.flags.ack==0`), the connect time the client measured around connect(), the
client namespace's `TcpExtTCPSynRetrans` from nstat, and the rule's counter from `nft -j`.

The SYN back-off is per client namespace: `net.ipv4.tcp_syn_linear_timeouts` (6.x: the first N retries
wait the initial RTO, 1 s, then the timeout doubles) and `net.ipv4.tcp_syn_retries` are set there only.
Teardown stops only the processes the kit started (by pid) and deletes only its two namespaces.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netns import Background, NetnsError, Topology, run, wait_for

CLIENT4, SERVER4 = "198.51.100.1", "198.51.100.2"
CLIENT6, SERVER6 = "2001:db8::1", "2001:db8::2"
PORT = 8080
CLOSED_PORT = 8081  # nothing listens here: the server answers a SYN with RST
HZ_DEFAULT = 250

# In the server namespace: accept, read the request, answer, close; bounded by a 10 min idle timeout.
SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(16); s.settimeout(600)
print("ready", file=sys.stderr, flush=True)
for _ in range(1000):
    c, _ = s.accept(); c.settimeout(5)
    try:
        c.recv(4096); c.sendall(b"badsum: ok\n")
    except OSError:
        pass
    c.close()
"""

# In the client namespace: one connect with a socket timeout; the times are the client's own.
CLIENT = r"""
import errno, json, socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(timeout)
print("start %.6f" % time.time(), file=sys.stderr, flush=True)
t0 = time.monotonic()
try:
    s.connect((host, port)); outcome = "connected"
except OSError as e:
    # Since 3.10 socket.timeout is TimeoutError, which the kernel's ETIMEDOUT also raises: the
    # socket's own timeout is the one without an errno.
    outcome = "timeout" if e.errno is None else errno.errorcode.get(e.errno, str(e.errno))
t1 = time.monotonic()
if outcome == "connected":
    s.settimeout(5); s.sendall(b"badsum: hello\n"); s.shutdown(socket.SHUT_WR); s.recv(4096)
s.close()
print(json.dumps({"outcome": outcome, "connect_s": t1 - t0}), flush=True)
"""

DROP_TABLE = "bs_syn_drop"
# A named counter outlives the rule: at the deadline one `nft flush chain` stops the drops, and the
# count is read afterwards, at leisure.
DROP_RULESET = """table inet {table} {{
  counter syn_drops {{ }}
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp dport {port} tcp flags & (syn | ack) == syn counter name "syn_drops" drop
  }}
}}
"""


@dataclass(frozen=True, slots=True)
class SynRun:
    """One connect and what the kernel did, read with tools other than badsum."""

    pcap: Path
    """tcpdump on the client's veth (only this connect's port)."""
    client: str
    server: str
    port: int
    outcome: str
    """The client's: connected, timeout (socket timeout), or an errno name (ETIMEDOUT, ECONNREFUSED)."""
    connect_s: float
    """The client's time around connect(), monotonic clock."""
    syn_times: tuple[float, ...]
    """Epoch times of the client's SYNs (no ACK flag) in the capture, from tshark."""
    syn_frames: tuple[int, ...]
    """Their frame numbers (1-based, tshark's)."""
    sport: int
    """The client's port (0 if no SYN was captured)."""
    synack_times: tuple[float, ...]
    """Epoch times of the server's SYN-ACKs in the capture, from tshark."""
    rst_times: tuple[float, ...]
    """Epoch times of RSTs from the server in the capture, from tshark."""
    syn_retrans: int
    """TcpExtTCPSynRetrans delta in the client namespace (nstat)."""
    dropped: int
    """Packets the nftables rule dropped (its counter, read just before it was deleted)."""

    @property
    def gaps_s(self) -> list[float]:
        """Seconds between consecutive SYNs, as tshark timed them."""
        return [b - a for a, b in zip(self.syn_times, self.syn_times[1:], strict=False)]

    @property
    def offsets_s(self) -> list[float]:
        """Each SYN's time after the first one."""
        return [t - self.syn_times[0] for t in self.syn_times]


def wheel_slack_s(timeout_s: float, hz: int = HZ_DEFAULT) -> float:
    """How late the kernel's timer wheel may fire a timer of timeout_s (kernel/time/timer.c).

    Level n of the wheel holds timeouts below 64 * 8**n jiffies with a granularity of 8**n jiffies
    (LVL_CLK_SHIFT 3, LVL_BITS 6), and a timer is rounded up to its level's granularity: so the 1 s
    RTO may fire a few tens of ms late and the 32 s one about 2 s late at HZ=250.
    """
    jiffies = max(int(timeout_s * hz), 1)
    level = 0
    while jiffies >= 64 * 8**level:
        level += 1
    return 8**level / hz


def kernel_hz() -> int:
    """CONFIG_HZ of the running kernel from /proc/config.gz (250 when it is not readable)."""
    import gzip

    try:
        with gzip.open("/proc/config.gz", "rt") as config:
            for line in config:
                if line.startswith("CONFIG_HZ="):
                    return int(line.split("=", 1)[1])
    except OSError:
        pass
    return HZ_DEFAULT


class SynLab:
    """Client and server namespaces (on tests/netns.py's Topology); `connect()` runs one
    capture-connect-read cycle."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.topo = Topology()
        self.prefix = self.topo.prefix
        self.cli = self.srv = ""
        self._runs = 0
        self.default_linear = 0

    @property
    def namespaces(self) -> list[str]:
        return self.topo.namespaces

    @property
    def processes(self) -> list[Background]:
        return self.topo.processes

    # -- building --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop our processes (by pid), then delete our two namespaces; every step runs."""
        self.topo.close()

    def _build(self) -> None:
        t = self.topo
        self.cli, self.srv = t.netns("cli"), t.netns("srv")
        # Created straight into the client namespace with its peer in the server's: never in ours.
        t.veth(self.cli, "veth0", self.srv, "veth0")
        for ns, a4, a6 in ((self.cli, CLIENT4, CLIENT6), (self.srv, SERVER4, SERVER6)):
            t.addr(ns, "veth0", f"{a4}/24")
            t.addr(ns, "veth0", f"{a6}/64")
            t.up(ns, "veth0")
        # The kernel's default, read before any test changes it.
        self.default_linear = int(self.exec(self.cli, ["sysctl", "-n", "net.ipv4.tcp_syn_linear_timeouts"]).stdout)
        for ns in (self.cli, self.srv):
            t.wait_oper_up(ns, "veth0")
        server = self.spawn(self.srv, [sys.executable, "-c", SERVER, str(PORT)])
        server.wait_stderr("ready", timeout=10)

    def exec(self, ns: str, argv: list[str], *, timeout: float = 10.0,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.topo.exec(ns, argv, timeout=timeout, input=input)

    def spawn(self, ns: str, argv: list[str], *, stdout: int | None = subprocess.DEVNULL) -> Background:
        """Start argv inside ns in its own session; close() stops it by pid."""
        return self.topo.spawn(ns, argv, stdout=stdout)

    def sysctl(self, key: str, value: int) -> None:
        """Set a TCP sysctl in the client namespace only; read it back to be sure it is per-netns."""
        self.exec(self.cli, ["sysctl", "-q", "-w", f"{key}={value}"])
        got = self.exec(self.cli, ["sysctl", "-n", key]).stdout.strip()
        if got != str(value):
            raise NetnsError(f"{key} reads {got} in {self.cli}, wanted {value}")

    # -- one connect -----------------------------------------------------------------------

    def connect(self, *, drop_for: float | None, family: int = 4, port: int = PORT,
                client_timeout: float = 150.0) -> SynRun:
        """Capture one connect from the client; drop SYNs at the server for `drop_for` s after it starts.

        drop_for=None: no rule; math.inf: the rule stays until the client has given up.
        """
        self._runs += 1
        client, server = (CLIENT4, SERVER4) if family == 4 else (CLIENT6, SERVER6)
        pcap = self.workdir / f"{self.prefix}-{self._runs}.pcap"
        before = self.nstat()
        if drop_for is not None:
            self.exec(self.srv, ["nft", "-f", "-"], input=DROP_RULESET.format(table=DROP_TABLE, port=port))
        dump = self.topo.tcpdump(self.cli, "veth0", pcap, bpf=["tcp", "port", str(port)])
        cl = self.spawn(self.cli, [sys.executable, "-c", CLIENT, server, str(port), str(client_timeout)],
                        stdout=subprocess.PIPE)
        cl.wait_stderr("start ", timeout=10)
        started = float(cl.stderr.split("start ", 1)[1].split()[0])
        if drop_for is not None and math.isfinite(drop_for):
            # The timer is ours: the rule lives drop_for seconds of the client's own clock, then goes.
            time.sleep(max(0.0, started + drop_for - time.time()))
            self.exec(self.srv, ["nft", "flush", "chain", "inet", DROP_TABLE, "input"])
        try:
            out, _ = cl.proc.communicate(timeout=client_timeout + 30)
        except subprocess.TimeoutExpired as e:
            raise NetnsError(f"client did not return: {cl.stderr}") from e
        dropped = 0
        if drop_for is not None:
            dropped = self.nft_dropped()
            self.exec(self.srv, ["nft", "delete", "table", "inet", DROP_TABLE])
        report = json.loads(out.strip().splitlines()[-1])
        self._settle(pcap)
        rc = dump.stop(signal.SIGINT)
        if rc != 0 or "\n0 packets dropped by kernel" not in dump.stderr:
            raise NetnsError(f"tcpdump exit {rc}: {dump.stderr}")
        after = self.nstat()
        syns = syn_rows(pcap, client)
        synacks = tshark_times(pcap, "tcp.flags.syn==1 && tcp.flags.ack==1")
        rsts = tshark_times(pcap, f"tcp.flags.reset==1 && tcp.srcport=={port}")
        return SynRun(pcap=pcap, client=client, server=server, port=port, outcome=report["outcome"],
                      connect_s=report["connect_s"], syn_times=tuple(t for _, t, _ in syns),
                      syn_frames=tuple(f for f, _, _ in syns), sport=syns[0][2] if syns else 0,
                      synack_times=synacks, rst_times=rsts, syn_retrans=after - before, dropped=dropped)

    def nstat(self) -> int:
        """TcpExtTCPSynRetrans in the client namespace (absolute; -s leaves nstat's history alone)."""
        out = self.exec(self.cli, ["nstat", "-a", "-s", "-z", "--json", "TcpExtTCPSynRetrans"]).stdout
        return int(json.loads(out)["kernel"]["TcpExtTCPSynRetrans"])

    def nft_dropped(self) -> int:
        """Packets the drop rule counted, from `nft -j list counter`."""
        argv = ["nft", "-j", "list", "counter", "inet", DROP_TABLE, "syn_drops"]
        doc = json.loads(self.exec(self.srv, argv).stdout)
        for item in doc["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise NetnsError(f"no counter in {doc}")

    def _settle(self, pcap: Path) -> None:
        """Wait until the capture file stops growing (the last FIN/ACKs flushed), at most 3 s."""
        sizes: list[int] = []

        def stable() -> bool:
            sizes.append(pcap.stat().st_size if pcap.exists() else 0)
            return len(sizes) >= 10 and sizes[-1] == sizes[-10]
        wait_for(stable, timeout=3, what=f"{pcap} to stop growing")


def tshark_times(pcap: Path, display_filter: str) -> tuple[float, ...]:
    """frame.time_epoch of every frame matching display_filter, by tshark."""
    out = run(["tshark", "-n", "-r", str(pcap), "-Y", display_filter, "-T", "fields", "-e", "frame.time_epoch"],
              timeout=30).stdout
    return tuple(float(x) for x in out.split())


def syn_rows(pcap: Path, client: str) -> list[tuple[int, float, int]]:
    """(frame.number, frame.time_epoch, tcp.srcport) of every SYN without ACK from client, by tshark."""
    ip = "ipv6" if ":" in client else "ip"
    out = run(["tshark", "-n", "-r", str(pcap), "-Y", f"tcp.flags.syn==1 && tcp.flags.ack==0 && {ip}.src=={client}",
               "-T", "fields", "-e", "frame.number", "-e", "frame.time_epoch", "-e", "tcp.srcport"], timeout=30).stdout
    return [(int(f), float(t), int(p)) for f, t, p in (line.split() for line in out.splitlines() if line.strip())]


def badsum_symptoms(pcap: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`badsum pcap --json FILE`: (data.symptoms, the whole envelope); exit 0 or 1 both fine."""
    cp = subprocess.run([sys.executable, "-m", "badsum", "pcap", "--json", str(pcap)], capture_output=True,
                        text=True, timeout=120, check=False)
    if cp.returncode not in (0, 1):
        raise AssertionError(f"badsum pcap exit {cp.returncode}: {cp.stderr}")
    try:
        doc = json.loads(cp.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"badsum pcap exit {cp.returncode}, not JSON: {cp.stdout[:200]!r} {cp.stderr}") from e
    return doc["data"].get("symptoms"), doc


def of_kind(symptoms: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [s for s in symptoms if s["kind"] == kind]
