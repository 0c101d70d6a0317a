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
import json
import shutil
from dataclasses import asdict, dataclass, field

from badsum.kernel import build, libbpf
from badsum.lab.lab import Lab
from badsum.lab.runner import CommandError, run

KB = "KB-001"
FIXED_BY = "ce8c839b74e3"
FIXED_IN = "Linux 4.4"
HOOK = "tc egress"
OBJECT = build.BPF_DIR / "kb001_veth.bpf.o"
PROGRAM = "kb001_veth_xmit"
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
    """Phase -> what the program did to the skbs it saw in it (None when bpftool is missing)."""

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
    lab.exec(ns, ["tc", "qdisc", "add", "dev", dev, "clsact"])
    try:
        lab.exec(ns, ["tc", "filter", "add", "dev", dev, "egress", "bpf", "direct-action", "obj", str(OBJECT), "sec", "tc"],
                 timeout=60)  # fmt: skip
    except CommandError:
        lab.exec(ns, ["tc", "qdisc", "del", "dev", dev, "clsact"], check=False)
        raise
    emu = Emulation(device=f"{ns}:{dev}", receiving_device=peer)
    emu.program_id = next((f["options"]["prog"]["id"] for f in filters(lab, ns, dev)
                           if f.get("options", {}).get("prog", {}).get("name") == PROGRAM), None)  # fmt: skip
    return emu


def filters(lab: Lab, ns: str, dev: str) -> list[dict]:
    """`tc -j filter show dev DEV egress` in the lab namespace."""
    out = lab.exec(ns, ["tc", "-j", "filter", "show", "dev", dev, "egress"], check=False).stdout
    try:
        return json.loads(out or "[]")
    except ValueError:
        return []


def detach(lab: Lab, ns: str, dev: str) -> None:
    # Deleting the clsact qdisc removes its filters, and with the last reference the program.
    lab.exec(ns, ["tc", "qdisc", "del", "dev", dev, "clsact"], check=False)


def read_stats(emu: Emulation) -> dict[str, int] | None:
    """The program's counters, summed over CPUs, through bpftool (None when it is missing)."""
    if emu.program_id is None or shutil.which("bpftool") is None:
        return None
    try:
        prog = json.loads(run(["bpftool", "-j", "prog", "show", "id", str(emu.program_id)]).stdout)
        totals = dict.fromkeys(STATS, 0)
        for map_id in prog.get("map_ids", []):
            info = json.loads(run(["bpftool", "-j", "map", "show", "id", str(map_id)]).stdout)
            if info.get("name") != "kb001_stats":
                continue
            for entry in json.loads(run(["bpftool", "-j", "map", "dump", "id", str(map_id)]).stdout):
                key = entry["key"] if isinstance(entry["key"], int) else int.from_bytes(bytes(int(b, 16) for b in entry["key"]), "little")
                if 0 <= key < len(STATS):
                    totals[STATS[key]] = sum(_u64(v["value"]) for v in entry["values"])
        return totals
    except (CommandError, ValueError, KeyError, TypeError):
        return None


def _u64(v: object) -> int:
    if isinstance(v, int):
        return v
    return int.from_bytes(bytes(int(b, 16) for b in v), "little")  # type: ignore[union-attr]
