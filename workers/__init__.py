"""infer-orch's worker side: the per-GPU actor, the backend runners, the timing loop."""
