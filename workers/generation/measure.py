"""Measure generations on one path: warm-up, timed generations, parity, the stale check, the roofline.

Per (path, dtype, batch, prompt_len, new_tokens)::

    setup the runner                                   # session, static cache, graphs, compile
    on a GPU, the calling thread pinned to the GPU's timing CPU (as a single-pass trial's loop):
    warmup generations, untimed                        # captures, autotuning, lazy allocation
    repeats generations on the seeded prompt, timed     # TTFT + new_tokens - 1 decode samples each
    one generation keeping logits -> parity             # prefill + first decode steps vs fp32 eager
    replaying paths: one generation on a second prompt  # must give other tokens than the first (stale)

Parity: the reference is torch eager in fp32 (TF32 off) on the same device, weights and prompt.
``parity_max_rel_err`` = max |logits - ref| / max |ref| over the prefill and the first decode steps;
above the dtype's tolerance (``workers.contract.DEFAULT_TOLERANCE``) the parity fails. The decode
steps see the path's own earlier tokens, so a decode step's logits are compared only for the
sequences whose tokens so far are the reference's: once a near-tie is decided otherwise, that
sequence's later logits answer another question (their difference is of the order of the logits
themselves) and it leaves the comparison. The divergence shows as a lower ``token_agreement`` (the
fraction of generated tokens equal to the reference's), which is reported and is not a failure by
itself (random weights make near-ties).

The physical limit: a decode step reads the weights once (``models.weight_bytes``) and the KV cache
written so far; ``decode_bytes`` uses the mean cache length over the decode steps (prompt_len +
new_tokens / 2). The copy bandwidth is (bytes read + bytes written) / time of a 1 GiB device-to-device
copy, measured once per process; ``roofline_frac`` = (decode_bytes / median step time) / bandwidth.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from workers.generation.base import DTYPES, Generation, GenerationRunner, SkipTrial, summarize
from workers.generation.ort_paths import OrtGenAI, OrtGenAIGraph, OrtIoBinding
from workers.generation.source import Source
from workers.generation.torch_paths import TorchCompile, TorchCudaGraph, TorchEager, TorchStatic
from workers.measure import affinity

RUNNERS: dict[str, type[GenerationRunner]] = {
    c.name: c for c in (TorchEager, TorchStatic, TorchCudaGraph, TorchCompile, OrtIoBinding, OrtGenAI, OrtGenAIGraph)
}
#: prefill + this many - 1 decode steps' logits are compared with the reference
PARITY_STEPS = 3
TOLERANCE = {"fp32": 0.05, "fp16": 0.1, "bf16": 0.25}  # workers.contract.DEFAULT_TOLERANCE


class ParityError(Exception):
    """The path's logits are off the fp32 reference beyond the dtype's tolerance (or not finite)."""


def prompt(shape_vocab: int, batch: int, prompt_len: int, seed: int) -> np.ndarray:
    """Seeded prompt token ids [batch, prompt_len], below the vocabulary, never the special ids 0-2."""
    rng = np.random.default_rng(seed)
    return rng.integers(3, shape_vocab, size=(batch, prompt_len), dtype=np.int64)


def reference(source: Source, batch: int, prompt_len: int, new_tokens: int, ids: np.ndarray) -> Generation:
    """torch eager fp32 with TF32 off: tokens and the prefill + first decode steps' logits."""
    from workers.measure.parity import _tf32_off

    r = TorchEager()
    r.setup(source, "fp32", source.device, batch, prompt_len, new_tokens)
    try:
        with _tf32_off(source.device):
            return r.generate(ids, keep_logits=PARITY_STEPS)
    finally:
        r.teardown()


def parity(got: Generation, ref: Generation, dtype: str, tolerance: float | None = None) -> dict[str, Any]:
    """Parity columns of ``got`` against ``ref``; raises ParityError beyond ``tolerance`` (default: the dtype's)."""
    tol = TOLERANCE[dtype] if tolerance is None else tolerance
    worst = 0.0
    for i, (g, r) in enumerate(zip(got.logits, ref.logits)):
        bad = int(g.size - np.isfinite(g).sum())
        if bad:
            raise ParityError(f"logits have {bad} NaN/Inf values of {g.size}")
        # logits i follow tokens 0..i-1: compared where those are the reference's (see the module's doc)
        same = np.all(got.tokens[:, :i] == ref.tokens[:, :i], axis=1)
        if not same.any():
            continue
        g, r = g[same], r[same]
        scale = float(np.max(np.abs(r))) or 1.0
        worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - r))) / scale)
    cols = {"parity_max_rel_err": worst, "parity_tolerance": tol, "parity_steps": len(got.logits),
            "token_agreement": float(np.mean(got.tokens == ref.tokens))}
    if worst > tol:
        raise ParityError(f"logits differ from the torch-eager fp32 reference: max |y - ref| / max |ref| = "
                          f"{worst:.3g} > tolerance {tol:g} for {dtype}")
    return cols


