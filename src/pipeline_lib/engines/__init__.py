"""Engines: the DVC writer (dvc.yaml from params) and the hand-over between Snakemake and DVC (record / adopt)."""
