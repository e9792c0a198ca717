"""A generation trial on a worker: the trial's model as a ``Source`` (kept for the worker's next
trial), its backend's generation path measured (``workers.generation.measure``), the record as row columns.

The row's ``samples_ms`` are the decode steps of every timed generation (``new_tokens - 1`` each) and
its ``latency_ms_*`` their statistics, so the interval of the median and the validity rules of
single-stream latency judge the time per output token; ``ttft_samples_ms`` holds each generation's
time to first token. A path that can't run the shape raises ``SkipTrial``, wrong logits
``ParityFailure`` and a KV cache that does not fit an out-of-memory error (an ``oom`` row): the
worker's ``run_trial`` turns each into its row, and the run goes on.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from workers.backends.base import SkipTrial
from workers.measure.parity import ParityFailure
from workers.row import Row

if TYPE_CHECKING:
    from workers.backends.base import Runner
    from workers.contract import Trial
    from workers.generation.base import Generation
    from workers.generation.source import Source

PARITY_REFERENCE = "torch-eager fp32 generation (logits of the prefill and the first decode steps; TF32 off)"
#: columns kept on a parity_failed row: what ran, not how fast
_KEPT_ON_PARITY_FAILURE = ("kv_cache_bytes", "token_agreement", "parity_steps", "parity_max_rel_err",
                           "parity_tolerance", "parity_reference", "generation_clock", "setup_s",
                           "artifact_wait_s", "artifact_build_s")  # the last: whether its decoder was a cached build


class GenerationFailed(RuntimeError):
    """The path ran and failed (its message is the library's); ``columns`` keep what was learnt."""

    def __init__(self, message: str, columns: Row | None = None) -> None:
        super().__init__(message)
        self.columns = dict(columns or {})


_SOURCE: dict[tuple[str, str, int, str], Source] = {}  # the worker's last model: one at a time in memory
_REFERENCES: dict[tuple[int, int, int], Generation] = {}  # its fp32 references, by (batch, prompt_len, new_tokens)


def source_for(trial: Trial, device: str) -> Source:
    """The trial's fp32 model on ``device``, built once for the trials of one model in a row (a ~1B
    model takes seconds to build; its ONNX builds and references are kept with it)."""
    from workers.generation.source import Source

    m = trial.model
    key = (m.ref, json.dumps(m.overrides, sort_keys=True), trial.seed, device)
    if key not in _SOURCE:
        for old in _SOURCE.values():
            old.close()
        _SOURCE.clear()
        _REFERENCES.clear()
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()
        _SOURCE[key] = Source(m.ref, m.overrides, trial.seed, device)
    return _SOURCE[key]


def _reference(source: Source, trial: Trial) -> Generation:
    """The fp32 eager reference of this shape, computed once per model and shape on the worker."""
    from workers.generation.measure import prompt, reference

    key = (trial.batch_size, trial.prompt_len, trial.new_tokens)
    if key not in _REFERENCES:
        ids = prompt(source.shape.vocab, *key[:2], trial.seed)
        _REFERENCES[key] = reference(source, *key, ids)
    return _REFERENCES[key]


def path_for(trial: Trial, device: str, runner_cls: type[Runner]) -> str:
    """The generation path the trial's backend drives on ``device``; SkipTrial where it can't here."""
    reason = runner_cls.unavailable()
    allowed = runner_cls.dtypes.get(device, frozenset())
    if reason:
        raise SkipTrial(f"backend {runner_cls.name}: {reason}")
    if trial.dtype not in allowed:
        raise SkipTrial(f"backend {runner_cls.name} does not generate in {trial.dtype} on {device} "
                        f"(it does there: {', '.join(sorted(allowed)) or 'none'})")
    path = runner_cls.generation_path(trial.options)
    if path is None:
        raise SkipTrial(f"backend {runner_cls.name} runs no generation")
    return path


def measure(trial: Trial, device: str, runner_cls: type[Runner]) -> Row:
    """The trial's generation columns on ``device`` ("cuda"/"cpu"); raises for what is not ok (above)."""
    from workers.generation import measure as gm

    path = path_for(trial, device, runner_cls)
    source = source_for(trial, device)
    ref = _reference(source, trial)
    spec = trial.measure
    source.last_built = None
    rec = gm.measure(path, source, trial.dtype, trial.batch_size, trial.prompt_len, trial.new_tokens,
                     repeats=spec.generations, warmup=spec.warmup_generations, seed=trial.seed, ref=ref,
                     tolerance=getattr(trial.parity.tolerance, trial.dtype) if trial.parity.check else math.inf)
    cols = columns(rec, trial, replays=gm.RUNNERS[path].replays)
    cols.update(source.build_columns())  # an ONNX path's build from the node's cache: waited for, or made
    status, error = rec["status"], rec.get("error") or ""
    if status == "skipped":
        raise SkipTrial(error)
    if status == "parity_failed" or rec.get("stale_output"):  # wrong logits, or a graph replaying old tokens
        raise ParityFailure(error, {k: cols[k] for k in _KEPT_ON_PARITY_FAILURE if k in cols})
    if status == "oom":
        raise GenerationFailed(error if "out of memory" in error.lower() else f"out of memory: {error}", cols)
    if status != "ok":
        raise GenerationFailed(error, cols)
    return cols


def columns(rec: dict[str, Any], trial: Trial, replays: bool) -> Row:
    """A ``workers.generation.measure`` record as row columns (what it has; none where a path stopped early)."""
    from workers.measure.stats import latency_stats, median

    gens = rec.get("decode_samples") or []
    samples = [float(x) for g in gens for x in g]
    out: Row = {k: rec.get(k) for k in ("setup_s", "timing_cpu", "ttft_ms", "tokens_per_s", "e2e_ms", "kv_cache_bytes",
                                        "decode_bytes", "copy_bandwidth_gbs", "roofline_frac", "token_agreement",
                                        "parity_steps", "parity_max_rel_err", "parity_tolerance") if k in rec}
    out.update(tpot_ms=rec.get("tpot_median_ms"), tpot_ms_p99=rec.get("tpot_p99_ms"),
               ttft_samples_ms=rec.get("ttft_samples"), generation_clock=rec.get("clock"),
               warmup_iters=trial.measure.warmup_generations, repeats=len(gens) or None,
               gpu_mem_peak_bytes=rec.get("peak_mem_bytes") or rec.get("device_mem_bytes"))
    if "parity_max_rel_err" in rec:
        out["parity_reference"] = PARITY_REFERENCE
    if not trial.parity.check:  # measured and shown, judged on nothing (the plan's parity.check: false)
        out.pop("parity_tolerance", None)
    if replays and rec.get("stale_output") is not None:
        out["stale_reference"] = "a second prompt must give other tokens than the first"
    if samples:
        out.update(latency_stats(samples, trial.batch_size, trial.seed), samples_ms=samples, iters=len(samples),
                   repeat_medians_ms=[median(g) for g in gens if g])
    return {k: v for k, v in out.items() if v is not None}
