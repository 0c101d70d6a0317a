"""Capture filters in tcpdump syntax, compiled to classic BPF by tcpdump itself (`tcpdump -dd`).

libpcap is the reference compiler for that syntax; asking tcpdump for the program keeps badsum's
filters meaning exactly what they mean to tcpdump, and needs no compiler of our own. The program
is attached with SO_ATTACH_FILTER (struct sock_fprog), so the kernel drops what does not match.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import socket
import struct
import subprocess

SO_ATTACH_FILTER = 26
#: pcap link type -> the name `tcpdump -y` takes.
DLT_NAMES = {1: "EN10MB", 101: "RAW", 113: "LINUX_SLL"}
_INSN = re.compile(r"\{\s*(0x[0-9a-fA-F]+),\s*(\d+),\s*(\d+),\s*(0x[0-9a-fA-F]+)\s*\},?")
_SOCK_FILTER = struct.Struct("=HBBI")


class FilterError(ValueError):
    """The filter does not compile (the message is tcpdump's)."""


def compile_filter(expression: str, *, linktype: int = 1, snaplen: int = 262144) -> list[tuple[int, int, int, int]]:
    """The classic BPF program for `expression` (tcpdump syntax) on `linktype`; each instruction
    is (code, jt, jf, k). The program's accept value is `snaplen`, so the kernel truncates."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise FilterError("a capture filter needs tcpdump to compile it (Debian: apt-get install tcpdump)")
    dlt = DLT_NAMES.get(linktype, "EN10MB")
    argv = [tcpdump, "-dd", "-y", dlt, "-s", str(snaplen), "--", expression]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FilterError(f"cannot run tcpdump to compile the filter: {e}") from None
    if r.returncode != 0:
        msg = " ".join(r.stderr.replace("tcpdump: ", "").split()) or f"tcpdump exited {r.returncode}"
        raise FilterError(f"capture filter {expression!r} does not compile: {msg}")
    program = [(int(c, 16), int(jt), int(jf), int(k, 16)) for c, jt, jf, k in _INSN.findall(r.stdout)]
    if not program:
        raise FilterError(f"capture filter {expression!r}: tcpdump printed no program")
    return program


def attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER: struct sock_fprog {unsigned short len; struct sock_filter *filter;}."""
    raw = b"".join(_SOCK_FILTER.pack(*insn) for insn in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))  # native layout: pointer aligned
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


__all__ = ["FilterError", "attach", "compile_filter"]
