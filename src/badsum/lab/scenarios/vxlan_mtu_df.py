"""KB-003: a VXLAN overlay whose MTU ignores the underlay's, with DF set on the tunnel.

Two hosts joined by an underlay of MTU 1450 (then 1454, in a second phase of the same run).
Weave-like: each host bridges its VXLAN device (`df set`, no lower device, so the kernel does
not cap its MTU) with a container's veth. Broken: overlay MTU 1500, so a full-size inner packet
needs 1550 bytes on the underlay. Traffic: a DF UDP heartbeat to port 6784 sized to the overlay
MTU (Weave sizes its fastdp heartbeats to the MTU), the issue's literal 1474-byte datagram, and a
bulk TCP transfer between the containers. `--fix`: overlay MTU = underlay - 50 (VXLAN over IPv4).
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path

from badsum.capture import open_capture
from badsum.lab.lab import Lab
from badsum.lab.result import ScenarioResult
from badsum.lab.runner import CommandError
from badsum.lab.scenarios.base import Scenario
from badsum.lab.topology import Address, Bridge, Sysctl, Topology, Veth, Vxlan
from badsum.wire.frame import decode_frame
from badsum.wire.icmp import ICMPHeader

H1_UNDER, H2_UNDER = "198.51.100.1", "198.51.100.2"
H1, H2 = "203.0.113.1", "203.0.113.2"
C1, C2 = "203.0.113.11", "203.0.113.12"
UNDERLAYS = (1450, 1454)
BROKEN_OVERLAY = 1500
#: Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
VXLAN_OVERHEAD = 50
VXLAN_PORT = 4789
HEARTBEAT_PORT = 6784
HEARTBEATS = 3
#: The issue's datagram: 1474 bytes of UDP payload, a 1502-byte IP packet.
ISSUE_DATAGRAM = 1474
#: Where the overlay MTU lives, per namespace; bridge ports before the bridge.
OVERLAY_LINKS = {"h1": ("vethc1", "vxlan0", "br0"), "h2": ("vethc2", "vxlan0", "br0"), "c1": ("eth0",), "c2": ("eth0",)}
NAMESPACES = ("h1", "h2", "c1", "c2")
#: A TCP transfer slower than this stalled (it takes milliseconds here when it works).
STALL_S = 1.0


def topology() -> Topology:
    o = BROKEN_OVERLAY
    return Topology(
        name="vxlan-mtu-df",
        namespaces=list(NAMESPACES),
        veths=[Veth("h1", "eth0", "h2", "eth0", mtu=UNDERLAYS[0]),
               Veth("c1", "eth0", "h1", "vethc1", mtu=o), Veth("c2", "eth0", "h2", "vethc2", mtu=o)],
        vxlans=[Vxlan("h1", "vxlan0", 42, VXLAN_PORT, H1_UNDER, H2_UNDER, None, df="set", mtu=o),
                Vxlan("h2", "vxlan0", 42, VXLAN_PORT, H2_UNDER, H1_UNDER, None, df="set", mtu=o)],
        bridges=[Bridge("h1", "br0", ("vxlan0", "vethc1"), mtu=o), Bridge("h2", "br0", ("vxlan0", "vethc2"), mtu=o)],
        addresses=[Address("h1", "eth0", f"{H1_UNDER}/24"), Address("h2", "eth0", f"{H2_UNDER}/24"),
                   Address("h1", "br0", f"{H1}/24"), Address("h2", "br0", f"{H2}/24"),
                   Address("c1", "eth0", f"{C1}/24"), Address("c2", "eth0", f"{C2}/24")],
        # No IPv6: its link-local chatter would only pad the captures.
        sysctls=[Sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1") for ns in NAMESPACES],
    )


POINTS = {
    "c1:eth0": ("c1", "eth0"),
    "h1:br0": ("h1", "br0"),
    "h1:vxlan0": ("h1", "vxlan0"),
    "h1:eth0": ("h1", "eth0"),
    "h2:eth0": ("h2", "eth0"),
    "h2:vxlan0": ("h2", "vxlan0"),
    "c2:eth0": ("c2", "eth0"),
}
#: Where ICMP frag-needed reaches each sender: the heartbeat's host, the TCP container.
ICMP_POINTS = {"h1": ("h1:br0", H1), "c1": ("c1:eth0", C1)}
UNDERLAY_POINTS = ("h1:eth0", "h2:eth0")
#: The heartbeat's path, in order.
HEARTBEAT_PATH = ("h1:br0", "h1:vxlan0", "h1:eth0", "h2:eth0", "h2:vxlan0")


# -- reading captures (tcpdump is the independent oracle; badsum's decoder agrees or not) ----------

_FRAG_NEEDED = re.compile(r"> (?P<dst>[0-9.]+): ICMP .*need to frag \(mtu (?P<mtu>\d+)\)")


def _tcpdump(path: Path, *opts: str, expr: str | None = None) -> list[str]:
    if not path.exists():
        return []
    argv = ["tcpdump", "-n", *opts, "-r", str(path), *([expr] if expr else [])]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return r.stdout.splitlines()


def tcpdump_frag_needed(path: Path, dst: str) -> list[int]:
    """The MTU of every ICMP frag-needed (type 3 code 4) to `dst` that `tcpdump -vv` prints."""
    return [int(m["mtu"]) for line in _tcpdump(path, "-vv") if (m := _FRAG_NEEDED.search(line)) and m["dst"] == dst]


def badsum_frag_needed(path: Path, dst: str) -> list[int]:
    """The same, from badsum's decoder (ICMP headers not quoted inside another ICMP error)."""
    want = ipaddress.ip_address(dst).packed
    if not path.exists():
        return []
    mtus = []
    with open_capture(path) as reader:
        for b in reader:
            for i in range(len(b)):
                frame = decode_frame(b.packet(i), int(b.linktype[i]), int(b.origlen[i]))
                for pkt in frame.packets:
                    icmp = pkt.l4
                    if not pkt.quoted and isinstance(icmp, ICMPHeader) and icmp.mtu is not None and pkt.ip.dst == want:
                        mtus.append(icmp.mtu)
    return mtus


