"""A small ctypes binding to libbpf (`libbpf.so.1`): open a CO-RE object, load, attach, poll.

Why ctypes and not a compiled binding: no compiler is needed on the user's machine, and
`libbpf.so.1` is already there on Debian 12 and later (iproute2 depends on it). libbpf relocates
the object's field accesses against the running kernel's BTF, so one committed object serves
every kernel that has BTF. Only the stable 1.x API is used; structs passed by pointer carry their
size (`sz`), which is how libbpf stays compatible across 1.x releases.

Nothing is pinned: maps, programs and links are file descriptors owned by this process, so the
kernel removes them when it exits, SIGKILL included.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

LIBRARY_NAMES = ("libbpf.so.1", "libbpf.so")


class BpfError(Exception):
    """libbpf or the kernel refused: `stage` says what was being done, `log` what libbpf printed."""

    def __init__(self, stage: str, err: int, log: str = "") -> None:
        self.stage, self.errno, self.log = stage, err, log
        super().__init__(f"{stage}: {os.strerror(err) if err else 'failed'}")


class _OpenOpts(ctypes.Structure):
    # struct bpf_object_open_opts, libbpf 1.x (libbpf.h); `sz` tells libbpf how much of it we know.
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
    ]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

_lib: ctypes.CDLL | None = None
_libc: ctypes.CDLL | None = None
_log: list[str] = []
_print_ref: object = None


def library() -> ctypes.CDLL:
    """The loaded libbpf, declared; raises BpfError('libbpf', ENOENT) when it is not installed."""
    global _lib, _libc, _print_ref
    if _lib is not None:
        return _lib
    lib = None
    for name in LIBRARY_NAMES + tuple(n for n in (ctypes.util.find_library("bpf"),) if n):
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            break
        except OSError:
            continue
    if lib is None:
        raise BpfError("libbpf.so.1 not found (Debian: apt install libbpf1)", errno.ENOENT)
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    p, i, u, s, c = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t, ctypes.c_char_p
    for name, res, args in (
        ("libbpf_set_print", p, [p]),
        ("bpf_object__open_mem", p, [p, s, ctypes.POINTER(_OpenOpts)]),
        ("bpf_object__load", i, [p]),
        ("bpf_object__close", None, [p]),
        ("bpf_object__find_program_by_name", p, [p, c]),
        ("bpf_object__find_map_by_name", p, [p, c]),
        ("bpf_program__set_autoload", i, [p, ctypes.c_bool]),
        ("bpf_program__attach", p, [p]),
        ("bpf_link__destroy", i, [p]),
        ("bpf_map__fd", i, [p]),
        ("bpf_map__set_max_entries", i, [p, u]),
        ("bpf_map_update_elem", i, [i, p, p, ctypes.c_uint64]),
        ("bpf_map_lookup_elem", i, [i, p, p]),
        ("bpf_map_get_next_key", i, [i, p, p]),
        ("ring_buffer__new", p, [i, SAMPLE_FN, p, p]),
        ("ring_buffer__poll", i, [p, i]),
        ("ring_buffer__consume", i, [p]),
        ("ring_buffer__free", None, [p]),
        ("libbpf_num_possible_cpus", i, []),
        ("bpf_prog_get_next_id", i, [u, ctypes.POINTER(ctypes.c_uint32)]),
        ("bpf_prog_get_fd_by_id", i, [u]),
        ("bpf_map_get_fd_by_id", i, [u]),
        ("bpf_obj_get_info_by_fd", i, [i, p, ctypes.POINTER(ctypes.c_uint32)]),
        ("btf__load_vmlinux_btf", p, []),
        ("btf__parse", p, [c, p]),
        ("btf__free", None, [p]),
        ("btf__find_by_name_kind", ctypes.c_int32, [p, c, u]),
        ("btf__type_by_id", p, [p, u]),
        ("btf__name_by_offset", c, [p, u]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    _print_ref = _PRINT_FN(_on_print)
    lib.libbpf_set_print(ctypes.cast(_print_ref, ctypes.c_void_p))
    _lib = lib
    return lib


def _on_print(level: int, fmt: bytes, args: int) -> int:
    # libbpf prints through a printf-style callback with a va_list: let the C library format it.
    assert _libc is not None
    buf = ctypes.create_string_buffer(1 << 20)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    _log.append(buf.value.decode(errors="replace").rstrip())
    del _log[:-200]
    return 0


def take_log() -> str:
    """What libbpf printed since the last call (warnings and the verifier's refusal)."""
    text = "\n".join(line for line in _log if line)
    _log.clear()
    return text


def _errno_of(rc: int) -> int:
    return -rc if rc < 0 else ctypes.get_errno() or errno.EINVAL


@dataclass(slots=True)
class Link:
    ptr: int


class BpfObject:
    """One CO-RE object: opened from bytes, loaded (verified, relocated), its programs attached.

    `close()` destroys the links and the object; a dropped object is closed too. Use as a
    context manager.
    """

    def __init__(self, image: bytes, name: str, btf_path: str | None = None) -> None:
        lib = library()
        take_log()
        self._buf = ctypes.create_string_buffer(image, len(image))
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), object_name=name.encode())
        if btf_path is not None:
            opts.btf_custom_path = btf_path.encode()
        self._opts = opts
        ptr = lib.bpf_object__open_mem(self._buf, len(image), ctypes.byref(opts))
        if not ptr:
            raise BpfError(f"opening {name}", ctypes.get_errno(), take_log())
        self.ptr: int | None = ptr
        self.links: list[Link] = []
        self.name = name

    def program(self, name: str) -> int:
        assert self.ptr is not None
        p = library().bpf_object__find_program_by_name(self.ptr, name.encode())
        if not p:
            raise BpfError(f"program {name} not in {self.name}", errno.ENOENT)
        return p

    def set_autoload(self, name: str, on: bool) -> None:
        library().bpf_program__set_autoload(self.program(name), on)

    def map_fd(self, name: str) -> int:
        assert self.ptr is not None
        m = library().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not m:
            raise BpfError(f"map {name} not in {self.name}", errno.ENOENT)
        return library().bpf_map__fd(m)

    def set_max_entries(self, name: str, n: int) -> None:
        assert self.ptr is not None
        m = library().bpf_object__find_map_by_name(self.ptr, name.encode())
        rc = library().bpf_map__set_max_entries(m, n)
        if rc:
            raise BpfError(f"sizing map {name}", _errno_of(rc))

    def load(self) -> None:
        assert self.ptr is not None
        rc = library().bpf_object__load(self.ptr)
        if rc:
            raise BpfError(f"loading {self.name}", _errno_of(rc), take_log())

    def attach(self, program: str) -> None:
        link = library().bpf_program__attach(self.program(program))
        if not link:
            raise BpfError(f"attaching {program}", ctypes.get_errno(), take_log())
        self.links.append(Link(link))

    def detach(self) -> None:
        """Destroy the links (the programs stop running); maps stay readable until close()."""
        lib = _lib
        if lib is None or not hasattr(self, "links"):
            return  # never opened (the constructor raised)
        for link in self.links:
            lib.bpf_link__destroy(link.ptr)
        self.links.clear()

    def close(self) -> None:
        lib = _lib
        if lib is None or not hasattr(self, "links"):
            return
        self.detach()
        if self.ptr is not None:
            lib.bpf_object__close(self.ptr)
            self.ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def map_update(fd: int, key: bytes, value: bytes) -> None:
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
    rc = library().bpf_map_update_elem(fd, k, v, 0)
    if rc:
        raise BpfError("writing a map", _errno_of(rc))


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value_size)
    if library().bpf_map_lookup_elem(fd, k, v):
        return None
    return v.raw


