"""Decoding bytes into typed headers, one module per protocol. Pure: no I/O."""
