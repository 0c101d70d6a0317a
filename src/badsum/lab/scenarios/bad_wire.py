"""bad-wire: a corrupting switch between two hosts; does corrupt data reach a container? (KB-001)

    h1:eth0 =veth= sw:p1 -br-a- tapA <relay> tapB -br-b- sw:p2 =veth= h2:eth0 -route- h2:br0 =veth= c2:eth0

The relay (badsum.lab.relay) copies frames between the taps and, from h1 towards h2, flips one
payload byte of every Nth TCP data segment without fixing any checksum, logging each flip to
`relay-flips.jsonl` in the run folder. Three paths through h2, one TCP transfer each:

- routed: h1 talks to c2's address; h2 forwards without looking at L4, so c2 must check.
- nat: h1 talks to h2's own address, DNATed to c2 (nftables, as Docker publishes a port);
  conntrack verifies TCP checksums in prerouting (nf_conntrack_checksum=1, the default), so a
  corrupt segment is INVALID, escapes the DNAT and is dropped by h2's own TCP.
- nat-nocsum: the same with nf_conntrack_checksum=0: NAT rewrites the header and updates the bad
  checksum incrementally (RFC 1624), so it stays bad and c2 must catch it.

KB-001 (veth turning CHECKSUM_NONE into CHECKSUM_UNNECESSARY, fixed in v4.4 by ce8c839b74e3)
delivered such bytes to containers. Here h2's "NIC" is itself a veth, so on such a kernel the
frames would already be marked verified at h2:eth0 and, by our reading of the old veth code, every
path would deliver them (not run here). A bad wire has no fix: `--fix` changes nothing.
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from badsum.lab.lab import Lab
from badsum.lab.result import ScenarioResult
from badsum.lab.runner import Background, run, wait_for
from badsum.lab.scenarios import checks
from badsum.lab.scenarios.base import Scenario
from badsum.lab.topology import Address, Bridge, Route, Sysctl, Topology, Veth

H1, H2 = "198.51.100.1", "198.51.100.2"
GW, C2 = "203.0.113.1", "203.0.113.2"
FLIP_LOG = "relay-flips.jsonl"
NBYTES = 256 * 1024  # ~180 full segments: with EVERY=10 each connection meets MAX_FLIPS flips
EVERY, OFFSET, MAX_FLIPS = 10, 100, 6
RELAY_TIMEOUT = 90.0  # a bound on the whole run; the body stops the relay long before


@dataclass(frozen=True, slots=True)
class Variant:
    """One way from h1 to the application in c2 (its own port, capture tag and flips)."""

    label: str
    port: int
    connect: str
    conntrack_checksum: int | None
    """h2's net.netfilter.nf_conntrack_checksum for this path (None: no conntrack on the path)."""


VARIANTS = (
    Variant("routed", 9100, C2, None),
    Variant("nat", 9200, H2, 1),
    Variant("nat-nocsum", 9300, H2, 0),
)

# Loaded only after the routed path has run, so that no conntrack sits on the routed path.
NAT_RULES = f"""table ip badsum_bad_wire {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {H2} tcp dport {{ {VARIANTS[1].port}, {VARIANTS[2].port} }} dnat to {C2}
    }}
}}
"""


def topology() -> Topology:
    # The taps are not declared: the relay creates them (their lifetime is the relay's, as a
    # switch's ports are), and the body enslaves them to br-a and br-b once they exist.
    return Topology(
        name="bad-wire",
        namespaces=["h1", "sw", "h2", "c2"],
        veths=[Veth("h1", "eth0", "sw", "p1"), Veth("sw", "p2", "h2", "eth0"), Veth("c2", "eth0", "h2", "veth-c2")],
        bridges=[Bridge("sw", "br-a", ("p1",)), Bridge("sw", "br-b", ("p2",)), Bridge("h2", "br0", ("veth-c2",))],
        addresses=[
            Address("h1", "eth0", f"{H1}/24"),
            Address("h2", "eth0", f"{H2}/24"),
            Address("h2", "br0", f"{GW}/24"),
            Address("c2", "eth0", f"{C2}/24"),
        ],
        routes=[Route("h1", "203.0.113.0/24", via=H2), Route("c2", "default", via=GW)],
        sysctls=[Sysctl("h2", "net.ipv4.ip_forward", "1")],
    )


POINTS = {
    "h1:eth0": ("h1", "eth0"),
    "sw:p1": ("sw", "p1"),
    "sw:tapA": ("sw", "tapA"),
    "sw:p2": ("sw", "p2"),
    "h2:eth0": ("h2", "eth0"),
    "c2:eth0": ("c2", "eth0"),
}
#: From the relay's input on, a wrong TCP sum from h1 is real (before it, on h1:eth0 and sw:p1,
#: h1's sums are still pending transmit offload and tcpdump calls them all wrong).
CHECKED_POINTS = ("sw:tapA", "sw:p2", "h2:eth0", "c2:eth0")


