"""Load badsum's eBPF programs, attach them, and collect what they report (the kernel edge).

`FollowSession` runs kernel/bpf/follow.bpf.o on the transmit, receive and drop tracepoints and
yields `KernelEvent`s; `DropCounter` runs drops.bpf.o, which only counts drops by namespace,
device, reason and location (for `watch` and `exporter`). Both own their programs through file
descriptors: closing, exiting or being killed removes them; nothing is pinned and no tracefs
instance is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources

from badsum.follow.model import KernelEvent, Loss
from badsum.kernel import libbpf
from badsum.kernel.filter import Filter, pack_config, tunnel_ports
from badsum.kernel.records import STATS, RecordError, decode_drop, decode_event, DropCount, DROP_KEY, DROP_VALUE

DEFAULT_BTF = "/sys/kernel/btf/vmlinux"
#: Raw tracepoints need CAP_BPF with CAP_PERFMON (5.8+), or CAP_SYS_ADMIN.
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
FOLLOW_PROGRAMS = ("on_xmit", "on_receive", "on_rx")
#: kfree_skb gained its receiving-socket argument in 6.12; the older program reads three.
DROP_PROGRAMS = ("on_drop_sk", "on_drop")


def _attach_first(obj: libbpf.BpfObject, programs: tuple[str, ...]) -> str:
    """Attach the first program the kernel accepts; the name of the one attached."""
    last: libbpf.BpfError | None = None
    for prog in programs:
        try:
            obj.attach(prog)
            return prog
        except libbpf.BpfError as e:
            last = e
    assert last is not None
    raise last


class Unavailable(Exception):
    """eBPF cannot run here; the message says why in one line."""


def _object(name: str) -> bytes:
    return resources.files("badsum.kernel").joinpath("bpf", name).read_bytes()


def effective_caps(status_path: str = "/proc/self/status") -> int:
    try:
        with open(status_path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def check_prerequisites(btf_path: str | None = None) -> None:
    """Raise Unavailable with the first reason eBPF tracing cannot work here."""
    caps = effective_caps()
    if not (caps >> CAP_SYS_ADMIN & 1 or (caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1)):
        raise Unavailable("needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) to load eBPF programs")
    path = btf_path or DEFAULT_BTF
    if not os.path.isfile(path):
        raise Unavailable(f"no kernel BTF at {path} (a kernel built with CONFIG_DEBUG_INFO_BTF is needed)")
    try:
        libbpf.library()
    except libbpf.BpfError as e:
        raise Unavailable(str(e)) from None


def _unavailable(e: libbpf.BpfError) -> Unavailable:
    last = [line for line in e.log.splitlines() if line.strip()]
    hint = f" ({last[-1].strip()[:200]})" if last else ""
    return Unavailable(f"{e}{hint}")


@dataclass(slots=True)
class FollowConfig:
    filter: Filter = field(default_factory=Filter)
    snaplen: int = 1600
    """Bytes kept per event (the whole packet when it is linear and no longer)."""
    rate: int = 20_000
    """Events per second at most, over all CPUs (0: no bound)."""
    ports: dict[int, int] = field(default_factory=dict)
    """UDP port -> tunnel kind (wire.ports.UDPTunnel values) to look inside."""
    btf_path: str | None = None


class FollowSession:
    """The follow programs, loaded and attached; `poll()` returns what arrived."""

    def __init__(self, config: FollowConfig) -> None:
        check_prerequisites(config.btf_path)
        self.config = config
        self.reasons: dict[int, str] = {}
        self._pending: list[bytes] = []
        self.malformed = 0
        try:
            self.reasons = libbpf.enum_values("skb_drop_reason", config.btf_path)
        except libbpf.BpfError:
            self.reasons = {}
        try:
            self.obj = libbpf.BpfObject(_object("follow.bpf.o"), "badsum_follow", config.btf_path)
            self.obj.load()
        except libbpf.BpfError as e:
            raise _unavailable(e) from None
        try:
            ncpu = libbpf.possible_cpus()
            self.ncpu = ncpu
            cfg = pack_config(config.filter, min(config.snaplen, 2047), max(config.rate, 0), tunnel_ports(config.ports))
            libbpf.map_update(self.obj.map_fd("config"), b"\0\0\0\0", cfg)
            self.ring = libbpf.RingBuffer(self.obj.map_fd("events"), self._pending.append)
            for prog in FOLLOW_PROGRAMS:
                self.obj.attach(prog)
            self.drop_program = _attach_first(self.obj, DROP_PROGRAMS)
        except libbpf.BpfError as e:
            self.close()
            raise _unavailable(e) from None

    def poll_raw(self, timeout_ms: int = 100) -> list[bytes]:
        """The records that arrived, undecoded: draining the ring must be cheap (a record costs
        about 1 us here, decoding it ten), or the kernel drops what does not fit."""
        self.ring.poll(timeout_ms)
        raw = list(self._pending)
        self._pending.clear()
        return raw

    def decode(self, raw: list[bytes]) -> list[KernelEvent]:
        out = []
        for r in raw:
            try:
                out.append(decode_event(r, self.reasons))
            except RecordError:
                self.malformed += 1
        return out

    def poll(self, timeout_ms: int = 100) -> list[KernelEvent]:
        return self.decode(self.poll_raw(timeout_ms))

    def stop(self) -> list[bytes]:
        """Detach the programs, then take what is still in the ring: after this the counters are
        final (no event is counted after they are read)."""
        self.obj.detach()
        return self.poll_raw(0)

    def stats(self) -> dict[str, int]:
        fd = self.obj.map_fd("stats")
        out = {}
        for i, name in enumerate(STATS):
            raw = libbpf.map_lookup(fd, i.to_bytes(4, "little"), 8 * self.ncpu) or b""
            out[name] = sum(int.from_bytes(raw[k : k + 8], "little") for k in range(0, len(raw), 8))
        return out

    def loss(self) -> Loss:
        s = self.stats()
        return Loss(ring_full=s["ring_full"], rate_limited=s["rate_limited"], truncated=s["cut"])

    def close(self) -> None:
        ring = getattr(self, "ring", None)
        if ring is not None:
            ring.close()
        obj = getattr(self, "obj", None)
        if obj is not None:
            obj.close()

    def __enter__(self) -> FollowSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DropCounter:
    """Kernel drops counted in the kernel by (namespace, device, reason, location): `read()`
    returns the totals so far (callers take differences)."""

    def __init__(self, btf_path: str | None = None) -> None:
        check_prerequisites(btf_path)
        try:
            self.reasons = libbpf.enum_values("skb_drop_reason", btf_path)
        except libbpf.BpfError:
            self.reasons = {}
        try:
            self.obj = libbpf.BpfObject(_object("drops.bpf.o"), "badsum_drops", btf_path)
            self.obj.load()
            self.program = _attach_first(self.obj, ("count_drop_sk", "count_drop"))
        except libbpf.BpfError as e:
            self.close()
            raise _unavailable(e) from None

    def read(self) -> list[DropCount]:
        rows = libbpf.map_items(self.obj.map_fd("drops"), DROP_KEY.size, DROP_VALUE.size)
        return [decode_drop(k, v, self.reasons) for k, v in rows]

    def close(self) -> None:
        obj = getattr(self, "obj", None)
        if obj is not None:
            obj.close()

    def __enter__(self) -> DropCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