@functools.lru_cache(maxsize=4)
def copy_bandwidth(device: str, nbytes: int = 1 << 30, iters: int = 10) -> float | None:
    """(bytes read + bytes written) / time of a device-to-device copy of ``nbytes``, median, in bytes/s."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / float(np.median(times))


def decode_bytes(source: Source, dtype: str, batch: int, prompt_len: int, new_tokens: int) -> int:
    """Bytes one decode step reads: the weights once + the KV cache at its mean length over the steps."""
    from workers.generation.models import weight_bytes

    itemsize = DTYPES[dtype][1]
    kv = source.shape.kv_bytes(batch, prompt_len + new_tokens // 2, itemsize)
    return weight_bytes(source.model, itemsize) + kv


def measure(path: str, source: Source, dtype: str, batch: int, prompt_len: int, new_tokens: int, *,
            repeats: int = 3, warmup: int = 1, seed: int = 0, ref: Generation | None = None,
            tolerance: float | None = None) -> dict[str, Any]:
    """One record for ``path`` on this shape: status ``ok``, ``skipped`` (with the reason),
    ``parity_failed``, ``oom`` or ``failed`` (with the error); figures pooled over ``repeats`` timed
    generations. A request the model can't serve raises GenerationInputError (a plan error)."""
    from workers.generation.models import check_request

    check_request(source.shape, batch, prompt_len, new_tokens)
    rec: dict[str, Any] = {"backend": path, "dtype": dtype, "batch": batch, "prompt_len": prompt_len,
                           "new_tokens": new_tokens, "status": "ok", "error": None}
    try:
        return _measure(rec, path, source, dtype, batch, prompt_len, new_tokens, repeats, warmup, seed, ref, tolerance)
    except Exception as exc:  # noqa: BLE001 - a failed path is a record, never the end of the run
        oom = "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"
        first = (str(exc).strip().splitlines() or [""])[0]
        return {**rec, "status": "oom" if oom else "failed", "error": f"{type(exc).__name__}: {first}"}


def _measure(rec: dict[str, Any], path: str, source: Source, dtype: str, batch: int, prompt_len: int,
             new_tokens: int, repeats: int, warmup: int, seed: int, ref: Generation | None,
             tolerance: float | None = None) -> dict[str, Any]:
    device = source.device
    runner = RUNNERS[path]()
    peak = _PeakMemory(device)
    t0 = time.perf_counter()
    try:
        runner.setup(source, dtype, device, batch, prompt_len, new_tokens)
    except SkipTrial as exc:
        return {**rec, "status": "skipped", "error": str(exc)}
    rec["setup_s"] = time.perf_counter() - t0  # the build it waited for or made included (the row's artifact_*)
    try:
        ids = prompt(source.shape.vocab, batch, prompt_len, seed)
        rec["timing_cpu"] = cpu = timing_cpu(device)
        with affinity.pinned(cpu):  # a launch-bound step's pace is its thread's: one CPU near the GPU
            for _ in range(warmup):
                runner.generate(ids)
            gens = [runner.generate(ids) for _ in range(repeats)]
        check = runner.generate(ids, keep_logits=PARITY_STEPS)
        stale = None
        if runner.replays:
            other = runner.generate(prompt(source.shape.vocab, batch, prompt_len, seed + 1))
            stale = bool(np.array_equal(other.tokens, gens[-1].tokens))
        rec.update(_figures(gens, batch), kv_cache_bytes=runner.kv_cache_bytes(), stale_output=stale,
                   tokens=gens[-1].tokens)
        peak.mark()
    finally:
        runner.teardown()
        rec.update(peak.finish())
    if stale:
        return {**rec, "status": "failed", "error": "a second prompt gave the first prompt's tokens (stale output)"}
    ref = ref if ref is not None else reference(source, batch, prompt_len, new_tokens, ids)
    try:
        rec.update(parity(check, ref, dtype, tolerance))
    except ParityError as exc:
        return {**rec, "status": "parity_failed", "error": str(exc)}
    bw = copy_bandwidth(device)
    rec["decode_bytes"] = decode_bytes(source, dtype, batch, prompt_len, new_tokens)
    rec["copy_bandwidth_gbs"] = bw / 1e9 if bw else None
    step_s = rec["tpot_median_ms"] / 1e3 if rec["tpot_median_ms"] else None
    rec["roofline_frac"] = rec["decode_bytes"] / step_s / bw if bw and step_s else None
    return rec


def timing_cpu(device: str) -> int | None:
    """The CPU a generation on ``device`` is timed on: the GPU's timing CPU
    (``workers.measure.affinity``), none on a CPU device."""
    if not str(device).startswith("cuda"):
        return None
    from workers.measure import envinfo

    return affinity.timing_cpu(envinfo.device_facts("cuda")["gpu_uuid"])


def _figures(gens: list[Generation], batch: int) -> dict[str, Any]:
    steps = np.concatenate([np.asarray(g.step_ms) for g in gens]) if gens else np.array([])
    per = [summarize(g, batch) for g in gens]
    return {"ttft_ms": float(np.median([g.ttft_ms for g in gens])),
            "ttft_samples": [g.ttft_ms for g in gens],
            "decode_samples": [list(map(float, g.step_ms)) for g in gens],
            "tpot_median_ms": float(np.median(steps)) if steps.size else None,
            "tpot_p99_ms": float(np.percentile(steps, 99)) if steps.size else None,
            "tokens_per_s": float(np.median([p["tokens_per_s"] for p in per])),
            "e2e_ms": float(np.median([g.e2e_ms for g in gens])),
            "clock": gens[0].clock}


class _PeakMemory:
    """Device memory of the path: ``peak_mem_bytes``, the peak torch's allocator saw (torch paths), and
    ``device_mem_bytes``, what the device's used memory grew by from before setup to after the last
    generation (cudaMemGetInfo: counts ORT's own arena and CUDA graph pools too)."""

    def __init__(self, device: str) -> None:
        self.cuda = str(device).startswith("cuda")
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            free, total = torch.cuda.mem_get_info()
            self.used0 = total - free
            self.used1: int | None = None

    def mark(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            free, total = torch.cuda.mem_get_info()
            self.used1 = total - free

    def finish(self) -> dict[str, Any]:
        if not self.cuda:
            return {"peak_mem_bytes": None, "device_mem_bytes": None}
        import torch

        grew = self.used1 - self.used0 if self.used1 is not None else None
        return {"peak_mem_bytes": int(torch.cuda.max_memory_allocated()), "device_mem_bytes": grew}
