"""The result table: one row per trial, the same Arrow schema in every results file (compacted or part).

``SCHEMA_VERSION`` goes into each file's schema metadata (with the plan and the environment),
so readers can tell which columns to expect; bump it when a column changes meaning or type.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

#: 2: the ``inputs`` and ``axes`` columns (models with several named inputs, axes in the matrix) and
#: ``parity_worst_output``; runs of version 1 load with them null.
#: 3: the load scenario columns (``scenario`` ...; null in older runs, which readers take as
#: single-stream), the validity verdict (``valid``, ``invalid_reasons``), the stale-output check,
#: ``export_route`` and the sampler's ``contention_checks``; rows of older runs load with them null.
#: 4: ``gpu_util_pct`` and ``timing_cpu``; rows of older runs load with them null.
#: 5: the generation columns (``prompt_len`` ... ``token_agreement``) and the fairness columns (``math``,
#: ``math_effective``, ``input_pool``, ``pool_feed``, the repeat check's and ``parity_unchecked``); rows of older runs
#: load with them null.
#: 6: generation under load (``ttft_ms_p99``, ``tpot_samples_ms``, ``tpot_bound_ms``, ``probe_tpot_p99_ms``),
#: the process-repeats columns (``process_repeats``, ``process_pids``, ``process_medians_ms``, ``process_cv``),
#: interleaved A/B (``arm``, ``ab_*``, ``round_*``) and the injected slowdown (``slowdown*``); rows of older runs
#: load with them null.
SCHEMA_VERSION = "6"

_F64, _I64, _STR, _BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()

#: (name, type, description), in groups; the docs' schema table (docs/schema.md) is generated from them.
_CORE: list[tuple[str, pa.DataType, str]] = [
    ("run_id", _STR, "the run this row belongs to (one per `infer-orch run`)"),
    ("trial_id", _STR, "hash of the trial's full spec: the same trial has the same id in every run"),
    ("plan", _STR, "the plan's name"),
    ("model", _STR, "model name (torchvision name, ONNX file stem, or factory name)"),
    ("model_source", _STR, "kind:reference, e.g. torchvision:resnet50"),
    ("input_shape", pa.list_(_I64), "per-sample input shape (the batch axis left out); null for a model "
                                    "with several inputs (see inputs)"),
    ("inputs", pa.list_(pa.struct([("name", _STR), ("dtype", _STR), ("shape", pa.list_(_I64))])),
     "every input fed: name, dtype (as fed: floating inputs follow the trial's dtype) and full shape, "
     "batch included; one entry for a model of the single-input form, named as its ONNX file names "
     "it (input for other models)"),
    ("axes", _STR, "the values of the model's named axes in this trial, as JSON text ({\"seq\": 128}); null "
                   "when the model has none besides batch"),
    ("backend", _STR, "backend registry name: torch-eager, torch-cudagraph, ort, ..."),
    ("label", _STR, "the plan's label for this backend configuration (default: the backend name)"),
    ("options", _STR, "the backend options, resolved with their defaults, as JSON text"),
    ("batch_size", _I64, "samples per inference"),
    ("dtype", _STR, "fp32, fp16 or bf16"),
    ("io", _STR, "device (inputs and outputs stay on the device) or host (copies included)"),
    ("device", _STR, "cuda or cpu: where the trial ran"),
    ("device_name", _STR, "GPU model (e.g. NVIDIA H100 80GB HBM3) or CPU model"),
    ("gpu_uuid", _STR, "UUID of the GPU the trial ran on"),
    ("node", _STR, "host name of the node"),
    ("worker", _STR, "the worker actor that ran the trial"),
    ("cuda_visible_devices", _STR, "CUDA_VISIBLE_DEVICES of the worker (Ray pins each worker to one GPU)"),
    ("status", _STR, "ok, skipped, failed, parity_failed (NaN/Inf or wrong output), timeout or oom"),
    ("error", _STR, "why the trial failed or was skipped"),
    ("traceback", _STR, "tail of the traceback of a failed trial"),
    ("warmup_iters", _I64, "warm-up iterations run before timing (adaptive: until steady; all repeats)"),
    ("iters", _I64, "timed iterations"),
    ("latency_ms_median", _F64, "median latency per inference, ms (device clock on GPUs)"),
    ("latency_ms_mean", _F64, "mean latency, ms"),
    ("latency_ms_p90", _F64, "90th percentile (linear interpolation), ms"),
    ("latency_ms_p99", _F64, "99th percentile (linear interpolation), ms"),
    ("latency_ms_min", _F64, "fastest iteration, ms"),
    ("latency_ms_max", _F64, "slowest iteration, ms"),
    ("throughput", _F64, "samples per second at the median latency"),
    ("host_ms_median", _F64, "median host wall time per iteration (launch + sync included), ms"),
    ("gpu_mem_peak_bytes", _I64, "peak GPU memory of the trial: torch's allocator peak, or the device's "
                                 "used memory growth for backends with their own allocator (ORT)"),
    ("samples_ms", pa.list_(_F64), "every timed iteration's latency, ms"),
    ("host_samples_ms", pa.list_(_F64), "every timed iteration's host wall time, ms"),
    ("hit_max_time", _BOOL, "timing stopped at measure.max_time_s, before measure.iters or the CI target was met"),
    ("setup_s", _F64, "seconds spent building the runner (model copy, export, session, capture)"),
    ("warmup_s", _F64, "seconds of warm-up iterations (all repeats): device time that is not measured"),
    ("timed_s", _F64, "seconds of the timed loop (all repeats); warmup_s + timed_s over a run's wall time is "
                      "how busy the sweep kept its GPUs (bench/sweep_efficiency.py)"),
    ("parity_s", _F64, "seconds checking the output against its reference (building the reference included, "
                       "once per model, batch and device on a worker)"),
    ("export_cached", _BOOL, "ORT: the ONNX export came from this node's cache"),
    ("export_s", _F64, "ORT: seconds to get the ONNX file (an export, or a look-up in the node's cache), part of "
                       "setup_s"),
    ("export_route", _STR, "ORT: how the ONNX graph was made: the plan's ONNX file, or which torch.onnx exporter "
                           "exported the model in which dtype (fp16 graphs are exported from the fp16 model)"),
    ("providers_used", pa.list_(_STR), "ORT: the session's providers, as ORT reports them"),
    ("torch_version", _STR, "torch.__version__ on the worker"),
    ("ort_version", _STR, "onnxruntime.__version__ on the worker"),
    ("cuda_version", _STR, "CUDA version torch was built with"),
    ("driver_version", _STR, "NVIDIA driver version"),
    ("started_at", pa.timestamp("us", tz="UTC"), "when the trial started"),
    ("duration_s", _F64, "wall time of the whole trial, setup included"),
]

#: Statistics, parity and environment columns (measurement fidelity).
_STATS: list[tuple[str, pa.DataType, str]] = [
    ("converged", _BOOL, "timing stopped because the 95% CI of the median was within measure.target_rel_ci "
                         "(with min iters and time met); false: it stopped at max_time_s or max_iters"),
    ("latency_ms_std", _F64, "sample standard deviation of the latency (ddof=1), ms"),
    ("latency_ms_cv", _F64, "coefficient of variation: std / mean"),
    ("latency_ms_iqr", _F64, "interquartile range p75 - p25 (linear interpolation), ms"),
    ("latency_ms_p50", _F64, "50th percentile (= the median), ms"),
    ("latency_ms_p95", _F64, "95th percentile (linear interpolation), ms"),
    ("latency_ms_ci_low", _F64, "95% CI of the median, low end: percentile bootstrap, 1000 resamples seeded "
                                "with the plan's seed (order statistics above 100,000 samples), ms"),
    ("latency_ms_ci_high", _F64, "95% CI of the median, high end, ms"),
    ("outliers", _I64, "samples outside Tukey's fences (Q1 - 1.5 IQR, Q3 + 1.5 IQR)"),
    ("launch_overhead_ms", _F64, "host_ms_median - latency_ms_median: launch and synchronisation cost on "
                                 "the host beyond the device time (0 on CPU)"),
    ("copy_in_ms", _F64, "io: host on a GPU, torch runners and ORT with IO binding: median device time of "
                         "the input's host->device copy, timed alone in a separate loop"),
    ("copy_out_ms", _F64, "like copy_in_ms, for the output's device->host copy"),
    ("repeats", _I64, "times the trial was measured, each with a fresh runner (samples_ms holds them all)"),
    ("repeat_medians_ms", pa.list_(_F64), "the median latency of each repeat, ms"),
    ("repeat_cv", _F64, "between-run spread: CV (ddof=1) of repeat_medians_ms; null with one repeat"),
    ("repeat_rel_ci", pa.list_(_F64), "each repeat's within-run noise: the half-width of its median's 95% "
                                      "interval (order statistics) over its median; null where too few samples"),
    ("process_repeats", _I64, "fresh worker processes the trial was measured in, one after another on its GPU "
                              "(measure.process_repeats; samples_ms holds every process's samples)"),
    ("process_pids", pa.list_(_I64), "the pid of each of those processes, in the order they ran"),
    ("process_medians_ms", pa.list_(_F64), "the median latency of each process, ms"),
    ("process_cv", _F64, "between-process spread: CV (ddof=1) of process_medians_ms; null below two processes. "
                         "latency_ms_ci_low/high include it, and compare judges the row by it, not by a floor"),
    ("parity_reference", _STR, "what the output was compared with (torch-eager fp32 on the device; an ONNX "
                               "file on ORT's CPU provider, optimisations off); null: not checked (model-less "
                               "backend, parity.check false, or no reference: parity_unchecked)"),
    ("parity_max_abs_err", _F64, "max |output - reference| over every output element"),
    ("parity_max_rel_err", _F64, "parity_max_abs_err / max |reference|"),
    ("parity_worst_output", _STR, "the output with the largest parity_max_rel_err (output, output0, ... or "
                                  "the model's own output names)"),
    ("stale_reference", _STR, "graph backends (CUDA graphs, TensorRT): what the output of a second input, "
                              "fed through the timed buffers after timing, was checked against; null: not "
                              "checked (workers/measure/stale.py)"),
    ("stale_max_rel_err", _F64, "that output's max |y - ref| / max |ref|; above parity_tolerance the trial is "
                                "parity_failed (stale output)"),
    ("parity_tolerance", _F64, "the largest parity_max_rel_err allowed for this dtype (plan's parity.tolerance)"),
    ("cpu_model", _STR, "CPU model of the node"),
    ("cudnn_version", _STR, "cuDNN version torch uses"),
    ("onnx_version", _STR, "onnx.__version__ on the worker"),
    ("ray_version", _STR, "ray.__version__ on the worker"),
    ("python_version", _STR, "Python version on the worker"),
    ("gpu_sm_clock_mhz_start", _F64, "NVML: SM clock when timing started, MHz"),
    ("gpu_sm_clock_mhz_end", _F64, "NVML: SM clock when timing ended, MHz"),
    ("gpu_mem_clock_mhz_start", _F64, "NVML: memory clock when timing started, MHz"),
    ("gpu_mem_clock_mhz_end", _F64, "NVML: memory clock when timing ended, MHz"),
    ("gpu_temp_c_start", _F64, "NVML: GPU temperature when timing started, C"),
    ("gpu_temp_c_end", _F64, "NVML: GPU temperature when timing ended, C"),
    ("gpu_power_w_start", _F64, "NVML: power draw when timing started, W"),
    ("gpu_power_w_end", _F64, "NVML: power draw when timing ended, W"),
    ("valid", _BOOL, "a number to act on: ok, and none of invalid_reasons applies (workers/measure/validity.py); "
                     "null for rows with no measurement"),
    ("invalid_reasons", pa.list_(_STR), "why the row is not valid, each a short code with its figures "
                                        "(noisy, not converged, contended, ...); empty when valid"),
    ("contention_checks", _I64, "times the GPU's process list was read for contended (NVML): as timing "
                                "started and ended and every 0.5 s during it; null without NVML"),
    ("contended", _BOOL, "another process had a compute context on this GPU during timing (NVML: read as it "
                         "started, ended and every 0.5 s in between); null without NVML"),
    ("gpu_other_pids", pa.list_(_I64), "NVML: the other processes seen on the GPU"),
    ("gpu_util_pct", _F64, "NVML: the GPU's utilization during timing (the share of time a kernel ran), median "
                           "of reads every 0.2 s, %; below HOST_BOUND_UTIL_PCT the latency is the host's pace "
                           "(launch-bound) and compare judges it at the host's between-run floor"),
    ("timing_cpu", _I64, "GPU single-stream and generate-scenario trials: the CPU the timing thread was pinned to for "
                         "warm-up and timing (workers/measure/affinity.py); null when not pinned"),
]

#: Memory of the trial, each figure measured on its own (workers/measure/memory.py; docs/measuring.md#memory).
_MEMORY: list[tuple[str, pa.DataType, str]] = [
    ("torch_mem_peak_allocated_bytes", _I64, "CUDA trials: torch's caching allocator, peak bytes allocated "
                                             "to tensors during setup and timing (peak stats reset as the trial "
                                             "starts; largest of the repeats); the tensors of ORT's IO binding "
                                             "only, for ort"),
    ("torch_mem_peak_reserved_bytes", _I64, "CUDA trials: torch's caching allocator, peak bytes reserved from "
                                            "the device (allocated plus its cached free blocks)"),
    ("gpu_mem_process_bytes", _I64, "CUDA trials: the worker process's own GPU memory at the end of timing, as "
                                    "NVML counts it (CUDA context, torch's reserve, ORT's arena, cuDNN "
                                    "workspaces); null where NVML can't tell (see gpu_mem_process_note)"),
    ("gpu_mem_process_note", _STR, "why gpu_mem_process_bytes is null on a CUDA trial (no NVML, or NVML lists "
                                   "no process with the worker's pid: a container's PID namespace)"),
    ("gpu_mem_used_before_bytes", _I64, "CUDA trials: the device's used memory (every process's) before setup"),
    ("gpu_mem_used_after_bytes", _I64, "CUDA trials: the device's used memory at the end of timing, before "
                                       "teardown"),
    ("host_rss_peak_bytes", _I64, "the worker process's peak resident host memory during this trial's setup and "
                                  "timing (not the process's lifetime peak; parity check not included); null "
                                  "off Linux"),
    ("host_rss_peak_method", _STR, "how host_rss_peak_bytes was measured: clear_refs (the kernel's high-water "
                                   "mark, reset at the trial's start) or sampled every 10 ms"),
]

#: Energy (workers/measure/energy.py; docs/measuring.md#energy).
_ENERGY: list[tuple[str, pa.DataType, str]] = [
    ("energy_j_per_sample", _F64, "GPU trials: the GPU's energy per sample, J (whole board, every process on "
                                  "it: see contended), over the energy window; null where NVML can't tell "
                                  "(energy_note says why)"),
    ("energy_j_per_request", _F64, "GPU trials: the GPU's energy per request (batch_size samples), J, over the "
                                   "energy window"),
    ("gpu_power_w_avg", _F64, "GPU trials: average power over the energy window, W"),
    ("energy_method", _STR, "what gave the energy: nvml_energy_counter (the cumulative counter) over the timed "
                            "loop, or over iterations after timing when the timed loop was shorter than 1 s; "
                            "or sampled power integrated, where there is no counter; load scenarios: the "
                            "counter over the measured run (find-peak: its last passing probe)"),
    ("energy_window_s", _F64, "seconds of the energy window"),
    ("energy_iters", _I64, "iterations in the energy window (the timed ones, or extra untimed ones)"),
    ("energy_j_per_sample_integral", _F64, "the cross-check: power sampled every 10 ms (NVML's instantaneous "
                                           "power where the GPU has it) integrated over the energy window, per "
                                           "sample, J; only where the window ran after timing"),
    ("energy_note", _STR, "why the energy columns are null"),
]

#: Profiles on request (a backend entry's ``profile: true`` or ``infer-orch run --profile LABEL``).
_PROFILE: list[tuple[str, pa.DataType, str]] = [
    ("profile_file", _STR, "the trial's profile, a Chrome trace (JSON), relative to the run directory: "
                           "_profiles/<trial_id>.<backend>.json (profiles/... in runs of earlier versions); null "
                           "when not asked for or not kept"),
    ("profile_iters", _I64, "iterations profiled, run after the timed ones and not among them (samples_ms, "
                            "the latency columns); ORT also runs one warm-up in its profiling session"),
    ("profile_bytes", _I64, "size of the trace, bytes (kept up to 64 MiB)"),
    ("profile_s", _F64, "seconds spent profiling (a second session for ORT included); not timed"),
    ("profile_error", _STR, "why a profile that was asked for is missing (no profiler for the backend, "
                            "profiling failed, trace too large)"),
]

#: Fault handling: attempts, timeouts, out-of-memory.
_FAULTS: list[tuple[str, pa.DataType, str]] = [
    ("attempt", _I64, "which attempt this row is (1 = first); a trial whose worker died or timed out "
                      "is tried again up to `retries` times"),
    ("earlier_errors", pa.list_(_STR), "the errors of the earlier attempts of this trial, oldest first"),
    ("timeout_s", _F64, "the trial's time limit, seconds; past it the worker is killed and replaced"),
    ("worker_replaced", _BOOL, "the worker was killed or died during this trial and a fresh one took its GPU"),
]

#: Cluster and scheduling facts.
_CLUSTER: list[tuple[str, pa.DataType, str]] = [
    ("node_id", _STR, "Ray node id of the worker's node (tells apart several nodes on one host)"),
    ("node_ip", _STR, "IP address of the worker's node"),
    ("cpus_per_worker", _F64, "CPUs Ray reserved for the worker (plan's cpus_per_worker, or an even split "
                              "of the node); torch's intra-op threads follow it"),
    ("concurrent_trials", _I64, "how many other trials were running on the same node when this one started"),
    ("node_trials_busy_max", _I64, "the most trials running on this trial's node at once while it ran, itself "
                                   "included (the scheduler's count, from dispatch to its end: an upper bound "
                                   "for its timed window); one GPU per worker: the node's busy GPUs"),
]

#: Compilation and engine builds (torch.compile, TensorRT).
_BUILD: list[tuple[str, pa.DataType, str]] = [
    ("compile_time_s", _F64, "torch-compile: seconds of the setup calls that compiled the model (not timed)"),
    ("compile_cache_warm", _BOOL, "torch-compile: every FX graph came from Inductor's per-node cache; ORT "
                                  "TensorRT: the engine came from the per-node engine cache (no new engine file)"),
    ("graph_breaks", _I64, "torch-compile: graph breaks while compiling (the model ran as several graphs)"),
    ("graph_break_reasons", pa.list_(_STR), "torch-compile: first line of each distinct graph-break reason"),
    ("recompiles_during_timing", _I64, "torch-compile: frames compiled after setup (warm-up or timed "
                                       "iterations); any makes the trial failed"),
    ("engine_build_s", _F64, "ORT TensorRT: seconds to create the session and run it once (engine build "
                             "or engine-cache load), part of setup_s"),
    ("ort_provider_options", _STR, "ORT: the first provider's effective options as ORT reports them (JSON)"),
]

#: Build ahead (docs/cluster.md#build-ahead): the artifacts of the node's cache a trial needs that
#: need no GPU (ONNX exports, the sleep backend's ``build_s``), built by CPU tasks before it starts.
_AHEAD: list[tuple[str, pa.DataType, str]] = [
    ("artifact_wait_s", _F64, "seconds this trial's setup waited for an artifact another process (a build-ahead "
                              "task, a neighbouring worker) was building, part of setup_s; 0: it was ready or "
                              "built here; null: the trial needs none"),
    ("artifact_build_s", _F64, "seconds this trial's worker spent building artifacts itself (nobody had), part of "
                               "setup_s; 0: every artifact was ready or waited for; null: the trial needs none"),
]

#: Load scenarios (workers/scenarios/; docs/measuring.md#load-scenarios). Single-stream rows have
#: ``scenario`` alone; times of the per-request lists are seconds from the start of the measured run.
_SCENARIO: list[tuple[str, pa.DataType, str]] = [
    ("scenario", _STR, "the load scenario: single-stream (one request at a time, the default), offline "
                       "(concurrency requests always in flight), server (requests arrive on a seeded schedule) "
                       "or find-peak (the highest server rate within latency_bound_ms); null in runs older "
                       "than scenarios (= single-stream)"),
    ("concurrency", _I64, "offline, server, find-peak: requests in flight at most (lanes: one CUDA stream, "
                          "buffers and host thread each)"),
    ("target_rate", _F64, "server: the arrival rate asked for, requests/s"),
    ("arrival", _STR, "server, find-peak: poisson (exponential gaps, seeded) or constant gaps"),
    ("latency_bound_ms", _F64, "server (optional), find-peak: the bound on p99 request latency, ms (generation "
                               "trials: on the p99 time to first token)"),
    ("tpot_bound_ms", _F64, "generation trials, server (optional), find-peak: the bound on the p99 time per "
                            "output token, ms"),
    ("requests", _I64, "offline, server: requests completed in the measured run (each of batch_size samples)"),
    ("latency_ms_p99_upper", _F64, "offline, server, find-peak: the 95% upper confidence bound on the p99 "
                                   "latency, counting requests by their effective number (effective_requests); "
                                   "null when the run is too short to bound it"),
    ("effective_requests", _F64, "offline, server, find-peak: requests over the latencies' integrated "
                                 "autocorrelation time: how many independent requests the run is worth"),
    ("confident", _BOOL, "find-peak: each rate was judged on latency_ms_p99_upper, not the p99 itself"),
    ("measured_s", _F64, "offline: the measured window, first issue to last completion; server: the run's "
                         "start (arrivals are counted from it) to the last completion, s"),
    ("schedule_rate", _F64, "server: the generated schedule's own rate, (n - 1) / (last - first arrival), "
                            "requests/s (a finite Poisson schedule is rarely exactly at target_rate)"),
    ("achieved_rate", _F64, "offline: requests/s over measured_s; server: (n - 1) / (last - first completion), "
                            "requests/s; within 1% of schedule_rate when the server kept up"),
    ("late_requests", _I64, "server: requests issued more than 1 ms after they could have started (their "
                            "arrival, or a lane freeing up): the harness's own lateness, counted in latency"),
    ("issue_lag_ms_p99", _F64, "server: 99th percentile of issue lag (start - max(arrival, lane free)), ms"),
    ("issue_lag_ms_max", _F64, "server: the largest issue lag, ms"),
    ("service_ms_mean", _F64, "offline, server: mean service time (start to completion of one request), ms"),
    ("request_arrival_s", pa.list_(_F64), "server: each request's scheduled arrival, s (in arrival order)"),
    ("request_start_s", pa.list_(_F64), "offline, server: when each request was issued to a lane, s"),
    ("request_end_s", pa.list_(_F64), "offline, server: when each request completed (its lane synchronized), s"),
    ("request_service_ms", pa.list_(_F64), "offline, server: each request's service time, end - start, ms"),
    ("request_lane", pa.list_(_I64), "offline, server: the lane that served each request"),
    ("peak_rate", _F64, "find-peak: the highest rate tried whose p99 latency was within latency_bound_ms "
                        "(and whose run was valid), requests/s; null when none was"),
    ("peak_rate_fail", _F64, "find-peak: the lowest rate tried above peak_rate that failed the bound (the "
                             "bracket's upper end), requests/s; null when none did"),
    ("probe_rates", pa.list_(_F64), "find-peak: every server rate tried, in order, requests/s"),
    ("probe_p99_ms", pa.list_(_F64), "find-peak: p99 latency of each rate tried (generation trials: p99 time to "
                                     "first token), ms"),
    ("probe_tpot_p99_ms", pa.list_(_F64), "find-peak of generation trials: p99 time per output token of each "
                                          "rate tried, ms"),
    ("probe_passed", pa.list_(_BOOL), "find-peak: whether each rate tried met the bound and kept its schedule"),
    ("probe_p99_upper_ms", pa.list_(_F64), "find-peak: the p99's upper confidence bound of each rate tried, ms "
                                           "(null where too few requests)"),
    ("probe_requests", pa.list_(_I64), "find-peak: requests served in each run tried"),
    ("probe_verdicts", pa.list_(_STR), "find-peak: each run's verdict: pass, fail, or undecided (confident only: "
                                       "run again at the same rate with twice the requests)"),
]

#: Generation trials (``hf-causal`` models, the generate scenario; workers/generation/; docs/measuring.md#generation).
#: Their ``samples_ms`` and ``latency_ms_*`` are the decode steps' (one sample per generated token after the
#: first), so the interval and validity rules of single-stream latency apply to the time per output token.
_GENERATION: list[tuple[str, pa.DataType, str]] = [
    ("prompt_len", _I64, "generation: tokens of the prompt (each of batch_size sequences)"),
    ("new_tokens", _I64, "generation: tokens generated after the prompt (greedy, end-of-sequence masked)"),
    ("ttft_ms", _F64, "generation: time to first token (prefill + the first token), median of the timed "
                      "generations, ms"),
    ("ttft_samples_ms", pa.list_(_F64), "generation: each timed generation's time to first token, ms (offline, "
                                        "server: each request's, counted from its start, or from its scheduled "
                                        "arrival under server, so queueing counts)"),
    ("ttft_ms_p99", _F64, "generation under load (offline, server, find-peak): 99th percentile of ttft_samples_ms"),
    ("tpot_ms", _F64, "generation: time per output token, the median decode step (every timed generation's "
                      "new_tokens - 1 steps, in samples_ms), ms"),
    ("tpot_ms_p99", _F64, "generation: 99th percentile of the decode steps, ms"),
    ("tpot_samples_ms", pa.list_(_F64), "generation under load: every decode step of every request, ms (their "
                                        "samples_ms are the requests' latencies, as other load rows')"),
    ("tokens_per_s", _F64, "generation: batch_size * new_tokens / e2e_ms, median of the timed generations "
                           "(under load: every request's tokens over measured_s)"),
    ("e2e_ms", _F64, "generation: one whole generation (TTFT + every decode step), median, ms (under load: from a "
                     "request's start, or its scheduled arrival under server, to its last token)"),
    ("kv_cache_bytes", _I64, "generation: the KV cache at its largest (prompt_len + new_tokens positions, keys "
                             "and values, every layer) at the trial's dtype, bytes"),
    ("decode_bytes", _I64, "generation: bytes one decode step reads: the weights once (the input embedding "
                           "table only where tied to the LM head) + the KV cache at its mean length"),
    ("copy_bandwidth_gbs", _F64, "generation on a GPU: the device's copy bandwidth, (bytes read + written) / "
                                 "time of a 1 GiB device-to-device copy, measured once per worker, GB/s"),
    ("roofline_frac", _F64, "generation on a GPU: (decode_bytes / tpot_ms) / copy bandwidth: how close a decode "
                            "step is to the memory bandwidth limit"),
    ("token_agreement", _F64, "generation: the share of generated tokens equal to the torch-eager fp32 "
                              "reference's (random weights make near-ties: reported, not a failure)"),
    ("parity_steps", _I64, "generation: logits compared with the reference: the prefill's last position and "
                           "the first decode steps'"),
    ("generation_clock", _STR, "generation: what timed the steps: cuda-events (on the stream the work runs on) "
                               "or host (the CPU; ORT GenAI, around each synchronous generate_next_token)"),
]

#: What makes two rows compare like with like: the arithmetic, the inputs timed, the reference.
_FAIRNESS: list[tuple[str, pa.DataType, str]] = [
    ("math", _STR, "fp32 trials: the math mode asked for, tf32 (TF32 tensor cores allowed for matmuls and "
                   "convolutions) or strict (IEEE fp32); null for fp16/bf16 trials"),
    ("math_effective", _STR, "fp32 trials: the math the libraries report they ran, read back after timing "
                             "(torch's fp32_precision knobs, ORT's session provider options): tf32, strict or "
                             "mixed (...) naming each part; null in runs older than the column, read as "
                             "\"library default\""),
    ("input_pool", _I64, "distinct seeded inputs the timed steps cycled through (measure.input_pool); null: 1"),
    ("pool_feed", _STR, "how a pool of several inputs reached the timed step: inputs (each step called on the "
                        "next entry), copy (a timed device-to-device copy into the bound buffer, part of "
                        "each step) or host (io: host, the copy in of each entry, timed as always)"),
    ("repeat_median_ms", _F64, "measure.repeat_check: the median latency of the same trial timed on one "
                               "repeated input (latency_ms_median is the pool's)"),
    ("repeat_samples_ms", pa.list_(_F64), "measure.repeat_check: the samples of that run on one repeated input, ms"),
    ("repeat_speedup", _F64, "measure.repeat_check: latency_ms_median / repeat_median_ms; above 1.1 with the "
                             "two intervals apart the row is flagged (MLPerf TEST04)"),
    ("parity_unchecked", _STR, "why the parity columns are null where a reference was sought but none could "
                               "be made (an fp16 ONNX file whose ops ORT's CPU provider lacks)"),
]

#: Interleaved A/B (``measure.interleave``: the arms of a unit in alternating rounds in one worker) and
#: the injected slowdown (a backend entry's ``slowdown``).
_AB: list[tuple[str, pa.DataType, str]] = [
    ("arm", _STR, "interleaved trials: the arm's name in its unit (its label, or its model with interleave.by: "
                  "model); null otherwise"),
    ("ab_group", _STR, "interleaved trials: the unit's id (its first trial's trial_id), the same in every arm's row"),
    ("ab_base", _STR, "interleaved trials: the base arm's name, which ab_ratio is against"),
    ("ab_rounds", _I64, "interleaved trials: rounds measured; in each, every arm warmed up then timed in turn"),
    ("round_medians_ms", pa.list_(_F64), "interleaved trials: the arm's median latency in each round, ms"),
    ("round_iters", pa.list_(_I64), "interleaved trials: the arm's timed iterations in each round (samples_ms "
                                    "holds them in round order: these are its boundaries)"),
    ("round_positions", pa.list_(_I64), "interleaved trials: the arm's place in each round (0: first), the "
                                        "order drawn from the plan's seed"),
    ("ab_ratio", _F64, "interleaved trials: the paired ratio against the base arm, exp(mean over rounds of "
                       "log(this round median / base round median)); > 1: slower; null on the base's row"),
    ("ab_ratio_low", _F64, "its interval's low end: a t interval on the rounds' log ratios at "
                           "interleave.confidence"),
    ("ab_ratio_high", _F64, "its interval's high end"),
    ("ab_verdict", _STR, "interleaved trials: regressed or improved (the ratio beyond 1 +- interleave.threshold and "
                         "its interval clear of 1), unchanged, or null (the base, or a round without samples)"),
    ("ab_runners_kept", _BOOL, "interleaved trials: every arm's runner was set up once and kept between rounds; "
                               "false: device memory could not hold them all, each round set its runner up again"),
    ("ab_setups", _I64, "interleaved trials: times this arm's runner was set up"),
    ("slowdown", _F64, "a known slowdown injected into each step, as a fraction of the step (a backend entry's "
                       "slowdown); null: none"),
    ("slowdown_kind", _STR, "how it was injected: device (extra GPU work, a GPU-bound step), host (a host-side "
                            "delay: a launch-bound step, or a CPU) or backend (the sleep backend's longer sleep)"),
    ("slowdown_ms", _F64, "the time added to each step, ms (that fraction of the step's median measured before "
                          "warm-up)"),
]

COLUMNS = (_CORE + _STATS + _MEMORY + _ENERGY + _PROFILE + _FAULTS + _CLUSTER + _BUILD + _SCENARIO
           + _AHEAD + _GENERATION + _FAIRNESS + _AB)

SCHEMA = pa.schema([pa.field(name, typ, metadata={"doc": doc}) for name, typ, doc in COLUMNS])
NAMES = frozenset(SCHEMA.names)


def to_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Rows (dicts) -> a RecordBatch of SCHEMA. Unknown keys are an error, missing ones null."""
    for row in rows:
        extra = set(row) - NAMES
        if extra:
            raise KeyError(f"row has columns not in the schema: {sorted(extra)}")
    return pa.RecordBatch.from_pylist(rows, schema=SCHEMA)


