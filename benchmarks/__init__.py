"""Benchmarks for hybrid-router (run as `python -m benchmarks.<name>`; see README.md)."""
