"""The command line: one module per command, one renderer, documented exit codes."""
