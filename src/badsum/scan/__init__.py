"""The fast path: batches of frames in, verdict arrays out (see `badsum.scan.fast`)."""