def datagrams_to(path: Path, addr: str, port: int, underlay: bool) -> int:
    """Datagrams to addr:port at a point. On the underlay tcpdump is told the UDP is VXLAN: it
    picks a dissector by either port, and the random source port can be a known one (49152)."""
    needle = f"> {addr}.{port}:"
    lines = _tcpdump(path, "-T", "vxlan", expr=f"udp port {VXLAN_PORT}") if underlay else _tcpdump(path)
    return sum(1 for line in lines if needle in line)


# -- the lab's own state ---------------------------------------------------------------------------


def set_mtus(lab: Lab, underlay: int, overlay: int) -> None:
    for ns in ("h1", "h2"):
        lab.exec(ns, ["ip", "link", "set", "eth0", "mtu", str(underlay)])
    for ns, devs in OVERLAY_LINKS.items():
        for dev in devs:
            lab.exec(ns, ["ip", "link", "set", dev, "mtu", str(overlay)])
    for ns in NAMESPACES:
        # Forget the path MTUs learned in the previous phase: each phase starts cold.
        lab.exec(ns, ["ip", "route", "flush", "cache"])


def link_mtu(lab: Lab, ns: str, dev: str) -> int:
    return int(json.loads(lab.exec(ns, ["ip", "-j", "link", "show", dev]).stdout)[0]["mtu"])


def route_mtu(lab: Lab, ns: str, dst: str) -> int | None:
    """The path MTU the kernel holds for dst (`ip -j route get`; None when it learned none)."""
    doc = json.loads(lab.exec(ns, ["ip", "-j", "route", "get", dst]).stdout or "[]")
    for metric in (doc[0].get("metrics", []) if doc else []):
        if isinstance(metric, dict) and "mtu" in metric:
            return int(metric["mtu"])
    return None


def bound_vxlan_probe(lab: Lab, result: ScenarioResult) -> None:
    """Why the lab's VXLAN has no lower device: bound to its underlay, the kernel caps its MTU."""
    probe = "vxprobe"
    lab.exec("h1", ["ip", "link", "add", probe, "type", "vxlan", "id", "4242", "dstport", "4790",
                    "local", H1_UNDER, "dev", "eth0"])  # fmt: skip
    try:
        default = link_mtu(lab, "h1", probe)
        r = lab.exec("h1", ["ip", "link", "set", probe, "mtu", str(BROKEN_OVERLAY)], check=False)
        refused = r.returncode != 0
        why = (r.stderr.strip().splitlines() or [""])[-1]
    finally:
        lab.exec("h1", ["ip", "link", "del", probe], check=False)
    result.add("ip", f"a VXLAN bound to the {UNDERLAYS[0]}-byte underlay (`dev eth0`) gets MTU {default}; "
               f"MTU {BROKEN_OVERLAY} is {'refused: ' + why if refused else 'accepted'}. The broken overlay "
               "needs an unbound VXLAN (no `dev`), as Weave's datapath vport and hand-made setups have",
               {"default_mtu": default, "refused": refused, "error": why})  # fmt: skip


