"""A result row as a type: every column of ``workers.schema`` (generated from it: edit the columns
there, then run ``python -m workers.schema row > workers/row.py``).

Any station that builds part of a row (the driver's spec columns, the worker's measurement, the
sink's run columns) fills some of these keys; a row read back from a results file has them all.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict


class InputsItem(TypedDict):
    name: str
    dtype: str
    shape: list[int]


class Row(TypedDict, total=False):
    """One trial's result row (docs/schema.md says what each column means)."""

    run_id: str | None
    trial_id: str | None
    plan: str | None
    model: str | None
    model_source: str | None
    input_shape: list[int] | None
    inputs: list[InputsItem] | None
    axes: str | None
    backend: str | None
    label: str | None
    options: str | None
    batch_size: int | None
    dtype: str | None
    io: str | None
    device: str | None
    device_name: str | None
    gpu_uuid: str | None
    node: str | None
    worker: str | None
    cuda_visible_devices: str | None
    status: str | None
    error: str | None
    traceback: str | None
    warmup_iters: int | None
    iters: int | None
    latency_ms_median: float | None
    latency_ms_mean: float | None
    latency_ms_p90: float | None
    latency_ms_p99: float | None
    latency_ms_min: float | None
    latency_ms_max: float | None
    throughput: float | None
    host_ms_median: float | None
    gpu_mem_peak_bytes: int | None
    samples_ms: list[float] | None
    host_samples_ms: list[float] | None
    hit_max_time: bool | None
    setup_s: float | None
    warmup_s: float | None
    timed_s: float | None
    parity_s: float | None
    export_cached: bool | None
    export_s: float | None
    export_route: str | None
    providers_used: list[str] | None
    torch_version: str | None
    ort_version: str | None
    cuda_version: str | None
    driver_version: str | None
    started_at: datetime | None
    duration_s: float | None
    converged: bool | None
    latency_ms_std: float | None
    latency_ms_cv: float | None
    latency_ms_iqr: float | None
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    latency_ms_ci_low: float | None
    latency_ms_ci_high: float | None
    outliers: int | None
    launch_overhead_ms: float | None
    copy_in_ms: float | None
    copy_out_ms: float | None
    repeats: int | None
    repeat_medians_ms: list[float] | None
    repeat_cv: float | None
    repeat_rel_ci: list[float] | None
    parity_reference: str | None
    parity_max_abs_err: float | None
    parity_max_rel_err: float | None
    parity_worst_output: str | None
    stale_reference: str | None
    stale_max_rel_err: float | None
    parity_tolerance: float | None
    cpu_model: str | None
    cudnn_version: str | None
    onnx_version: str | None
    ray_version: str | None
    python_version: str | None
    gpu_sm_clock_mhz_start: float | None
    gpu_sm_clock_mhz_end: float | None
    gpu_mem_clock_mhz_start: float | None
    gpu_mem_clock_mhz_end: float | None
    gpu_temp_c_start: float | None
    gpu_temp_c_end: float | None
    gpu_power_w_start: float | None
    gpu_power_w_end: float | None
    valid: bool | None
    invalid_reasons: list[str] | None
    contention_checks: int | None
    contended: bool | None
    gpu_other_pids: list[int] | None
    gpu_util_pct: float | None
    timing_cpu: int | None
    torch_mem_peak_allocated_bytes: int | None
    torch_mem_peak_reserved_bytes: int | None
    gpu_mem_process_bytes: int | None
    gpu_mem_process_note: str | None
    gpu_mem_used_before_bytes: int | None
    gpu_mem_used_after_bytes: int | None
    host_rss_peak_bytes: int | None
    host_rss_peak_method: str | None
    energy_j_per_sample: float | None
    gpu_power_w_avg: float | None
    energy_method: str | None
    energy_window_s: float | None
    energy_iters: int | None
    energy_j_per_sample_integral: float | None
    energy_note: str | None
    profile_file: str | None
    profile_iters: int | None
    profile_bytes: int | None
    profile_s: float | None
    profile_error: str | None
    attempt: int | None
    earlier_errors: list[str] | None
    timeout_s: float | None
    worker_replaced: bool | None
    node_id: str | None
    node_ip: str | None
    cpus_per_worker: float | None
    concurrent_trials: int | None
    compile_time_s: float | None
    compile_cache_warm: bool | None
    graph_breaks: int | None
    graph_break_reasons: list[str] | None
    recompiles_during_timing: int | None
    engine_build_s: float | None
    ort_provider_options: str | None
    artifact_wait_s: float | None
    artifact_build_s: float | None
    scenario: str | None
    concurrency: int | None
    target_rate: float | None
    arrival: str | None
    latency_bound_ms: float | None
    requests: int | None
    measured_s: float | None
    schedule_rate: float | None
    achieved_rate: float | None
    late_requests: int | None
    issue_lag_ms_p99: float | None
    issue_lag_ms_max: float | None
    service_ms_mean: float | None
    request_arrival_s: list[float] | None
    request_start_s: list[float] | None
    request_end_s: list[float] | None
    request_service_ms: list[float] | None
    request_lane: list[int] | None
    peak_rate: float | None
    peak_rate_fail: float | None
    probe_rates: list[float] | None
    probe_p99_ms: list[float] | None
    probe_passed: list[bool] | None
