"""The vectorised checksum path: batches of frames in, verdict arrays out (see `badsum.scan.fast`).

The whole-capture run that adds the flow analysis is `badsum.analyze`; the C kernels are in
`badsum.native`.
"""
