# The two C extensions are the measured hot path (see bench/): record framing and the
# checksum scanner, both in badsum/native. Everything else is pure Python.
from setuptools import Extension, setup

CFLAGS = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        Extension("badsum.native._framing", ["src/badsum/native/_framing.c"], extra_compile_args=CFLAGS),
        # One module from four units sharing fs_common.h (readers, RFC 1071 sums, the link and
        # IPv6 walks) and protofacts.h (generated from badsum/wire/protofacts.py).
        Extension(
            "badsum.native._fastscan",
            [f"src/badsum/native/{unit}.c" for unit in ("module", "scan", "facts", "flowk")],
            depends=[f"src/badsum/native/{h}.h" for h in ("fs_common", "fs_module", "protofacts")],
            extra_compile_args=CFLAGS,
        ),
    ]
)
