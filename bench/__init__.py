"""Benchmarks of af-metrics (not run by the tests): ``python -m bench`` from the repository root."""
