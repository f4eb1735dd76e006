"""The `rapgen` command line: the commands, and binding their arguments before any work."""
