"""Stages: one thin function per pipeline stage (params in, library calls, atomic outputs); the CLI maps onto them."""
