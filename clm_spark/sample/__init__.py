"""Synthetic raw lakes for the demo, tests and benchmarks."""
