"""The C kernels of the hot path: checksum scan, packet facts, flow kernels, record framing.

A neutral package below both users: `scan/` and `flows/` call `_fastscan`, `capture/` calls
`_framing`, and neither depends on the other to reach a kernel. Each kernel has a `.pyi` beside it.
"""
