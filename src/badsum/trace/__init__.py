"""Aligning one packet across capture points, and naming the first hop where it went bad.

Pure: observations (decoded frames with their verdicts) in, flows with hop tables and verdicts
out. Reading the captures is the CLI's job (`badsum.cli.trace`).
"""
