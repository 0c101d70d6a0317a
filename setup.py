# The two C extensions are the measured hot path (see bench/): record framing and the
# checksum scanner, both in badsum/native. Everything else is pure Python.
from setuptools import Extension, setup

CFLAGS = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        Extension("badsum.native._framing", ["src/badsum/native/_framing.c"], extra_compile_args=CFLAGS),
        Extension("badsum.native._fastscan", ["src/badsum/native/_fastscan.c"], extra_compile_args=CFLAGS),
    ]
)
