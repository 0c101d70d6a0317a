# The two C extensions are the measured hot path (see bench/): record framing and the
# checksum scanner. Everything else is pure Python.
from setuptools import Extension, setup

CFLAGS = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        Extension("badsum.capture._framing", ["src/badsum/capture/_framing.c"], extra_compile_args=CFLAGS),
        Extension("badsum.scan._fastscan", ["src/badsum/scan/_fastscan.c"], extra_compile_args=CFLAGS),
    ]
)
