"""Benchmarks that print numbers (not shipped in the Blender extension): ``python -m benchmarks``."""
