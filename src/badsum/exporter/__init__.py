"""`badsum exporter`: the host's checksum facts as Prometheus metrics (docs/cli.md, /work/notes/metrics.md).

families: snapshot + findings + drops + names -> metric families (no I/O); collector: the thread
that refreshes them; server: the HTTP endpoint that only ever reads the latest set; canary: the
last canary result (a state file, or an opt-in periodic run).
"""
