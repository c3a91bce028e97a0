"""Runtime: errors, atomic writes, progress, devices and threads, distributed runs, numerics, downloads, provenance."""
