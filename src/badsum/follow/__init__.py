"""`badsum follow`: journeys of packets through the kernel, and the first hop where they went bad.

Pure: kernel events (model.py) in, journeys (journey.py), hop kinds (hops.py) and per-flow first
bad hops (result.py) out. Loading the eBPF programs and reading the ring buffer is
`badsum.kernel`'s job.
"""
