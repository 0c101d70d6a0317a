"""`badsum fix`: the narrowest change for each finding, applied only when asked, with an undo journal.

plan     findings -> deduplicated, ordered actions with their exact commands and costs (pure)
journal  the undo journal: what was applied, the values before, atomic writes
apply    runs the actions (argv lists, timeouts), re-checks the findings, undoes
persist  udev rules, systemd-networkd .link files, NetworkManager dispatcher scripts
"""
