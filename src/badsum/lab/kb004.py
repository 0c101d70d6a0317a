"""KB-004 emulated where the kernel acted, for labs only: after kube-proxy's second SNAT (the outer
VXLAN packet masqueraded because it still carried the 0x4000 mark), NAT before ea64d8d6c675
(Linux 5.7) "updated" the outer UDP checksum although it was 0 (no checksum).

The program (kernel/bpf/kb004_nat.bpf.c) is a cls_bpf direct-action filter on the clsact egress
hook of the node's uplink: it runs after netfilter's POSTROUTING and before the device, sees the
masqueraded packet, reads the tuple before SNAT from conntrack (bpf_skb_ct_lookup on the packet's
reply tuple, tuplehash[IP_CT_DIR_ORIGINAL]) and writes what the old udp_manip_pkt() wrote.
`old_kernel_check()` is the same arithmetic in Python (tests compare the wire with it).
It only ever touches devices of a lab namespace; tearing the lab down removes the namespace, the
device, the filter and the program with it.
"""

from __future__ import annotations

import shutil
import socket
import struct
from dataclasses import asdict, dataclass, field

from badsum.kernel import build
from badsum.lab import tcbpf
from badsum.lab.lab import Lab

KB = "KB-004"
FIXED_BY = "ea64d8d6c675"
FIXED_IN = "Linux 5.7"
HOOK = "tc egress"
OBJECT = build.BPF_DIR / "kb004_nat.bpf.o"
PROGRAM = "kb004_nat_csum"
MAP = "kb004_stats"
STATS = ("rewritten", "not_flannel", "csum_set", "unmarked", "not_partial", "no_ct", "unchanged")
"""The program's per-CPU counters, in its enum kb004_stat order."""
CHECKSUM_NONE, CHECKSUM_PARTIAL = 0, 3
CSUM_MANGLED_0 = 0xFFFF


@dataclass(slots=True)
class Emulation:
    device: str
    """Where the program runs, in the lab's names (`node1:eth0`)."""
    kb: str = KB
    emulated: bool = True
    hook: str = HOOK
    fixed_by: str = FIXED_BY
    fixed_in: str = FIXED_IN
    what: str = ("NAT before 5.7 updated a zero outer UDP checksum after kube-proxy's second SNAT "
                 "(MASQUERADE --random-fully of the marked VXLAN packet, CHECKSUM_PARTIAL for the inner sum); "
                 "emulated by a cls_bpf program writing udp_manip_pkt()'s value, the tuple before SNAT read "
                 "from conntrack (bpf_skb_ct_lookup)")  # fmt: skip
    acts_on: str = "UDP to 8472, checksum 0, skb->mark & 0x4000, CHECKSUM_PARTIAL, source changed by SNAT"
    object: str = str(OBJECT)
    program: str = PROGRAM
    program_id: int | None = None
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def label(self) -> str:
        return (f"{self.kb} EMULATED on this kernel ({self.hook} on {self.device}); "
                f"the kernel fixed it in {self.fixed_by} ({self.fixed_in})")  # fmt: skip

    def as_dict(self) -> dict:
        return asdict(self)


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _add32(a: int, b: int) -> int:
    r = (a + b) & 0xFFFFFFFF
    return (r + (r < b)) & 0xFFFFFFFF


def old_kernel_check(old_addr: str, new_addr: str, old_port: int, new_port: int,
                     ip_summed: int = CHECKSUM_PARTIAL, check: int = 0) -> int:  # fmt: skip
    """The outer UDP checksum field (as tcpdump prints it, big-endian) after a pre-5.7 source NAT
    of a packet whose field held `check`: `nf_nat_ipv4_csum_update` + `inet_proto_csum_replace2`
    as in 5.4.40's net/netfilter/nf_nat_proto.c and net/core/utils.c.

    CHECKSUM_PARTIAL: the address step updates the field as a pseudo-header sum
    (`~csum_fold(csum_add(csum_sub(csum_unfold(sum), from), to))`), the port step does nothing.
    Otherwise (NONE): a zero field is left alone (`do_csum` false); a set one gets RFC 1624's
    `csum_replace4`/`csum_replace2`. Computed on the bytes as they sit in memory, as the kernel does."""
    oa, na = struct.unpack("=I", socket.inet_aton(old_addr))[0], struct.unpack("=I", socket.inet_aton(new_addr))[0]
    op, np_ = struct.unpack("=H", struct.pack("!H", old_port))[0], struct.unpack("=H", struct.pack("!H", new_port))[0]
    field_ = struct.unpack("=H", struct.pack("!H", check))[0]
    if ip_summed == CHECKSUM_PARTIAL:
        s = _add32(_add32(field_, ~oa & 0xFFFFFFFF), na)
        out = _fold(s)  # ~csum_fold(x) is the folded sum itself
    elif check == 0:
        return 0
    else:
        out = field_
        for old, new in ((oa, na), (op, np_)):  # csum_replace4 twice, each folded and stored
            s = _add32(_add32(~out & 0xFFFFFFFF, ~old & 0xFFFFFFFF), new)
            out = ~_fold(s) & 0xFFFF
    out = out or CSUM_MANGLED_0
    return struct.unpack("!H", struct.pack("=H", out))[0]


def why_not() -> str | None:
    """Why the emulation cannot run here (None: it can)."""
    if shutil.which("tc") is None:
        return "tc is not installed (Debian: apt-get install iproute2)"
    if not OBJECT.exists():
        return f"{OBJECT} is missing (python3 -m badsum.kernel.build)"
    return None


def attach(lab: Lab, ns: str, dev: str) -> Emulation:
    """Attach the program to `dev` in lab namespace `ns` (clsact egress, direct action).
    Raises CommandError when tc (or the verifier) refuses."""
    emu = Emulation(device=f"{ns}:{dev}")
    emu.program_id = tcbpf.attach_egress(lab, ns, dev, OBJECT, PROGRAM)
    return emu


def filters(lab: Lab, ns: str, dev: str) -> list[dict]:
    return tcbpf.filters(lab, ns, dev)


def detach(lab: Lab, ns: str, dev: str) -> None:
    tcbpf.detach(lab, ns, dev)


def read_stats(emu: Emulation) -> dict[str, int] | None:
    """The program's counters, summed over CPUs (None when it is not loaded)."""
    return tcbpf.counters(emu.program_id, MAP, STATS)