def start_relay(lab: Lab) -> Background:
    ports = ",".join(str(p.port) for p in VARIANTS)
    argv = [sys.executable, "-m", "badsum.lab.relay", "--tap-a", "tapA", "--tap-b", "tapB",
            "--log", str(lab.out / FLIP_LOG), "--every", str(EVERY), "--offset", str(OFFSET),
            "--max-flips", str(MAX_FLIPS), "--ports", ports, "--timeout", str(RELAY_TIMEOUT),
            "--max-frames", "200000"]  # fmt: skip
    relay = lab.spawn("relay", "sw", argv, stdout_file=lab.state.dir / "relay.out")
    wait_for(lambda: "READY" in _text(lab.state.dir / "relay.out") or not relay.alive(), 10, what="relay")
    if not relay.alive():
        raise RuntimeError(f"relay failed to start: {relay.output()[-400:]}")
    for tap, br in (("tapB", "br-b"), ("tapA", "br-a")):  # B first: frames read on A have somewhere to go
        lab.exec("sw", ["ip", "link", "set", tap, "master", br])
        lab.exec("sw", ["ip", "link", "set", tap, "up"])
    return relay


def conntrack_invalid(lab: Lab, ns: str) -> int:
    """The `invalid` column of /proc/net/stat/nf_conntrack (per namespace, one hex row per CPU):
    packets conntrack refused to track, bad checksums among them."""
    rows = lab.exec(ns, ["cat", "/proc/net/stat/nf_conntrack"]).stdout.split("\n")
    col = rows[0].split().index("invalid")
    return sum(int(r.split()[col], 16) for r in rows[1:] if r.strip())


def flips_for(lab: Lab, port: int) -> list[dict]:
    lines = _text(lab.out / FLIP_LOG).splitlines()
    return [e for e in map(json.loads, filter(None, lines)) if e["dport"] == port]


def phase(lab: Lab, result: ScenarioResult, v: Variant) -> dict:
    """One TCP transfer h1 -> c2 along `v`, captured at every point; the row for the table."""
    if v.conntrack_checksum is not None:
        lab.exec("h2", ["sysctl", "-qw", f"net.netfilter.nf_conntrack_checksum={v.conntrack_checksum}"])
        seen = lab.exec("h2", ["sysctl", "-n", "net.netfilter.nf_conntrack_checksum"]).stdout.strip()
        result.add("sysctl", f"{v.label}: h2 net.netfilter.nf_conntrack_checksum = {seen}", seen)
    watch = ["h1", "h2", "c2"]
    before, invalid0 = lab.counters(watch), conntrack_invalid(lab, "h2")
    with lab.capture(POINTS, tag=v.label) as caps, lab.follow(f"tcp port {v.port}") as fol:
        tcp = lab.tcp_transfer("h1", "c2", C2, connect_addr=v.connect, port=v.port, nbytes=NBYTES, timeout=10)
    after, invalid = lab.counters(watch), conntrack_invalid(lab, "h2") - invalid0
    result.follow[v.label] = fol.data if fol.data is not None else {"not_run": fol.why_not}
    result.add("badsum follow", f"{v.label}: {fol.summary()}; TCP_CSUM drops: "
               + (", ".join(f"{ns} {fol.drops('TCP_CSUM', f'{ns}:eth0')}" for ns in ("h2", "c2"))), fol.first_bad_hops())
    d = {ns: {k: after[ns][k] - before[ns][k] for k in after[ns]} for ns in watch}
    for point, p in caps.items():
        result.captures[f"{v.label} {point}"] = str(p)
    flips = flips_for(lab, v.port)
    result.add("relay", f"{v.label}: the wire flipped {len(flips)} bytes (every {EVERY}th data segment h1->h2, "
               f"payload offset {OFFSET}), logged in {FLIP_LOG}", len(flips))  # fmt: skip

    wrong = {pt: checks.tcpdump_incorrect(caps[pt], f"tcp and src host {H1} and port {v.port}") for pt in CHECKED_POINTS}
    result.add("tcpdump", f"{v.label}: TCP segments from h1 with an incorrect checksum: "
               + ", ".join(f"{pt} {n}" for pt, n in wrong.items()), wrong)  # fmt: skip
    bad = checks.badsum_statuses(caps["sw:p2"]).get(("tcp", "bad"), 0)
    result.add("badsum pcap", f"{v.label}: badsum pcap calls {bad} TCP checksums bad at sw:p2", bad)

    csum = {ns: d[ns]["TcpInCsumErrors"] for ns in ("h2", "c2")}
    dropped_in = [ns for ns, n in csum.items() if n > 0]
    retrans = d["h1"]["TcpRetransSegs"]
    result.add("nstat", f"{v.label}: TcpInCsumErrors h2 +{csum['h2']}, c2 +{csum['c2']}; "
               f"h1 TcpRetransSegs +{retrans}", {"TcpInCsumErrors": csum, "TcpRetransSegs": retrans})  # fmt: skip
    if v.conntrack_checksum is not None:
        result.add("conntrack", f"{v.label}: h2's conntrack counted {invalid} packets INVALID "
                   "(/proc/net/stat/nf_conntrack); those escape the DNAT", invalid)  # fmt: skip
    srv = tcp["server"]
    if tcp["corrupt_delivered"]:
        app = "CORRUPT data delivered"
    elif tcp["ok"]:
        app = "intact"
    else:
        app = "transfer failed"
    result.add("application", f"{v.label}: {srv.get('bytes')} of {NBYTES} bytes, sha256 "
               f"{'matches' if tcp['ok'] else 'differs' if tcp['corrupt_delivered'] else 'n/a'}: {app}", srv)  # fmt: skip
    result.traffic[v.label] = {"tcp": tcp, "flips": len(flips), "counters": d, "incorrect": wrong,
                               "conntrack_invalid_h2": invalid}  # fmt: skip
    return {"path": v.label, "flips": len(flips), "incorrect@sw:p2": wrong["sw:p2"], "incorrect@c2": wrong["c2:eth0"],
            "csum_err_h2": csum["h2"], "csum_err_c2": csum["c2"], "retrans_h1": retrans,
            "ct_invalid_h2": invalid if v.conntrack_checksum is not None else "-",
            "dropped_in": "+".join(dropped_in) or "-", "app": app}  # fmt: skip


