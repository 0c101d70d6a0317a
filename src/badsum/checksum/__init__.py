"""Internet checksum, pseudo-headers, CRC32c, verification with evidence, and classification."""
