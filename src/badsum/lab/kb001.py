"""KB-001 emulated where the kernel acted, for labs only: a tc program on a lab's veth does what
veth_xmit() did before ce8c839b74e3 (Linux 4.4), marking CHECKSUM_NONE packets
CHECKSUM_UNNECESSARY when the receiving device has rx-checksumming (NETIF_F_RXCSUM) on.

The program (kernel/bpf/kb001_veth.bpf.c) is attached as a cls_bpf direct-action filter on the
clsact egress hook of the host side of a container's veth pair: the hook runs just before the
veth's transmit, which is where the old kernel marked the skb, and before every tracepoint
`badsum follow` reads, so follow sees the mark (an ingress filter on the container's eth0 would
act after netif_receive_skb and stay invisible to it). iproute2's tc loads the CO-RE object itself.
It only ever touches devices of a lab namespace (the caller passes the lab's own names); tearing
the lab down deletes the namespace, the device, the filter and the program with it.
"""

from __future__ import annotations

import ctypes
import shutil
from dataclasses import asdict, dataclass, field

from badsum.kernel import build, libbpf
from badsum.lab import tcbpf
from badsum.lab.lab import Lab

KB = "KB-001"
FIXED_BY = "ce8c839b74e3"
FIXED_IN = "Linux 4.4"
HOOK = "tc egress"
OBJECT = build.BPF_DIR / "kb001_veth.bpf.o"
PROGRAM = "kb001_veth_xmit"
MAP = "kb001_stats"
#: The value compiled into the program (the kernel keeps it in an anonymous enum CO-RE cannot relocate).
RXCSUM_BIT = 40
STATS = ("marked", "rx_off", "not_none", "no_peer")
"""The program's per-CPU counters, in its enum kb001_stat order."""
BTF_KIND_ENUM = 6


@dataclass(slots=True)
class Emulation:
    """One attached emulation; `as_dict()` goes into the result as `traffic["emulation"]` and in
    the shared `ScenarioResult.emulation` list."""

    device: str
    """Where the program runs, in the lab's names (`h2:veth-c2`)."""
    receiving_device: str
    """The peer whose rx-checksumming decides, as `rcv->features` did (`c2:eth0`)."""
    kb: str = KB
    emulated: bool = True
    hook: str = HOOK
    fixed_by: str = FIXED_BY
    fixed_in: str = FIXED_IN
    what: str = ("veth_xmit() marked CHECKSUM_NONE packets CHECKSUM_UNNECESSARY when the receiving veth had "
                 "rx-checksumming on; emulated with bpf_csum_level(BPF_CSUM_LEVEL_INC) in a cls_bpf program")  # fmt: skip
    object: str = str(OBJECT)
    program: str = PROGRAM
    program_id: int | None = None
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    """Phase -> what the program did to the skbs it saw in it (its per-CPU counters)."""

    def label(self) -> str:
        return (f"{self.kb} EMULATED on this kernel ({self.hook} on {self.device}, deciding by "
                f"{self.receiving_device} rx-checksumming); the kernel fixed it in {self.fixed_by} ({self.fixed_in})")  # fmt: skip

    def as_dict(self) -> dict:
        return asdict(self)


def rxcsum_bit() -> int | None:
    """NETIF_F_RXCSUM_BIT in the running kernel's BTF (None: no BTF, or not found)."""
    try:
        lib = libbpf.library()
    except libbpf.BpfError:
        return None
    lib.btf__type_cnt.restype, lib.btf__type_cnt.argtypes = ctypes.c_uint32, [ctypes.c_void_p]
    btf = lib.btf__load_vmlinux_btf()
    if not btf:
        return None
    try:
        for tid in range(1, lib.btf__type_cnt(btf)):
            t = libbpf._BtfType.from_address(lib.btf__type_by_id(btf, tid))
            if (t.info >> 24) & 0x1F != BTF_KIND_ENUM or t.name_off:
                continue  # netdev_features' bits live in an anonymous enum
            base = ctypes.addressof(t) + ctypes.sizeof(libbpf._BtfType)
            for i in range(t.info & 0xFFFF):
                e = libbpf._BtfEnum.from_address(base + i * ctypes.sizeof(libbpf._BtfEnum))
                if lib.btf__name_by_offset(btf, e.name_off) == b"NETIF_F_RXCSUM_BIT":
                    return e.val
        return None
    finally:
        lib.btf__free(btf)


def why_not() -> str | None:
    """Why the emulation cannot run here (None: it can)."""
    if shutil.which("tc") is None:
        return "tc is not installed (Debian: apt-get install iproute2)"
    if not OBJECT.exists():
        return f"{OBJECT} is missing (python3 -m badsum.kernel.build)"
    bit = rxcsum_bit()
    if bit != RXCSUM_BIT:
        return (f"this kernel's NETIF_F_RXCSUM_BIT is {bit if bit is not None else 'unknown (no BTF)'}, "
                f"the program was built for {RXCSUM_BIT}")  # fmt: skip
    return None


def attach(lab: Lab, ns: str, dev: str, peer: str) -> Emulation:
    """Attach the program to `dev` in lab namespace `ns` (clsact egress, direct action); `peer` is
    the receiving device's lab name, for the record. Raises CommandError when tc refuses."""
    emu = Emulation(device=f"{ns}:{dev}", receiving_device=peer)
    emu.program_id = tcbpf.attach_egress(lab, ns, dev, OBJECT, PROGRAM)
    return emu


def filters(lab: Lab, ns: str, dev: str) -> list[dict]:
    return tcbpf.filters(lab, ns, dev)


def detach(lab: Lab, ns: str, dev: str) -> None:
    tcbpf.detach(lab, ns, dev)


def read_stats(emu: Emulation) -> dict[str, int] | None:
    """The program's counters, summed over CPUs (None when it is not loaded)."""
    return tcbpf.counters(emu.program_id, MAP, STATS)
