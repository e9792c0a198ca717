"""infer-orch's driver side: plans, Ray connection, scheduling, results."""