def markdown_table() -> str:
    """The schema as a Markdown table: one row per column, in order."""
    lines = ["| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{n}` | {str(t).replace('item: ', '')} | {d} |" for n, t, d in COLUMNS]
    return "\n".join(lines)


def markdown_page() -> str:
    """docs/schema.md, whole; ``python -m workers.schema > docs/schema.md`` writes it."""
    module = __spec__.name if __spec__ else __name__  # this module's name, also when run with -m
    return "\n".join([
        "# Result schema",
        "",
        f"<!-- Generated from the columns in {module.replace('.', '/')}.py: edit them there, then run",
        f"     python -m {module} > docs/schema.md -->",
        "",
        "One row per trial, with these columns in this order, in every results file of a run",
        "(`results.parquet`, and the part files while it runs).",
        "How to read them: [results.md](results.md).",
        "",
        markdown_table(),
    ])


def _py(t: pa.DataType, structs: dict[str, str], name: str) -> str:
    """The Python type of an Arrow type, for ``row_module`` (a struct becomes a TypedDict of its own)."""
    if pa.types.is_list(t):
        return f"list[{_py(t.value_type, structs, name)}]"
    if pa.types.is_struct(t):
        cls = "".join(w.title() for w in name.split("_")) + "Item"
        fields = "".join(f"\n    {f.name}: {_py(f.type, structs, f.name)}" for f in t)
        structs[cls] = f"class {cls}(TypedDict):{fields}\n"
        return cls
    if pa.types.is_timestamp(t):
        return "datetime"
    return {"string": "str", "int64": "int", "double": "float", "bool": "bool"}[str(t)]


def row_module() -> str:
    """workers/row.py, whole: ``Row``, a TypedDict of every column (``python -m workers.schema row``)."""
    structs: dict[str, str] = {}
    fields = [f"    {n}: {_py(t, structs, n)} | None" for n, t, _ in COLUMNS]
    module = __spec__.name if __spec__ else __name__
    return "\n".join([
        f'"""A result row as a type: every column of ``{module}`` (generated from it: edit the columns',
        f"there, then run ``python -m {module} row > workers/row.py``).",
        "",
        "Any station that builds part of a row (the driver's spec columns, the worker's measurement, the",
        "sink's run columns) fills some of these keys; a row read back from a results file has them all.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from datetime import datetime",
        "from typing import TypedDict",
        "",
        "",
        *[f"{body}\n" for body in structs.values()],
        "class Row(TypedDict, total=False):",
        '    """One trial\'s result row (docs/schema.md says what each column means)."""',
        "",
        *fields,
        "",
    ])


if __name__ == "__main__":
    import sys

    print(row_module() if sys.argv[1:] == ["row"] else markdown_page(), end="" if sys.argv[1:] == ["row"] else "\n")