def map_items(fd: int, key_size: int, value_size: int, limit: int = 1 << 20) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a hash map, at most `limit` (a map being written may change meanwhile)."""
    lib = library()
    out: list[tuple[bytes, bytes]] = []
    prev: ctypes.Array | None = None
    nxt = ctypes.create_string_buffer(key_size)
    while len(out) < limit:
        if lib.bpf_map_get_next_key(fd, prev, nxt):
            break
        val = ctypes.create_string_buffer(value_size)
        if lib.bpf_map_lookup_elem(fd, nxt, val) == 0:
            out.append((nxt.raw, val.raw))
        prev, nxt = nxt, ctypes.create_string_buffer(key_size)
    return out


def possible_cpus() -> int:
    n = library().libbpf_num_possible_cpus()
    return n if n > 0 else os.cpu_count() or 1


#: struct bpf_prog_info (uapi/linux/bpf.h): `type` at 0, `id` at 4, `name` (16 bytes) at 64.
_PROG_INFO_SIZE, _PROG_NAME_AT = 256, 64


def loaded_programs() -> list[tuple[int, int, str]]:
    """(id, type, name) of every eBPF program loaded in the kernel (what `bpftool prog` lists)."""
    lib = library()
    out = []
    cur, nxt = 0, ctypes.c_uint32(0)
    while lib.bpf_prog_get_next_id(cur, ctypes.byref(nxt)) == 0:
        cur = nxt.value
        fd = lib.bpf_prog_get_fd_by_id(cur)
        if fd < 0:
            continue  # gone meanwhile
        try:
            info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
            size = ctypes.c_uint32(_PROG_INFO_SIZE)
            if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) == 0:
                raw = info.raw
                name = raw[_PROG_NAME_AT : _PROG_NAME_AT + 16].split(b"\0", 1)[0].decode(errors="replace")
                out.append((cur, int.from_bytes(raw[0:4], "little"), name))
        finally:
            os.close(fd)
    return out


#: struct bpf_prog_info: `nr_map_ids` at 52, `map_ids` (a user pointer) at 56. struct
#: bpf_map_info: `value_size` at 12, `name` (16 bytes) at 24.
_PROG_NR_MAP_IDS, _PROG_MAP_IDS, _MAP_VALUE_SIZE, _MAP_NAME_AT = 52, 56, 12, 24


def _info(fd: int) -> bytes | None:
    info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
    size = ctypes.c_uint32(_PROG_INFO_SIZE)
    return info.raw if library().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) == 0 else None


def percpu_counters(program_id: int, map_name: str, n: int) -> list[int] | None:
    """Entries 0..n-1 of the per-CPU array `map_name` of a loaded program (found by the kernel's
    program id, as `bpftool map dump` would), each summed over CPUs; None when it is gone."""
    lib = library()
    fd = lib.bpf_prog_get_fd_by_id(program_id)
    if fd < 0:
        return None
    try:
        raw = _info(fd)
        if raw is None:
            return None
        count = int.from_bytes(raw[_PROG_NR_MAP_IDS : _PROG_NR_MAP_IDS + 4], "little")
        ids = (ctypes.c_uint32 * max(count, 1))()
        info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
        struct_view = (ctypes.c_uint8 * _PROG_INFO_SIZE).from_buffer(info)
        struct_view[_PROG_NR_MAP_IDS : _PROG_NR_MAP_IDS + 4] = list(count.to_bytes(4, "little"))
        struct_view[_PROG_MAP_IDS : _PROG_MAP_IDS + 8] = list(ctypes.addressof(ids).to_bytes(8, "little"))
        size = ctypes.c_uint32(_PROG_INFO_SIZE)
        if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
            return None
    finally:
        os.close(fd)
    ncpu = possible_cpus()
    for map_id in ids[:count]:
        mfd = lib.bpf_map_get_fd_by_id(map_id)
        if mfd < 0:
            continue
        try:
            minfo = _info(mfd)
            if minfo is None or minfo[_MAP_NAME_AT : _MAP_NAME_AT + 16].split(b"\0", 1)[0].decode() != map_name:
                continue
            width = (int.from_bytes(minfo[_MAP_VALUE_SIZE : _MAP_VALUE_SIZE + 4], "little") + 7) // 8 * 8
            out = []
            for key in range(n):
                v = map_lookup(mfd, key.to_bytes(4, "little"), width * ncpu) or b""
                out.append(sum(int.from_bytes(v[k : k + 8], "little") for k in range(0, len(v), width)))
            return out
        finally:
            os.close(mfd)
    return None


class RingBuffer:
    """Consumes a BPF ring buffer map, calling `on_sample(bytes)` for every record."""

    def __init__(self, map_fd: int, on_sample: Callable[[bytes], None]) -> None:
        def sample(ctx: int, data: int, size: int) -> int:
            on_sample(ctypes.string_at(data, size))
            return 0

        self._cb = SAMPLE_FN(sample)
        self.ptr = library().ring_buffer__new(map_fd, self._cb, None, None)
        if not self.ptr:
            raise BpfError("opening the ring buffer", ctypes.get_errno(), take_log())

    def poll(self, timeout_ms: int) -> int:
        """Records consumed (0 on timeout); EINTR counts as 0."""
        n = library().ring_buffer__poll(self.ptr, timeout_ms)
        if n < 0 and -n != errno.EINTR:
            raise BpfError("reading the ring buffer", -n)
        return max(n, 0)

    def close(self) -> None:
        if self.ptr and _lib is not None:
            _lib.ring_buffer__free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:
        self.close()


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _BtfEnum(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


BTF_KIND_ENUM = 6


def enum_values(type_name: str, btf_path: str | None = None) -> dict[int, str]:
    """{value: name} of a kernel enum from BTF (`skb_drop_reason`): the running kernel's own table."""
    lib = library()
    btf = lib.btf__parse(btf_path.encode(), None) if btf_path else lib.btf__load_vmlinux_btf()
    if not btf:
        raise BpfError("reading kernel BTF", ctypes.get_errno())
    try:
        tid = lib.btf__find_by_name_kind(btf, type_name.encode(), BTF_KIND_ENUM)
        if tid < 0:
            return {}
        t = _BtfType.from_address(lib.btf__type_by_id(btf, tid))
        vlen = t.info & 0xFFFF
        base = ctypes.addressof(t) + ctypes.sizeof(_BtfType)
        out = {}
        for i in range(vlen):
            e = _BtfEnum.from_address(base + i * ctypes.sizeof(_BtfEnum))
            name = lib.btf__name_by_offset(btf, e.name_off)
            out[e.val] = (name or b"").decode()
        return out
    finally:
        lib.btf__free(btf)