# -- one phase ----------------------------------------------------------------------------------------


def phase(lab: Lab, result: ScenarioResult, underlay: int, overlay: int, port: int) -> dict:
    label = f"u{underlay}-o{overlay}"
    set_mtus(lab, underlay, overlay)
    before = lab.counters(list(NAMESPACES))
    with lab.capture(POINTS, tag=label) as caps, lab.follow() as fol:
        hb = lab.udp_exchange("h1", "h2", H2, port=HEARTBEAT_PORT, size=overlay - 28, count=HEARTBEATS,
                              df=True, timeout=3)  # fmt: skip
        literal = lab.udp_exchange("h1", "h2", H2, port=HEARTBEAT_PORT, size=ISSUE_DATAGRAM, count=1, df=True,
                                   timeout=2)  # fmt: skip
        tcp = lab.tcp_transfer("c1", "c2", C2, port=port, nbytes=500_000, timeout=5)
    after = lab.counters(list(NAMESPACES))
    result.follow[label] = fol.data if fol.data is not None else {"not_run": fol.why_not}
    result.add("badsum follow", f"{label}: {fol.summary()}", fol.first_bad_hops())
    d = {ns: {k: after[ns][k] - before[ns][k] for k in after[ns]} for ns in NAMESPACES}
    for point, path in caps.items():
        result.captures[f"{label} {point}"] = str(path)
    pmtu = {"h1": route_mtu(lab, "h1", H2), "c1": route_mtu(lab, "c1", C2)}
    icmp = {who: tcpdump_frag_needed(caps[p], dst) for who, (p, dst) in ICMP_POINTS.items()}
    icmp_badsum = {who: badsum_frag_needed(caps[p], dst) for who, (p, dst) in ICMP_POINTS.items()}
    seen = {p: datagrams_to(caps[p], H2, HEARTBEAT_PORT, p in UNDERLAY_POINTS) for p in HEARTBEAT_PATH}
    c = hb["client"]
    errors = sorted(set(c.get("errors", [])))
    hb_failed = c.get("replies", 0) < HEARTBEATS
    tcp_s = tcp["client"].get("elapsed_s")
    tcp_stalled = not tcp["ok"] or tcp_s is None or tcp_s >= STALL_S
    mtus = sorted({m for v in icmp.values() for m in v})

    result.traffic[label] = {"heartbeat": hb, "issue_datagram": literal, "tcp": tcp, "nstat": d, "pmtu": pmtu,
                             "frag_needed_tcpdump": icmp, "frag_needed_badsum": icmp_badsum,
                             "heartbeat_path": seen}  # fmt: skip
    result.add("application", f"{label}: heartbeat ({overlay - 28}-byte DF datagram to :{HEARTBEAT_PORT}) "
               f"{c.get('replies', 0)}/{HEARTBEATS} answered" + (f", errors {', '.join(errors)}" if errors else ""), c)
    lit = literal["client"]
    lit_errors = ", ".join(sorted(set(lit.get("errors", []))))
    result.add("application", f"{label}: the issue's {ISSUE_DATAGRAM}-byte datagram ({ISSUE_DATAGRAM + 28}-byte "
               f"IP packet) {lit.get('replies', 0)}/1 answered" + (f", errors {lit_errors}" if lit_errors else ""),
               lit)  # fmt: skip
    result.add("tcpdump", f"{label}: heartbeats seen along the path: "
               + ", ".join(f"{p} {n}" for p, n in seen.items()), seen)  # fmt: skip
    result.add("tcpdump", f"{label}: ICMP frag-needed to the senders: "
               + ("; ".join(f"{len(v)} to {who} (mtu {', '.join(map(str, sorted(set(v))))})"
                            for who, v in icmp.items() if v) or "none"), icmp)  # fmt: skip
    agree = icmp == icmp_badsum
    result.add("badsum pcap", f"{label}: badsum's decoder reads the same frag-needed MTUs: {'yes' if agree else 'NO'}",
               icmp_badsum)  # fmt: skip
    result.add("application", f"{label}: TCP c1 -> c2, 500 kB: {'delivered' if tcp['ok'] else 'FAILED'} in {tcp_s} s"
               + (" (stalled)" if tcp_stalled else ""), tcp["client"])  # fmt: skip
    result.add("nstat", f"{label}: c1 TcpRetransSegs +{d['c1']['TcpRetransSegs']}, IcmpInDestUnreachs "
               f"+{d['c1']['IcmpInDestUnreachs']}; h1 IcmpInDestUnreachs +{d['h1']['IcmpInDestUnreachs']}, "
               f"IpFragFails +{d['h1']['IpFragFails']}", d)  # fmt: skip
    result.add("ip", f"{label}: path MTU the kernel learned: h1 -> {H2} {pmtu['h1']}, c1 -> {C2} {pmtu['c1']}", pmtu)
    result.table.append({"phase": label, "heartbeat": f"{c.get('replies', 0)}/{HEARTBEATS}",
                         "errors": ",".join(errors) or "-", "frag_needed_mtu": ",".join(map(str, mtus)) or "-",
                         "pmtu_c1": pmtu["c1"] or "-", "tcp": "ok" if tcp["ok"] else "failed", "tcp_s": tcp_s,
                         "retrans": d["c1"]["TcpRetransSegs"]})  # fmt: skip
    return {"label": label, "heartbeat_failed": hb_failed, "tcp_stalled": tcp_stalled, "mtus": mtus,
            "errors": errors, "retrans": d["c1"]["TcpRetransSegs"], "on_underlay": seen["h1:eth0"]}  # fmt: skip


