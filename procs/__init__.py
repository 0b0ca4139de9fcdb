"""One module per process: the loop, its I/O, its heartbeat. The work is in `scanner/`."""
