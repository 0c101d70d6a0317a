"""Labs: rebuild known incidents on the real kernel in throwaway namespaces, and the canary.

This is an edge package: it runs `ip`, `ethtool`, `nft`, `tcpdump` and Open vSwitch as argv
lists, and it deletes only what it created (namespaces named with its own prefix).
"""
