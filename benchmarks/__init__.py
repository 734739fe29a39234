"""Benchmarks: memory and speed of every estimator; run all with ``python -m benchmarks.run_all``."""
