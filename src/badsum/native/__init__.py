"""The C kernels of the hot path: checksum scan, packet facts, flow kernels, record framing.

A neutral package below both users: `scan/` and `flows/` call `_fastscan`, `capture/` calls
`_framing`, and neither depends on the other to reach a kernel. Each kernel has a `.pyi` beside it.

`_fastscan` is one module built from scan.c, facts.c, flowk.c and module.c over fs_common.h; the
protocol numbers they use come from protofacts.h, which `python3 -m badsum.wire.protofacts_h`
writes from badsum/wire/protofacts.py (edit the registry, regenerate, rebuild).
"""
