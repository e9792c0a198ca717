"""Benchmarks of infer-orch itself (their figures are in BENCHMARKS.md)."""