def body(lab: Lab, result: ScenarioResult, fix: bool) -> None:
    relay = start_relay(lab)
    try:
        rx = lab.features("c2", "eth0").get("rx-checksumming")
        tx = lab.features("sw", "tapA").get("tx-checksum-ip-generic")
        result.add("ethtool", f"c2:eth0 rx-checksumming {'on' if rx else 'off'} (the veth feature KB-001 abused); "
                   f"sw:tapA tx-checksumming {'on' if tx else 'off'} (so the kernel completes sums before the wire)",
                   {"c2:eth0 rx-checksumming": rx, "sw:tapA tx-checksum-ip-generic": tx})  # fmt: skip
        ping = lab.ping("h1", C2, count=2)  # through the relay: the wire works (and ARP is warm)
        result.add("ping", f"h1 -> c2 across the relay: {ping['received']}/{ping['sent']} answered", ping)
        rows = [phase(lab, result, VARIANTS[0])]
        run(["nft", "-f", "-"], ns=lab.ns("h2"), input=NAT_RULES)
        rows += [phase(lab, result, p) for p in VARIANTS[1:]]
    finally:
        relay.stop(signal.SIGTERM)
        summary = _last_json(_text(lab.state.dir / "relay.out"))
        result.traffic["relay"] = {"pid": relay.pid, "exit": relay.proc.returncode, "summary": summary,
                                   "flip_log": str(lab.out / FLIP_LOG)}  # fmt: skip
    result.table = rows
    result.add("relay", f"relay relayed {summary.get('frames')} frames, flipped {summary.get('flips')} bytes, "
               f"stopped by {summary.get('stopped_by')}", summary)  # fmt: skip

    delivered = [r["path"] for r in rows if r["app"].startswith("CORRUPT")]
    untested = [r["path"] for r in rows if r["flips"] == 0]
    failed = [r["path"] for r in rows if r["app"] == "transfer failed"]
    result.fix_applied = False  # there is nothing to fix on a bad wire; --fix changes nothing
    result.symptom_observed = bool(delivered)
    # A corrupt delivery is KB-001 reproduced; its absence says this kernel checks, nothing more.
    result.reproduced = True if delivered else None
    dropped = "; ".join(f"{r['path']}: {r['flips']} corrupt segments dropped in {r['dropped_in']}"
                        + (f" (conntrack INVALID {r['ct_invalid_h2']})" if r["ct_invalid_h2"] != "-" else "") for r in rows)
    if delivered:
        verdict = f"CORRUPT DATA DELIVERED to the application on {', '.join(delivered)} ({dropped})"
    else:
        verdict = f"no path delivered corrupt data to the application ({dropped})"
        if not failed:
            verdict += "; retransmissions carried good data"
    if untested:
        verdict += f"; inconclusive on {', '.join(untested)}: the wire flipped nothing there"
    if failed:
        verdict += f"; transfer failed on {', '.join(failed)}"
    if fix:
        verdict += "; --fix changes nothing here: a bad wire has no software fix, the receiver's checksum check is the defence"
    result.verdict = verdict


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _last_json(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}


SCENARIO = Scenario(
    name="bad-wire",
    title="A corrupting wire before a container: are bad segments dropped, on routed and NAT paths?",
    kb=("KB-001",),
    topology=topology,
    body=body,
    tools=("nft",),
    watch=("h1", "h2", "c2"),
)
