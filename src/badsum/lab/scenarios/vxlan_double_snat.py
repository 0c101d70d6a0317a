"""KB-004: flannel-like VXLAN + kube-proxy's MASQUERADE --random-fully + TX checksum offload.

node1 is the "host": a flannel.1-like VXLAN (port 8472, outer UDP checksum off, tx offload on)
and kube-proxy-shaped iptables rules: KUBE-MARK-MASQ sets 0x4000 on host traffic to a service
VIP, the VIP is DNATed to a pod behind node2's cni0 bridge, and KUBE-POSTROUTING masquerades
marked packets with --random-fully, without the unmark rules of kubernetes#92035. The mark
survives encapsulation, so the *outer* VXLAN packet is masqueraded a second time (its source
port changes). Kernels before 5.7 (ea64d8d6c675) then "updated" the outer checksum of 0 into a
bogus value; the receiver dropped it and connections took 1 s or 63 s. An NFLOG rule in mangle
POSTROUTING (before nat) is the lab's own probe: the outer packet as it was before MASQUERADE.
`--fix`: the unmark rules (RETURN unless marked, then `MARK --xor-mark 0x4000`).

On a kernel with the fix the lab emulates the bug where it acted (badsum.lab.kb004: a tc egress
program on node1:eth0, after POSTROUTING, writing the old udp_manip_pkt() value into the outer
checksum of the marked, SNATed packets whose checksum was 0); every output says so. Only the quick
variant runs by default: connections get CONNECT_TIMEOUT, not the 63 s ladder; `lab run --full`
waits each connection out (FULL_TIMEOUT: the client gives up after its 6th SYN retry, at 127 s).

Each phase runs `badsum follow` (result.follow[phase]): it names node1's uplink as the first bad hop,
the outer checksum rewritten after encapsulation. `configured()` hands tools that inspect a host
(`badsum doctor`) the live configuration, emulation included, without traffic.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from badsum.capture import open_capture
from badsum.checksum.detailed import DetailedJudge
from badsum.lab import kb004
from badsum.lab.lab import Lab, LabError, preflight
from badsum.lab.result import ScenarioResult
from badsum.lab.runner import run
from badsum.lab.scenarios.base import Scenario
from badsum.lab.topology import Address, Bridge, Feature, Route, Sysctl, Topology, Veth, Vxlan
from badsum.wire.ports import PortTable

NODE1, NODE2 = "198.51.100.1", "198.51.100.2"
#: flannel.1 addresses (the tunnel /25), node2's pod /26 behind cni0, and the service VIP.
TUN1, TUN2 = "203.0.113.129", "203.0.113.130"
POD_CIDR, CNI0, POD, VIP = "203.0.113.64/26", "203.0.113.65", "203.0.113.66", "203.0.113.10"
CLUSTER_CIDR = "203.0.113.0/24"
FLANNEL_PORT = 8472
NFLOG_GROUP = 5
CONNECTIONS = 4
PORT0 = 9000
#: A connection set up slower than this waited for SYN retransmissions (1 s is the first).
SLOW_S = 0.9
#: Long enough for the 1 s and 2 s SYN retries (SYN at 0, 1 and 3 s); the 63 s ladder is not waited for.
CONNECT_TIMEOUT = 3.5
#: The full variant: SYNs at 0, 1, 3, 7, 15, 31 and 63 s (tcp_syn_retries 6), the client gives up at 127 s.
FULL_TIMEOUT = 130.0
#: When each SYN of the ladder leaves (exponential backoff from 1 s, no linear start).
SYN_LADDER_S = (0, 1, 3, 7, 15, 31, 63)
#: The client's SYN retries back off exponentially (1, 2, 4 s ...) when the kernel has this sysctl (6.x).
SYN_LINEAR = "net.ipv4.tcp_syn_linear_timeouts"
EMU_NS, EMU_DEV = "node1", "eth0"
PORTS = PortTable.with_vxlan_ports((FLANNEL_PORT,))

KUBE_RULES = f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-LAB - [0:0]
:KUBE-SEP-LAB - [0:0]
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x4000/0x4000 -j MASQUERADE --random-fully
-A KUBE-SERVICES -d {VIP}/32 -p tcp -m comment --comment "lab/web cluster IP" -m tcp --dport {PORT0}:{PORT0 + 9} -j KUBE-SVC-LAB
-A KUBE-SVC-LAB ! -s {CLUSTER_CIDR} -d {VIP}/32 -p tcp -m comment --comment "lab/web cluster IP" -m tcp --dport {PORT0}:{PORT0 + 9} -j KUBE-MARK-MASQ
-A KUBE-SVC-LAB -j KUBE-SEP-LAB
-A KUBE-SEP-LAB -p tcp -m tcp -j DNAT --to-destination {POD}
COMMIT
*mangle
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -p udp -m udp --dport {FLANNEL_PORT} -m comment --comment "badsum lab: outer VXLAN before nat" -j NFLOG --nflog-group {NFLOG_GROUP} --nflog-threshold 1
COMMIT
"""
#: kubernetes#92035: unmark before masquerading, so the encapsulated packet is left alone.
UNMARK_RULES = (
    ["-A", "KUBE-POSTROUTING", "-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"],
    ["-A", "KUBE-POSTROUTING", "-j", "MARK", "--xor-mark", "0x4000"],
    ["-A", "KUBE-POSTROUTING", "-m", "comment", "--comment", "kubernetes service traffic requiring SNAT",
     "-j", "MASQUERADE", "--random-fully"],
)  # fmt: skip