def body(lab: Lab, result: ScenarioResult, fix: bool) -> None:
    info = json.loads(lab.exec("h1", ["ip", "-j", "-d", "link", "show", "vxlan0"]).stdout)[0]
    data = info.get("linkinfo", {}).get("info_data", {})
    result.add("ip", f"h1 vxlan0: dstport {data.get('port')}, df {data.get('df')}, MTU {info.get('mtu')}, "
               f"lower device {info.get('link') or 'none'}", data)  # fmt: skip
    try:
        bound_vxlan_probe(lab, result)
    except CommandError as e:
        result.add("ip", f"could not probe a bound VXLAN: {e.detail}")
    broken = [phase(lab, result, u, BROKEN_OVERLAY, 9000 + i) for i, u in enumerate(UNDERLAYS)]
    final = broken
    if fix:
        result.fix_applied = True
        result.add("ip", "fix: overlay MTU = underlay - 50 on vxlan0, br0, the container veths and eth0 "
                   f"({', '.join(f'{u} -> {u - VXLAN_OVERHEAD}' for u in UNDERLAYS)})")  # fmt: skip
        final = [phase(lab, result, u, u - VXLAN_OVERHEAD, 9010 + i) for i, u in enumerate(UNDERLAYS)]
    last = final[-1]
    result.symptom_observed = last["heartbeat_failed"] or last["tcp_stalled"]
    result.reproduced = any(p["heartbeat_failed"] or p["tcp_stalled"] for p in broken)
    result.verdict = verdict(broken, final if fix else None)


def verdict(broken: list[dict], fixed: list[dict] | None) -> str:
    hb = [p for p in broken if p["heartbeat_failed"]]
    stalled = [p for p in broken if p["tcp_stalled"]]
    if hb or stalled:
        mtus = "/".join(str(m) for p in broken for m in p["mtus"][:1]) or "none"
        errs = sorted({e for p in broken for e in p["errors"]})
        where = ", never reaching the underlay" if hb and not any(p["on_underlay"] for p in hb) else ""
        text = (f"reproduced: with overlay MTU {BROKEN_OVERLAY} the DF heartbeat fails on "
                f"{len(hb)}/{len(broken)} underlays{where} (ICMP frag-needed mtu {mtus} back to the senders, "
                f"then {', '.join(errs) or 'no reply'}); "
                + (f"TCP stalls on {len(stalled)}" if stalled else
                   f"TCP does not stall on this kernel: PMTU discovery recovers it "
                   f"({'/'.join(str(p['retrans']) for p in broken)} retransmissions)"))  # fmt: skip
    else:
        text = f"not reproduced on this host: heartbeat and TCP work with overlay MTU {BROKEN_OVERLAY}"
    if fixed is not None:
        ok = not any(p["heartbeat_failed"] or p["tcp_stalled"] for p in fixed)
        text += f"; with overlay MTU = underlay - {VXLAN_OVERHEAD} " + ("both work" if ok else "it still fails")
    return text


SCENARIO = Scenario(
    name="vxlan-mtu-df",
    title="VXLAN overlay MTU 1500 over a 1450/1454 underlay with DF: heartbeats and big packets fail",
    kb=("KB-003",),
    topology=topology,
    body=body,
    watch=NAMESPACES,
)
