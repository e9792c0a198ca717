"""infer-orch's driver side: plans, Ray connection, scheduling, results."""

from orchestrator.results import load_results

__all__ = ["load_results"]