def topology() -> Topology:
    nss = ("node1", "node2", "pod")
    return Topology(
        name="vxlan-double-snat",
        namespaces=list(nss),
        veths=[Veth("node1", "eth0", "node2", "eth0"), Veth("pod", "eth0", "node2", "veth-pod")],
        vxlans=[Vxlan("node1", "flannel.1", 1, FLANNEL_PORT, NODE1, NODE2, "eth0"),
                Vxlan("node2", "flannel.1", 1, FLANNEL_PORT, NODE2, NODE1, "eth0")],
        bridges=[Bridge("node2", "cni0", ("veth-pod",))],
        addresses=[Address("node1", "eth0", f"{NODE1}/24"), Address("node2", "eth0", f"{NODE2}/24"),
                   Address("node1", "flannel.1", f"{TUN1}/25"), Address("node2", "flannel.1", f"{TUN2}/25"),
                   Address("node2", "cni0", f"{CNI0}/26"), Address("pod", "eth0", f"{POD}/26")],
        # The VIP leaves by the default route (eth0), as in a cluster; DNAT then reroutes to flannel.1.
        routes=[Route("node1", POD_CIDR, via=TUN2, dev="flannel.1"),
                Route("node1", "default", via=NODE2), Route("pod", "default", via=CNI0)],
        # node1's uplink finishes checksums in software before it transmits, as a NIC puts finished frames
        # on the wire: across a veth a CHECKSUM_PARTIAL skb would reach node2 still PARTIAL, and node2's UDP
        # would take it as verified (skb_csum_unnecessary) and never look at the outer checksum.
        features=[*(Feature(ns, "flannel.1", "tx-checksum-ip-generic", True) for ns in ("node1", "node2")),
                  Feature("node1", "eth0", "tx-checksum-ip-generic", False)],
        sysctls=[*(Sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1") for ns in nss),
                 Sysctl("node2", "net.ipv4.ip_forward", "1")],
    )  # fmt: skip


POINTS = {
    "node1:nflog": ("node1", f"nflog:{NFLOG_GROUP}"),  # outer, before nat POSTROUTING
    "node1:flannel.1": ("node1", "flannel.1"),  # inner, after the first SNAT
    "node1:eth0": ("node1", "eth0"),  # outer, on the wire
    "node2:eth0": ("node2", "eth0"),  # what the receiver checks
    "pod:eth0": ("pod", "eth0"),
}


# -- reading captures -----------------------------------------------------------------------------

_OUTER = re.compile(r"^\d\d:\d\d:\d\d\.\d+ IP \(.*?\bid (?P<id>\d+),.*?proto UDP \(17\), length (?P<len>\d+)\)")
_ADDRS = re.compile(r"^\s+(?P<src>[0-9.]+)\.(?P<sport>\d+) > (?P<dst>[0-9.]+)\.(?P<dport>\d+): (?P<csum>\[[^]]*\])?")
_INNER_TCP = re.compile(r"^\s+[0-9.]+\.\d+ > [0-9.]+\.\d+: Flags ")


def outer_vxlan(path: Path, src: str = NODE1, force_vxlan: bool = False) -> list[dict]:
    """Outer VXLAN packets from `src` as `tcpdump -vv` prints them: IP id, source port, checksum
    text, and what they carry (`tcp` for the service's connections, `arp`, `other`).

    tcpdump picks a UDP dissector by either port, and a masqueraded source port can be a known
    one; `force_vxlan` (`-T vxlan`) makes the inner packet readable, but then tcpdump prints no
    checksum. Every UDP packet at the points read with it is VXLAN."""
    if not path.exists():
        return []
    argv = ["tcpdump", "-n", "-vv", *(["-T", "vxlan"] if force_vxlan else []), "-r", str(path)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    out: list[dict] = []
    header, current = None, None
    for line in r.stdout.splitlines():
        if m := _OUTER.match(line):
            header, current = m, None
        elif header is not None and (a := _ADDRS.match(line)):
            if a["src"] == src and int(a["dport"]) == FLANNEL_PORT:
                current = {"id": int(header["id"]), "length": int(header["len"]), "sport": int(a["sport"]),
                           "csum": (a["csum"] or "").strip("[]"), "inner": "other"}  # fmt: skip
                out.append(current)
            header = None
        elif current is not None and current["inner"] == "other":
            current["inner"] = "arp" if line.startswith("ARP,") else "tcp" if _INNER_TCP.match(line) else "other"
    return out


def wire_check(text: str) -> int | None:
    """The checksum field tcpdump -vv printed: `bad udp cksum 0xffff -> 0x76dc!` gives 0xffff, `no cksum` 0,
    `udp sum ok` None (the value is not printed)."""
    if m := re.search(r"bad udp cksum (0x[0-9a-f]+)", text):
        return int(m[1], 16)
    return 0 if "no cksum" in text else None


def badsum_outer(path: Path, src: str = NODE1) -> Counter:
    """badsum's verdicts on the outer UDP checksums (depth 0) of packets from `src`."""
    c: Counter = Counter()
    if not path.exists():
        return c
    judge = DetailedJudge()
    with open_capture(path) as reader:
        for b in reader:
            for i in range(len(b)):
                frame_no, ts = b.first_frame + i, int(b.ts_ns[i])
                res = judge.judge(frame_no, ts, b.packet(i), int(b.origlen[i]), int(b.linktype[i]))
                for v in res.verdicts:
                    if v.layer.label == "udp" and v.depth == 0 and v.flow is not None and v.flow.src == src:
                        c[v.status.label] += 1
    return c


def conntrack_outer(lab: Lab) -> list[dict]:
    """node1's conntrack entries for the outer UDP flows: original source port vs. the port replies go to."""
    text = lab.exec("node1", ["cat", "/proc/net/nf_conntrack"], check=False).stdout
    out = []
    for line in text.splitlines():
        if " udp " not in f" {line} " or f"dport={FLANNEL_PORT}" not in line:
            continue
        f = re.findall(r"(src|dst|sport|dport)=(\S+)", line)
        if len(f) >= 8 and f[0][1] == NODE1:
            out.append({"sport": int(f[2][1]), "reply_dport": int(f[7][1]), "mark": _field(line, "mark")})
    return out


def _field(line: str, key: str) -> str | None:
    m = re.search(rf"\b{key}=(\S+)", line)
    return m.group(1) if m else None


def kernel_has_fix(release: str) -> bool:
    """Mainline 5.7 carries ea64d8d6c675 (stable backports exist below it; not judged here)."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return m is not None and (int(m[1]), int(m[2])) >= (5, 7)


# -- one phase ------------------------------------------------------------------------------------


def phase(lab: Lab, result: ScenarioResult, label: str, port0: int, earlier: frozenset[int] = frozenset(),
          emu: kb004.Emulation | None = None) -> dict:  # fmt: skip
    """`earlier`: outer source ports SNATed in an earlier phase; their conntrack entries live on
    (30 s), so a new flow hashing to one of them is still rewritten, and is told apart."""
    timeout = FULL_TIMEOUT if lab.full else CONNECT_TIMEOUT
    before = lab.counters(["node1", "node2"])
    stats0 = kb004.read_stats(emu) if emu is not None else None
    # follow sees the inner packet at flannel.1 and, inside VXLAN (the port table's 8472), at both uplinks.
    with lab.capture(POINTS, tag=label) as caps, lab.follow(f"tcp and host {POD}", PORTS) as fol:
        conns = [lab.tcp_transfer("node1", "pod", POD, port=port0 + i, nbytes=1000, timeout=timeout,
                                  connect_addr=VIP) for i in range(CONNECTIONS)]  # fmt: skip
    after = lab.counters(["node1", "node2"])
    result.follow[label] = fol.data if fol.data is not None else {"not_run": fol.why_not}
    stats1 = kb004.read_stats(emu) if emu is not None else None
    d = {ns: {k: after[ns][k] - before[ns][k] for k in after[ns]} for ns in ("node1", "node2")}
    for point, path in caps.items():
        result.captures[f"{label} {point}"] = str(path)
    connect = [c["client"].get("connect_s") for c in conns]
    failed = sum(1 for c in conns if not c["ok"])
    slow = [s for s in connect if s is None or s >= SLOW_S]

    pre = {p["id"]: p for p in outer_vxlan(caps["node1:nflog"], force_vxlan=True)}
    wire = outer_vxlan(caps["node1:eth0"], force_vxlan=True)
    # Pair the outer packet before nat with the same packet on the wire (NAT keeps the IP id).
    pairs = [(pre[p["id"]]["sport"], p["sport"], pre[p["id"]]["inner"]) for p in wire if p["id"] in pre]
    svc = [(a, b) for a, b, inner in pairs if inner == "tcp"]
    stale = [(a, b) for a, b in svc if a != b and a in earlier]
    rewritten = [(a, b) for a, b in svc if a != b and a not in earlier]
    flows = sorted(set(svc))
    flows_rewritten = sorted({(a, b) for a, b in rewritten})
    others = [(a, b) for a, b, inner in pairs if inner != "tcp"]
    ct = [e for e in conntrack_outer(lab) if e["sport"] in {a for a, _ in svc}]
    ct_snat = [e for e in ct if e["sport"] != e["reply_dport"]]
    received = outer_vxlan(caps["node2:eth0"])
    csums: dict[str, int] = {}
    for p in received:
        key = "bad" if p["csum"].startswith("bad") else p["csum"] or "?"
        csums[key] = csums.get(key, 0) + 1
    udp = dict(badsum_outer(caps["node2:eth0"]))
    # The outer checksum node1 sent, per packet, against what the pre-5.7 kernel wrote for its SNAT.
    sent = {p["id"]: p["csum"] for p in outer_vxlan(caps["node1:eth0"])}
    written = [{"id": p["id"], "sport_before": pre[p["id"]]["sport"], "sport_wire": p["sport"],
                "csum_wire": sent.get(p["id"], ""), "inner": pre[p["id"]]["inner"],
                "old_kernel": f"0x{kb004.old_kernel_check(NODE1, NODE1, pre[p['id']]['sport'], p['sport']):04x}"}
               for p in wire if p["id"] in pre and pre[p["id"]]["sport"] != p["sport"]]  # fmt: skip
    as_old = [w for w in written if wire_check(w["csum_wire"]) == int(w["old_kernel"], 16)]
    bad = csums.get("bad", 0) + udp.get("bad", 0) + udp.get("nat-stale", 0) + d["node2"]["UdpInCsumErrors"]

    result.traffic[label] = {"connections": conns, "outer_sport_pairs": pairs, "conntrack": ct,
                             "outer_csum_tcpdump": csums, "outer_csum_badsum": udp, "nstat": d,
                             "outer_csum_sent": written}  # fmt: skip
    if emu is not None and stats0 is not None and stats1 is not None:
        emu.stats[label] = {k: stats1[k] - stats0[k] for k in stats1}
        st = emu.stats[label]
        result.add("emulation", f"{label}: the {kb004.KB} program at {emu.device} rewrote {st['rewritten']} outer "
                   f"checksums; left alone {st['unmarked']} unmarked, {st['csum_set']} with a checksum, "
                   f"{st['unchanged']} not SNATed, {st['not_partial']} not CHECKSUM_PARTIAL, {st['no_ct']} without "
                   "a conntrack entry", st)  # fmt: skip
    result.add("application", f"{label}: {CONNECTIONS - failed}/{CONNECTIONS} connections to the VIP {VIP} set up; "
               f"connect_s {', '.join(str(s) for s in connect)}", connect)  # fmt: skip
    shown = ", ".join(f"{a} -> {b}" for a, b in flows_rewritten)
    result.add("tcpdump", f"{label}: outer VXLAN source port before nat (NFLOG) vs. on node1:eth0: "
               f"{len(rewritten)}/{len(svc)} packets of the service connections rewritten, "
               f"{len(flows_rewritten)}/{len(flows)} outer flows" + (f" ({shown})" if shown else "")
               + (f"; {sum(a != b for a, b in others)}/{len(others)} other (unmarked) packets rewritten"
                  if others else "")
               + (f"; {len(stale)} more by conntrack entries left from before" if stale else ""), pairs)  # fmt: skip
    result.add("conntrack", f"{label}: {len(ct_snat)}/{len(ct)} outer UDP :{FLANNEL_PORT} flows SNATed "
               "(reply port differs from the original source port)", ct)  # fmt: skip
    result.add("tcpdump", f"{label}: outer UDP checksums arriving at node2:eth0: "
               + (", ".join(f"{n} {k}" for k, n in sorted(csums.items())) or "none"), csums)  # fmt: skip
    result.add("badsum pcap", f"{label}: badsum on node2:eth0, outer UDP from node1: "
               + (", ".join(f"{n} {k}" for k, n in sorted(udp.items())) or "none"), udp)  # fmt: skip
    result.add("nstat", f"{label}: node2 UdpInCsumErrors +{d['node2']['UdpInCsumErrors']}", d["node2"])
    result.add("badsum follow", f"{label}: {fol.summary()}; UDP_CSUM drops at node2:eth0: "
               f"{fol.drops('UDP_CSUM', 'node2:eth0')}", fol.first_bad_hops())  # fmt: skip
    if written:
        result.add("tcpdump", f"{label}: {len(as_old)}/{len(written)} SNATed outer packets left node1:eth0 with the "
                   "checksum the pre-5.7 kernel wrote (udp_manip_pkt on a CHECKSUM_PARTIAL skb: "
                   f"{written[0]['old_kernel']} for a port-only change)", written)  # fmt: skip
    result.table.append({"phase": label, "connections": f"{CONNECTIONS - failed}/{CONNECTIONS}",
                         "max_connect_s": max((s for s in connect if s is not None), default=None),
                         "outer_sport_rewritten": f"{len(rewritten)}/{len(svc)}",
                         "outer_csum": ",".join(f"{k}:{n}" for k, n in sorted(csums.items())) or "-",
                         "UdpInCsumErrors": d["node2"]["UdpInCsumErrors"]})  # fmt: skip
    return {"double_snat": bool(rewritten) or bool(ct_snat), "pairs": len(svc), "rewritten": rewritten,
            "flows": flows, "flows_rewritten": flows_rewritten, "snat_sports": frozenset(a for a, _ in rewritten),
            "bad_outer": bad, "slow": len(slow), "failed": failed, "connect": connect,
            "zero": csums.get("no cksum", 0), "as_old_kernel": len(as_old), "snat_packets": len(written),
            "udp_csum_errors": d["node2"]["UdpInCsumErrors"],
            "connect_timeout": timeout, "rewritten_by_emulation": (emu.stats.get(label, {}).get("rewritten") if emu is not None else None)}  # fmt: skip


def describe_config(lab: Lab, result: ScenarioResult) -> bool:
    """Record the vulnerable configuration from independent views; True when all of it holds."""
    info = json.loads(lab.exec("node1", ["ip", "-j", "-d", "link", "show", "flannel.1"]).stdout)[0]
    data = info.get("linkinfo", {}).get("info_data", {})
    tx = lab.features("node1", "flannel.1").get("tx-checksum-ip-generic", False)
    rules = lab.exec("node1", ["iptables", "-t", "nat", "-S", "KUBE-POSTROUTING"]).stdout
    masq = any("MASQUERADE" in r and "--random-fully" in r for r in rules.splitlines())
    unmark = "! --mark 0x4000/0x4000" in rules and "RETURN" in rules
    result.add("ip", f"node1 flannel.1: vxlan dstport {data.get('port')}, outer UDP checksum "
               f"{'on' if data.get('udp_csum') else 'off (noudpcsum)'}", data)  # fmt: skip
    result.add("ethtool", f"node1 flannel.1 tx-checksum-ip-generic is {'on' if tx else 'off'}", tx)
    result.add("iptables", "KUBE-POSTROUTING: MASQUERADE --random-fully "
               + ("with the unmark rules (kubernetes#92035)" if unmark else "without the unmark rules"),
               rules.splitlines())  # fmt: skip
    return data.get("port") == FLANNEL_PORT and not data.get("udp_csum") and tx and masq and not unmark


def apply_fix(lab: Lab) -> None:
    lab.exec("node1", ["iptables", "-t", "nat", "-F", "KUBE-POSTROUTING"])
    for rule in UNMARK_RULES:
        lab.exec("node1", ["iptables", "-t", "nat", *rule])


def emulate(lab: Lab, result: ScenarioResult) -> kb004.Emulation:
    """Put the pre-5.7 NAT checksum update back at node1's uplink (tc egress), labelled everywhere."""
    if why := kb004.why_not():
        raise LabError(f"{kb004.KB} cannot be emulated here: {why}")
    emu = kb004.attach(lab, EMU_NS, EMU_DEV)
    result.emulation = [emu.as_dict()]
    result.traffic["emulation"] = emu.as_dict()
    result.add("emulation", emu.label(), emu.as_dict())
    result.add("tc", f"`tc filter show dev {EMU_DEV} egress` in {EMU_NS}: program {emu.program} "
               f"id {emu.program_id}, direct-action", kb004.filters(lab, EMU_NS, EMU_DEV))  # fmt: skip
    return emu


def syn_backoff(lab: Lab, result: ScenarioResult) -> None:
    """The client's SYN retries back off 1, 2, 4 s (no linear start) where the kernel has the sysctl."""
    key = "/proc/sys/" + SYN_LINEAR.replace(".", "/")
    if lab.exec("node1", ["test", "-e", key], check=False).returncode != 0:
        result.add("sysctl", f"node1: {SYN_LINEAR} does not exist here (SYN retries back off exponentially)")
        return
    lab.exec("node1", ["sysctl", "-qw", f"{SYN_LINEAR}=0"])
    value = lab.exec("node1", ["sysctl", "-n", SYN_LINEAR]).stdout.strip()
    result.add("sysctl", f"node1: {SYN_LINEAR} = {value} (SYN retries at 1, 3, 7 s ...)", value)


def body(lab: Lab, result: ScenarioResult, fix: bool) -> None:
    release = platform.release()
    fixed_kernel = kernel_has_fix(release)
    emu = emulate(lab, result) if fixed_kernel else None
    try:
        run(["iptables-restore"], ns=lab.ns("node1"), input=KUBE_RULES)
        vulnerable = describe_config(lab, result)
        syn_backoff(lab, result)
        result.add("uname", f"kernel {release}: " + ("5.7 or later, carries ea64d8d6c675 (never update a zero UDP "
                   "checksum): the old behaviour is emulated" if fixed_kernel else "older than 5.7: vulnerable unless "
                   "it has the stable backport (5.6.13, 5.4.41, 4.19.123, 4.14.181); nothing emulated"), release)  # fmt: skip
        first = phase(lab, result, "before fix" if fix else "run", PORT0, emu=emu)
        last = first
        if fix:
            apply_fix(lab)
            result.fix_applied = True
            describe_config(lab, result)
            last = phase(lab, result, "after fix", PORT0 + 5, earlier=first["snat_sports"], emu=emu)
    finally:
        if emu is not None:
            result.emulation = [emu.as_dict()]
            result.traffic["emulation"] = emu.as_dict()
            # Deleting the clsact qdisc removes the filter and, with its last reference, the program.
            kb004.detach(lab, EMU_NS, EMU_DEV)
    result.symptom_observed = symptom(last)
    result.reproduced = symptom(first)
    result.verdict = verdict(first, last if fix else None, vulnerable, fixed_kernel, release, emu)


@contextmanager
def configured(out: Path, *, fix: bool = False, prefix: str | None = None) -> Iterator[tuple[Lab, kb004.Emulation | None]]:
    """The lab's configuration, live and without traffic, for tools that inspect a host (`badsum
    doctor`): the topology, kube-proxy's rules (and the unmark rules with `fix`) and, on a kernel
    with the fix, the emulation attached at node1:eth0. Everything is torn down on exit (the
    filter first, then the lab: namespaces, journal)."""
    preflight(False, SCENARIO.tools)
    with Lab(topology(), scenario=SCENARIO.name, out=out, prefix=prefix) as lab:
        emu = None
        if kernel_has_fix(platform.release()):
            if why := kb004.why_not():
                raise LabError(f"{kb004.KB} cannot be emulated here: {why}")
            emu = kb004.attach(lab, EMU_NS, EMU_DEV)
        try:
            run(["iptables-restore"], ns=lab.ns("node1"), input=KUBE_RULES)
            if fix:
                apply_fix(lab)
            yield lab, emu
        finally:
            if emu is not None:
                kb004.detach(lab, EMU_NS, EMU_DEV)


def symptom(p: dict) -> bool:
    """The incident: a bogus outer checksum (dropped by node2) or connections waiting for SYN retries."""
    return p["bad_outer"] > 0 or p["slow"] > 0 or p["failed"] > 0


def verdict(first: dict, after: dict | None, vulnerable: bool, fixed_kernel: bool, release: str,
            emu: kb004.Emulation | None = None) -> str:  # fmt: skip
    ms = max((s for s in first["connect"] if s is not None), default=0) * 1000
    fr = first["flows_rewritten"]
    snat = (f"the outer VXLAN packet was masqueraded a second time ({len(fr)}/{len(first['flows'])} outer flows, "
            f"{len(first['rewritten'])}/{first['pairs']} packets; source port e.g. {fr[0][0]} -> {fr[0][1]})"
            if fr else "the outer packet was not masqueraded a second time")  # fmt: skip
    if symptom(first) and emu is not None:
        text = (f"reproduced (emulated): {snat}; the emulated pre-5.7 NAT wrote a non-zero outer checksum into "
                f"{first['rewritten_by_emulation']} of them ({first['as_old_kernel']}/{first['snat_packets']} "
                f"SNATed packets on the wire carry the old kernel's value), node2 counted "
                f"{first['udp_csum_errors']} UdpInCsumErrors; {first['slow']} of {len(first['connect'])} connections "
                f"waited for SYN retries (connect_s {', '.join(str(s) for s in first['connect'])}), "
                f"{first['failed']} did not complete within {first['connect_timeout']} s")  # fmt: skip
        if (other := len({a for a, _ in first["flows"]} - {a for a, _ in fr})) and first["slow"]:
            text += (f"; the retried SYNs left on {other} other outer flows (TCP re-hashes a flow on SYN timeout, "
                     "so VXLAN picks a new source port), unmarked and not masqueraded, and got through")  # fmt: skip
    elif symptom(first):
        text = (f"reproduced: {snat}; {first['bad_outer']} bad outer UDP checksums, {first['slow']} slow and "
                f"{first['failed']} failed connections")  # fmt: skip
    elif emu is not None:
        config = f"the configuration is {'' if vulnerable else 'NOT '}the vulnerable one"
        text = (f"not reproduced even with the emulation: {config}: {snat}; {first['zero']} outer packets arrived "
                f"with checksum 0 and {len(first['connect'])} connections set up in at most {ms:.1f} ms")  # fmt: skip
    else:
        config = f"the configuration is {'' if vulnerable else 'NOT '}the vulnerable one"
        text = (f"not reproduced on this kernel ({release}{', which has the 5.7 fix' if fixed_kernel else ''}); "
                f"{config}: {snat}, its UDP checksum stayed 0 on the wire ({first['zero']} packets), and "
                f"{len(first['connect'])} connections set up in at most {ms:.1f} ms")  # fmt: skip
    if after is not None:
        text += ("; after the unmark rules the outer packet is no longer masqueraded "
                 f"(0/{after['pairs']} source ports rewritten)" if not after["rewritten"] else
                 f"; after the unmark rules the outer packet is STILL masqueraded "
                 f"({len(after['rewritten'])}/{after['pairs']})")  # fmt: skip
        if emu is not None:
            ms_after = max((s for s in after["connect"] if s is not None), default=0) * 1000
            text += (f", the emulation rewrote {after['rewritten_by_emulation']} outer checksums, node2 counted "
                     f"{after['udp_csum_errors']} UdpInCsumErrors and {len(after['connect']) - after['failed']}/"
                     f"{len(after['connect'])} connections set up in at most {ms_after:.1f} ms")  # fmt: skip
    return f"[{emu.label()}] {text}" if emu is not None else text


SCENARIO = Scenario(
    name="vxlan-double-snat",
    title="VXLAN + kube-proxy MASQUERADE --random-fully: the outer packet is SNATed twice (63-second delay; "
    "KB-004 emulated on kernels with the fix)",
    kb=("KB-004",),
    topology=topology,
    body=body,
    tools=("iptables", "iptables-restore", "tc"),
    watch=("node1", "node2", "pod"),
    full=f"every connection is waited out (up to {FULL_TIMEOUT:g} s: the whole SYN ladder), not cut at {CONNECT_TIMEOUT} s",
)
